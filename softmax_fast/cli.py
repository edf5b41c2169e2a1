"""The ``softmax-fast`` command line (Click).

Each command imports numpy, the kernels and the estimator only when it runs, so
``softmax-fast --help`` does not pay for them. Errors are one line on stderr and a non-zero
exit status (2 for usage errors, 1 otherwise); ``--debug`` shows the traceback instead.
"""

import sys

import click

from softmax_fast import __version__
from softmax_fast._options import (
    alpha_option,
    backend_option,
    batch_size_option,
    dataset_option,
    epochs_option,
    lr_option,
    seed_option,
    threads_option,
    val_fraction_option,
)

TRAIN_EXAMPLES = """
\b
Examples:
  softmax-fast train                          # bundled Fashion-MNIST sample
  softmax-fast train -d fashion-mnist -e 5    # full data set (Debian package or download)
  softmax-fast train --lr 0.1 --batch-size 64 --alpha 1e-4 --seed 1
"""


class CLIError(click.ClickException):
    """An error shown as one line on stderr with exit status 1."""

    def show(self, file=None):
        click.echo(f"softmax-fast: error: {self.format_message()}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="softmax-fast")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx, debug):
    """Fast softmax (multinomial logistic) regression on the CPU."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _run_guarded(ctx, func, *args, **kwargs):
    """Call ``func``; turn expected errors into one-line CLI errors unless --debug."""
    try:
        return func(*args, **kwargs)
    except (click.ClickException, click.Abort):
        raise
    except (ValueError, TypeError, OSError, FloatingPointError, RuntimeError) as exc:
        if ctx.obj.get("debug"):
            raise
        raise CLIError(str(exc) or type(exc).__name__) from exc


@cli.command(epilog=TRAIN_EXAMPLES)
@dataset_option
@batch_size_option
@lr_option
@epochs_option
@alpha_option
@seed_option
@backend_option
@threads_option
@val_fraction_option
@click.pass_context
def train(ctx, dataset, batch_size, learning_rate, epochs, alpha, seed, backend, n_threads,
          val_fraction):
    """Train softmax regression and report validation and test results.

    The training data is split (stratified) into train and validation parts; each epoch
    prints the training loss and validation loss/accuracy, and the end prints the test cost
    (unregularised cross-entropy) and accuracy. Pixel data (uint8) is scaled to [0, 1] inside
    the kernels (input_scale = 1/255).
    """
    _run_guarded(ctx, _train, dataset, batch_size, learning_rate, epochs, alpha, seed,
                 backend, n_threads, val_fraction)


def _train(dataset, batch_size, learning_rate, epochs, alpha, seed, backend, n_threads,
           val_fraction):
    import time

    import numpy as np
    from sklearn.model_selection import train_test_split

    from softmax_fast.backends import resolve_backend_name
    from softmax_fast.datasets import load_dataset
    from softmax_fast.estimator import SoftmaxRegression

    X_train, y_train, X_test, y_test = load_dataset(dataset)
    input_scale = 1.0 / 255.0 if X_train.dtype == np.uint8 else 1.0
    X_fit, X_val, y_fit, y_val = train_test_split(
        X_train, y_train, test_size=val_fraction, stratify=y_train, random_state=seed
    )
    name = resolve_backend_name(backend)
    click.echo(f"dataset {dataset}: {X_fit.shape[0]} train, {X_val.shape[0]} validation, "
               f"{X_test.shape[0]} test, {X_train.shape[1]} features; backend {name}")
    model = SoftmaxRegression(
        batch_size=batch_size, learning_rate_init=learning_rate, max_iter=epochs, alpha=alpha,
        random_state=seed, backend=name, n_threads=n_threads, input_scale=input_scale,
        tol=0.0, n_iter_no_change=epochs + 1,
    )
    click.echo(f"{'epoch':>5}  {'loss':>9}  {'val_loss':>9}  {'val_acc':>7}  {'time':>8}")

    def show(record):
        click.echo(f"{record['epoch']:5d}  {record['train_loss']:9.5f}  "
                   f"{record['val_loss']:9.5f}  {record['val_accuracy']:7.4f}  "
                   f"{record['seconds'] * 1e3:6.1f}ms")

    tic = time.perf_counter()
    model.fit(X_fit, y_fit, eval_set=(X_val, y_val), on_epoch=show)
    seconds = time.perf_counter() - tic
    test_proba = model.predict_log_proba(X_test)
    y_idx = np.searchsorted(model.classes_, y_test)
    test_cost = float(-test_proba[np.arange(len(y_idx)), y_idx].astype(np.float64).mean())
    test_acc = float(np.mean(model.classes_[test_proba.argmax(axis=1)] == y_test))
    click.echo(f"trained {epochs} epochs in {seconds:.2f}s")
    click.echo(f"test cost {test_cost:.4f}  test accuracy {test_acc:.4f}")


def main(argv=None, prog_name="softmax-fast"):
    """Console-script entry point."""
    return cli.main(args=argv, prog_name=prog_name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
