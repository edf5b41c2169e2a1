"""``softmax-fast train``: train, report validation and test figures, save, plot.

The work — the split, the epoch rules, the regularization path, the retrain on all training
data, the scoring — is :mod:`softmax_fast.workflow`; this module turns options into its
arguments and prints (the tables are :mod:`.tables`).

The regularization path is ``train --alphas`` rather than a command of its own: it is a way
of training (the L2 strength chosen on the validation part) with every other option of
``train`` — data, split, ``--out``, ``--plot``, ``--json``, ``--retrain-on-full`` — meaning
the same.
"""

import time
import warnings

import click
from click.core import ParameterSource

from softmax_fast.cli.common import (
    CONTEXT,
    CLIError,
    check_label_column_args,
    check_out_dir,
    check_plotting,
    check_train_test_args,
    class_names,
    debugging,
    load_train_test,
    make_plot_dir,
    note_numba_compile,
    plural,
    prepare_plot_dir,
    record_saved,
    run_guarded,
    show_progress,
    training_metadata,
    with_files,
    write_json,
)
from softmax_fast.cli.options import (
    POSITIVE_INT,
    GridValues,
    alpha_option,
    backend_option,
    batch_size_option,
    dataset_option,
    epochs_option,
    header_option,
    json_files_option,
    label_column_option,
    lr_option,
    momentum_option,
    names_option,
    quiet_option,
    schedule_option,
    seed_option,
    solver_option,
    test_file_option,
    test_fraction_option,
    threads_option,
    val_fraction_option,
)
from softmax_fast.cli.tables import TrainingTable, cli_wording, pass_on_warnings

EXAMPLES = """
\b
Examples:
  softmax-fast train                          # bundled Fashion-MNIST sample
  softmax-fast train -d fashion-mnist -e 5    # full data set (Debian package or download)
  softmax-fast train --lr 0.1 --batch-size 64 --alpha 1e-4 --seed 1
  softmax-fast train --solver lbfgs --alpha 1e-4 --epochs 300   # converges in ~160
  softmax-fast train --solver lbfgs --alphas 1e-7:1e-1:16log --plot plots/
  softmax-fast train -d iris.csv --label-column species --out model.npz
  softmax-fast train -d mydata.csv --test mytest.csv --out model.npz --plot plots/
  softmax-fast train --early-stopping --epochs 50 --retrain-on-full --json > run.json
"""


@click.command(epilog=EXAMPLES, context_settings=CONTEXT)
@dataset_option
@test_file_option
@test_fraction_option
@header_option
@label_column_option
@batch_size_option
@lr_option
@epochs_option
@alpha_option
@click.option("--alphas", type=GridValues(float, minimum=0), default=None,
              metavar="LIST|A:B:N[log]",
              help="Choose the L2 penalty on the validation part: a regularization path of "
                   "L-BFGS fits over these values (e.g. 1e-7:1e-1:16log), strongest first, "
                   "each warm-started; --epochs caps the iterations of each. Implies --solver "
                   "lbfgs; --plot adds path.png.")
@momentum_option
@schedule_option
@solver_option
@click.option("--early-stopping", is_flag=True,
              help="Stop when the validation loss has not improved for --patience epochs and "
                   "keep the best epoch's weights.")
@click.option("--patience", type=POSITIVE_INT, default=5, show_default=True,
              help="Epochs without validation improvement before --early-stopping stops.")
@val_fraction_option
@seed_option
@backend_option
@threads_option
@click.option("--retrain-on-full", is_flag=True,
              help="After training, retrain on training + validation data for the same number "
                   "of epochs (the best epoch with --early-stopping; L-BFGS: to its optimum, "
                   "at the chosen --alphas value) and report that model.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              metavar="MODEL.npz",
              help="Save the model (written atomically), with a record of its training data "
                   "that evaluate and predict use by default.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              metavar="DIR", help="Write curves.png (loss per epoch, or per L-BFGS iteration), "
                                  "path.png (--alphas), weights.png (image data) and "
                                  "confusion.png into DIR (needs matplotlib).")
@names_option
@json_files_option
@quiet_option
@click.pass_context
def train(ctx, **options):
    """Train softmax regression and report validation and test results.

    The training data is split (stratified) into train and validation parts; each epoch
    prints train_loss (the training objective: cross-entropy plus the L2 penalty) and the
    validation loss and accuracy, and the end prints the test cost (unregularised
    cross-entropy) and accuracy. L-BFGS prints its objective every 10 iterations. A data
    file has no test split: a stratified --test-fraction of it is held out, or give a
    separate --test FILE. Pixel data (uint8) is scaled to [0, 1] inside the kernels
    (input_scale = 1/255).
    """
    _check_solver_args(ctx, options)
    # Every usage error and unwritable output before the data is loaded and trained on.
    check_train_test_args(options["dataset"], options["test_file"])
    check_label_column_args(options["label_column"], options["dataset"], options["test_file"])
    check_out_dir(options["out_path"], "--out",
                  inputs=[(options["dataset"], "--dataset"), (options["test_file"], "--test")])
    if options["plot_dir"] is not None:
        check_plotting()  # and what the plots need, so a run never fails at its end
    options["plot_dir"] = prepare_plot_dir(options["plot_dir"])
    run_guarded(ctx, _train, **options)


def _check_solver_args(ctx, options):
    """``--alphas`` means L-BFGS (a usage error with an explicit --solver sgd or --alpha)."""
    if options["alphas"] is not None:
        if ctx.get_parameter_source("solver") is not ParameterSource.DEFAULT and \
                options["solver"] != "lbfgs":
            raise click.UsageError("--alphas runs L-BFGS fits (the regularization path); "
                                   "use --solver lbfgs, or --alpha with --solver sgd")
        if ctx.get_parameter_source("alpha") is not ParameterSource.DEFAULT:
            raise click.UsageError("give --alpha (one penalty) or --alphas (choose one on the "
                                   "validation part), not both")
        options["solver"] = "lbfgs"
    if options["solver"] == "lbfgs" and options["early_stopping"]:
        raise click.UsageError("--early-stopping needs --solver sgd (L-BFGS has no epochs)")


def _train(dataset, test_file, test_fraction, header, label_column, batch_size, learning_rate,
           epochs, alpha, alphas, momentum, schedule, solver, early_stopping, patience,
           val_fraction, seed, backend, n_threads, retrain_on_full, out_path, plot_dir,
           names, as_json, quiet):
    from softmax_fast import workflow
    from softmax_fast._estimator_params import LBFGS_DEFAULT_ITERATIONS, SGD_DEFAULT_EPOCHS

    tic_total = time.perf_counter()
    quiet = quiet or as_json
    if epochs is None:
        epochs = SGD_DEFAULT_EPOCHS if solver == "sgd" else LBFGS_DEFAULT_ITERATIONS
    X_train, y_train, X_test, y_test, test_source = load_train_test(
        dataset, test_file, test_fraction, seed, quiet, header, label_column)
    params = dict(solver=solver, batch_size=batch_size, learning_rate_init=learning_rate,
                  learning_rate=schedule, max_iter=epochs, alpha=alpha, momentum=momentum,
                  random_state=seed, backend=backend, n_threads=n_threads,
                  early_stopping=early_stopping, n_iter_no_change=patience)
    try:
        plan = workflow.prepare_training(X_train, y_train, X_test, y_test, params,
                                         validation_fraction=val_fraction)
    except workflow.ValidationSplitError as exc:
        raise CLIError(f"cannot hold out a stratified --val-fraction {val_fraction}: "
                       f"{exc.reason}") from exc
    if names is not None:  # checked against the classes now, not after the training
        names = class_names(dataset, _training_classes(plan), given=names)
    table = TrainingTable(talk=not quiet, bar=show_progress(quiet), redraw=show_progress(quiet))
    table.echo(f"dataset {dataset}: {len(plan.y_fit)} train, {len(plan.y_val)} validation, "
               f"{len(plan.y_test)} test, {plan.n_features} features, "
               f"{plan.n_classes} classes; backend {plan.params['backend']}, solver {solver}")
    _note_compile(plan, backend, quiet)
    result = _run(plan, retrain_on_full, table, alphas)
    report = _report(dataset, test_source, plan, result)
    _print_summary(result, solver, table, as_json)
    if out_path is not None:
        result.final.save(out_path, metadata=training_metadata(
            dataset, test_file, test_fraction, seed, header, label_column, names))
        record_saved(out_path)
        report["model"] = str(out_path)
        table.echo(f"model saved to {out_path}")
    if plot_dir is not None:
        report["plots"] = _train_plots(result, dataset, plot_dir, names)
        table.echo(f"plots written: {', '.join(report['plots'])}")
    report["seconds"] = time.perf_counter() - tic_total
    if as_json:
        write_json(with_files(report, report.get("model"), report.get("plots", [])))


def _training_classes(plan):
    """The sorted class labels the model will have (those of the training data)."""
    import numpy as np

    return np.unique(np.concatenate([plan.y_fit, plan.y_val]))


def _note_compile(plan, backend, quiet):
    """The numba notice, for the kernels of this data (dense or CSR) and solver."""
    import scipy.sparse as sp

    from softmax_fast.backends import resolve_backend_name

    kind = "sparse" if sp.issparse(plan.X_fit) else "dense"
    note_numba_compile(kind, resolve_backend_name(backend, kind), plan.params["solver"], quiet)


def _run(plan, retrain_on_full, table, alphas):
    from sklearn.exceptions import ConvergenceWarning

    from softmax_fast import workflow
    from softmax_fast._training.policy import TrainingDivergedError

    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            if alphas is not None:
                table.n_alphas = len(alphas)
                return workflow.run_path(plan, alphas, retrain_on_full=retrain_on_full,
                                         on_phase=table.phase, on_alpha=table.alpha)
            return workflow.run_training(plan, retrain_on_full=retrain_on_full,
                                         on_phase=table.phase, on_epoch=table.epoch,
                                         on_iteration=table.iteration)
    except TrainingDivergedError as exc:
        if debugging():
            raise
        # The estimator speaks of learning_rate_init; here the knob is called --lr.
        raise CLIError(cli_wording(str(exc))) from exc
    except workflow.DataMismatchError as exc:
        raise CLIError(str(exc)) from exc
    finally:
        pass_on_warnings(caught)


def _report(dataset, test_source, plan, result):
    """The JSON report of a run (``--json``)."""
    model = result.model
    report = {
        "dataset": dataset, "test_source": test_source, "backend": plan.params["backend"],
        "n_train": len(plan.y_fit), "n_validation": len(plan.y_val),
        "n_test": len(plan.y_test), "n_features": plan.n_features,
        "params": dict(plan.params), "epochs_run": int(model.n_iter_),
        "stop_reason": getattr(model, "stop_reason_", None),
        "history": list(getattr(model, "history_", [])),
        "train_seconds": result.train_seconds,
        "validation_cost": result.validation_cost,
        "validation_accuracy": result.validation_accuracy,
    }
    if result.iterations is not None:
        report["iterations"] = result.iterations
    if result.path is not None:
        report.update(path=result.path, alpha=result.alpha)
        report["params"]["alpha"] = result.alpha
    if result.retrained is not None:
        report["retrained"] = result.retrained
    report.update(test_cost=result.test_cost, test_accuracy=result.test_accuracy)
    return report


def _print_summary(result, solver, table, as_json):
    model = result.model
    if result.path is not None:
        best = next(r for r in result.path if r["alpha"] == result.alpha)
        table.echo(f"chosen alpha {result.alpha:.3g} (validation accuracy "
                   f"{best['val_accuracy']:.4f}, loss {best['val_loss']:.4f}) out of "
                   f"{plural(len(result.path), 'strength')} in {result.train_seconds:.2f}s")
    else:
        unit = "epoch" if solver == "sgd" else "iteration"
        table.echo(f"trained {plural(int(model.n_iter_), unit)} in "
                   f"{result.train_seconds:.2f}s ({getattr(model, 'stop_reason_', '')}); "
                   f"validation cost {result.validation_cost:.4f}, accuracy "
                   f"{result.validation_accuracy:.4f}")
    if not as_json:
        click.echo(f"test cost {result.test_cost:.4f}  test accuracy {result.test_accuracy:.4f}")


def _train_plots(result, dataset, plot_dir, names=None):
    from sklearn.metrics import confusion_matrix

    from softmax_fast import plots

    final = result.final
    names = names or class_names(dataset, final.classes_)
    make_plot_dir(plot_dir)
    written = []

    def wrote(path):
        record_saved(path)
        written.append(str(path))

    title = f"softmax-fast on {dataset}"
    history = getattr(result.model, "history_", [])
    if result.path is not None:
        wrote(plots.plot_path(result.path, plot_dir / "path.png", chosen=result.alpha,
                              title=f"Regularization path on {dataset}"))
    elif result.iterations:
        wrote(plots.plot_iterations(result.iterations, plot_dir / "curves.png",
                                    val_loss=result.validation_cost,
                                    val_accuracy=result.validation_accuracy, title=title))
    elif history and "val_loss" in history[0]:
        wrote(plots.plot_history(history, plot_dir / "curves.png", title=title))
    if plots.image_shape(final.coef_.shape[1]) is not None:
        wrote(plots.plot_weights(final.multinomial_coef_, plot_dir / "weights.png",
                                 class_names=names))
    matrix = confusion_matrix(result.test_labels, result.test_predictions,
                              labels=range(len(final.classes_)))
    wrote(plots.plot_confusion_matrix(matrix, plot_dir / "confusion.png", class_names=names))
    return written
