"""``softmax-fast search``: grid search over hyperparameters (:mod:`softmax_fast.search`)."""

import math
import warnings
from pathlib import Path

import click

from softmax_fast.cli.common import (
    CONTEXT,
    CLIError,
    check_distinct,
    check_label_column_args,
    check_out_dir,
    check_plotting,
    check_train_test_args,
    load_train_test,
    note_numba_compile,
    plural,
    record_saved,
    run_guarded,
    show_progress,
    training_metadata,
    with_files,
    write_json,
)
from softmax_fast.cli.guard import on_interrupt
from softmax_fast.cli.options import (
    MAX_CONFIGURATIONS,
    GridValues,
    backend_option,
    dataset_option,
    header_option,
    json_files_option,
    label_column_option,
    quiet_option,
    seed_option,
    test_file_option,
    test_fraction_option,
    threads_option,
    val_fraction_option,
)
from softmax_fast.cli.search_progress import SearchProgress
from softmax_fast.cli.tables import pass_on_warnings

EXAMPLES = """
\b
Examples:
  softmax-fast search --lr 1e-3,1e-2,1e-1 --alpha 0,1e-5,1e-4
  softmax-fast search --lr 1e-3:1e-0:8log --epochs 5:40:8 --results grid.csv
  softmax-fast search --lr 1e-3:1e-0:8log --epochs 5:40:8 --results grid.csv --resume
  softmax-fast search -d fashion-mnist --batch-size 16,32,64 --dask local:2 --plot heat.png
\b
Ranges: A:B:N is N evenly spaced values from A to B; A:B:Nlog spaces them on a log scale
(at most 10,000 points). Ctrl-C keeps the results in --results FILE; --resume continues.
"""

#: The library's advice, in the words of this command line.
CLI_WORDING = {"resume=True (--resume)": "--resume", "(resume=True, --resume)": "(--resume)",
               "(overwrite=True, --overwrite)": "(--overwrite)",
               "pass results_path to keep results across failures":
                   "--results FILE keeps results across failures"}

#: CLI option -> estimator hyperparameter name in grid_search results.
SEARCH_PARAMS = {"batch_size": "batch_size", "lr": "learning_rate_init", "epochs": "max_iter",
                 "alpha": "alpha", "momentum": "momentum"}
SHORT_NAMES = {"batch_size": "batch", "learning_rate_init": "lr", "max_iter": "epochs",
               "alpha": "alpha", "momentum": "momentum"}


@click.command(epilog=EXAMPLES, context_settings=CONTEXT)
@dataset_option
@test_file_option
@test_fraction_option
@header_option
@label_column_option
@click.option("--batch-size", "-b", "batch_size", type=GridValues(int, minimum=1), default="32",
              show_default=True, help="Batch sizes.")
@click.option("--lr", "lr", type=GridValues(float, minimum=0, min_open=True),
              default="0.01,0.1", show_default=True, help="Learning rates (constant).")
@click.option("--epochs", "-e", "epochs", type=GridValues(int, minimum=1), default="10",
              show_default=True, help="Epoch counts (checkpoints of one run: cheap).")
@click.option("--alpha", "alpha", type=GridValues(float, minimum=0), default="1e-5",
              show_default=True, help="L2 penalties.")
@click.option("--momentum", "momentum", type=GridValues(float, minimum=0, maximum=1,
                                                        max_open=True),
              default="0", show_default=True, help="Momenta.")
@click.option("--scoring", type=click.Choice(["accuracy", "loss"]), default="accuracy",
              show_default=True, help="Pick the best by validation accuracy or loss.")
@val_fraction_option
@click.option("--results", "results_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Stream every result to FILE (.csv or .jsonl) as it finishes.")
@click.option("--resume", is_flag=True,
              help="Keep the results already in --results FILE and run only the missing ones.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing --results FILE (without it, and without --resume, an "
                   "existing file is refused).")
@click.option("--max-configurations", type=click.IntRange(min=1), default=MAX_CONFIGURATIONS,
              show_default=True, help="Refuse a larger grid (checked before anything runs).")
@click.option("--dask", "dask_address", default=None, metavar="ADDRESS|local:N",
              help="Run on a Dask cluster: a scheduler address or local:N worker processes.")
@seed_option
@backend_option
@threads_option
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              metavar="MODEL.npz", help="Save the best model (refit on train+validation).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE.png", help="Heatmap of validation accuracy over two hyperparameters.")
@click.option("--plot-axes", default=None, metavar="X,Y",
              help="Hyperparameters of the heatmap (batch-size, lr, epochs, alpha, momentum) "
                   "[default: the two with the most values].")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="Configurations shown in the ranking (0: all).")
@json_files_option
@quiet_option
@click.pass_context
def search(ctx, **options):
    """Grid search over hyperparameters, many models trained per pass over the data.

    Every combination of the given values is trained on the training part and scored on a
    stratified validation part; the best is refit on training + validation data and its
    test cost and accuracy are reported. Each option takes a comma list or a range.
    """
    _check_results_args(options)
    _check_grid_size(options)
    # Every usage error and unwritable output before the data is loaded and searched.
    check_train_test_args(options["dataset"], options["test_file"])
    check_label_column_args(options["label_column"], options["dataset"], options["test_file"])
    inputs = [(options["dataset"], "--dataset"), (options["test_file"], "--test")]
    outputs = [(options["out_path"], "--out"), (options["plot_path"], "--plot"),
               (options["results_path"], "--results")]
    check_distinct(outputs)
    for path, option in outputs:
        check_out_dir(path, option, inputs=inputs)
    if options["plot_path"] is not None and \
            not options["plot_path"].lower().endswith(".png"):
        raise click.BadParameter("the heatmap file must end in .png", param_hint="--plot")
    options["plot_axes"] = _heatmap_axes(options)
    if options["plot_path"] is not None:
        check_plotting()
    run_guarded(ctx, _search, **options)


def _check_results_args(options):
    results = options["results_path"]
    if options["resume"] and results is None:
        raise click.UsageError("--resume needs --results FILE (the results to resume from)")
    if options["overwrite"] and results is None:
        raise click.UsageError("--overwrite needs --results FILE (the file to replace)")
    if options["resume"] and options["overwrite"]:
        raise click.UsageError("--resume keeps the results in --results FILE and --overwrite "
                               "replaces them: give one of them")
    if results is None:
        return
    if Path(results).suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise click.BadParameter("the results file must end in .csv, .jsonl or .json",
                                 param_hint="--results")
    if Path(results).exists() and not (options["resume"] or options["overwrite"]):
        raise click.BadParameter(f"{results!r} exists: --resume continues it, --overwrite "
                                 "replaces it", param_hint="--results")


def _check_grid_size(options):
    """The grid's size from the number of values of each option, before anything is made."""
    counts = {SHORT_NAMES[SEARCH_PARAMS[name]]: len(options[name]) for name in SEARCH_PARAMS}
    n_configs = math.prod(counts.values())
    if n_configs > options["max_configurations"]:
        sizes = " x ".join(f"{n:,} {name}" for name, n in counts.items() if n > 1)
        raise click.UsageError(
            f"the grid has {n_configs:,} configurations ({sizes}), more than "
            f"--max-configurations {options['max_configurations']:,}; narrow the grid or "
            "raise --max-configurations")


def _cli_wording(text):
    for library, cli in CLI_WORDING.items():
        text = text.replace(library, cli)
    return text


def _heatmap_axes(options):
    """The two grid hyperparameters of the heatmap (estimator names), or None without --plot."""
    aliases = {"batch-size": "batch_size", "batch_size": "batch_size", "lr": "lr",
               "epochs": "epochs", "alpha": "alpha", "momentum": "momentum"}
    if options["plot_axes"] is not None:
        parts = [p.strip() for p in options["plot_axes"].split(",")]
        if len(parts) != 2 or any(p not in aliases for p in parts) or parts[0] == parts[1]:
            raise click.BadParameter("give two different names out of batch-size, lr, epochs, "
                                     "alpha, momentum, e.g. lr,alpha", param_hint="--plot-axes")
        return [SEARCH_PARAMS[aliases[p]] for p in parts]
    if options["plot_path"] is None:
        return None
    varied = sorted((name for name in SEARCH_PARAMS if len(options[name]) > 1),
                    key=lambda name: -len(options[name]))
    if len(varied) < 2:
        raise click.UsageError("--plot needs two hyperparameters with several values each "
                               "(e.g. --lr 0.01,0.1 --alpha 0,1e-4)")
    return [SEARCH_PARAMS[name] for name in varied[:2]]


def _search(dataset, test_file, test_fraction, header, label_column, batch_size, lr, epochs,
            alpha, momentum, scoring, val_fraction, results_path, resume, overwrite, max_configurations,
            dask_address, seed, backend, n_threads, out_path, plot_path, plot_axes, top,
            as_json, quiet):
    try:
        from softmax_fast.search import grid_search
    except ImportError as exc:
        raise CLIError(f"grid search is not available: {exc}") from exc

    grid = {SEARCH_PARAMS[k]: v for k, v in
            dict(batch_size=batch_size, lr=lr, epochs=epochs, alpha=alpha,
                 momentum=momentum).items()}
    n_configs = math.prod(len(v) for v in grid.values())
    on_interrupt(lambda: _kept_results(results_path, n_configs))
    quiet = quiet or as_json
    X, y, X_test, y_test, test_source = load_train_test(dataset, test_file, test_fraction,
                                                         seed, quiet, header, label_column)
    talk = not quiet
    if talk:
        sizes = " x ".join(f"{len(v)} {SHORT_NAMES[k]}" for k, v in grid.items() if len(v) > 1)
        click.echo(f"dataset {dataset}: {X.shape[0]} samples for train+validation, "
                   f"{X_test.shape[0]} test; {plural(n_configs, 'configuration')}"
                   + (f" ({sizes})" if sizes else ""))
    kernel = _multi_kernel(backend)
    if dask_address is None:
        note_numba_compile("multi", kernel, "sgd", quiet)
    with SearchProgress(grid, kernel, show_progress(quiet) and dask_address is None) \
            as progress:
        result = _run_search(
            grid_search, X, y, grid, validation_fraction=val_fraction, scoring=scoring,
            X_test=X_test, y_test=y_test, backend=backend, n_threads=n_threads,
            random_state=seed, results_path=results_path, resume=resume, overwrite=overwrite,
            max_configurations=max_configurations, dask=dask_address, progress=progress,
            on_epoch=progress.on_epoch)
    rows = result.results
    summary = {
        "dataset": dataset, "test_source": test_source, "n_configurations": len(rows),
        "grid": grid, "scoring": scoring, "backend": result.backend, "seconds": result.seconds,
        "best_params": result.best_params_, "best_score": result.best_score_,
        "test_cost": result.test_loss, "test_accuracy": result.test_accuracy,
        "results_file": results_path, "results": rows,
    }
    if result.best_params_ is None:
        raise CLIError("every configuration diverged; try smaller --lr values")
    if out_path is not None and result.best_estimator_ is not None:
        result.best_estimator_.save(out_path, metadata=training_metadata(
            dataset, test_file, test_fraction, seed, header, label_column))
        record_saved(out_path)
        summary["model"] = str(out_path)
    if plot_path is not None:
        from softmax_fast.plots import plot_search_heatmap

        plot_search_heatmap(rows, plot_path, x=plot_axes[0], y=plot_axes[1],
                            metric="val_accuracy")
        record_saved(plot_path)
        summary["plot"] = str(plot_path)
    if as_json:
        write_json(with_files(summary, summary.get("model"), summary.get("plot"),
                              results_path))
        return
    _print_results(result, grid, scoring, top, talk, results_path,
                   (("results", results_path), ("model", out_path), ("heatmap", plot_path)))


def _multi_kernel(backend):
    """The multi-model backend ``grid_search(backend=...)`` will train with."""
    from softmax_fast.backends import resolve_backend_name

    try:
        return resolve_backend_name(backend, "multi")
    except (ValueError, TypeError):
        return None  # grid_search says why, in its own words


def _run_search(grid_search, *args, **kwargs):
    """``grid_search``; its errors about the results file and the cluster, and the refit's
    convergence warnings, in CLI words."""
    from sklearn.exceptions import ConvergenceWarning

    from softmax_fast.search import ResultsFileError, SearchInterrupted

    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            return grid_search(*args, **kwargs)
    except (ResultsFileError, SearchInterrupted) as exc:
        # SearchInterrupted: the cluster failed; the message says what was saved.
        raise CLIError(_cli_wording(str(exc))) from exc
    finally:
        pass_on_warnings(caught)


def _kept_results(results_path, n_configs):
    """What a Ctrl-C leaves: the rows in the results file (they are fsync'ed one by one)."""
    if results_path is None:
        return ("nothing was saved (--results FILE keeps the results of an interrupted "
                "search)")
    from softmax_fast.search import read_results

    try:
        n = len(read_results(results_path))
    except (OSError, ValueError):
        return None  # no results file yet: the default line ("nothing was saved") is true
    return (f"{n} of {n_configs} result{'s' * (n != 1)} {'are' if n != 1 else 'is'} saved in "
            f"{results_path}; --resume continues")


def _print_results(result, grid, scoring, top, talk, results_path, written):
    rows = result.results
    if talk:
        if result.n_groups == 0 and result.n_reused == len(rows):
            click.echo(f"all {plural(len(rows), 'result')} reused from {results_path}; "
                       "nothing to train")
        elif result.n_reused:
            click.echo(f"{plural(result.n_reused, 'result')} reused from {results_path}, "
                       f"{len(rows) - result.n_reused:,} trained")
        _print_ranking(rows, grid, scoring, top)
        diverged = sum(r.get("status") != "ok" for r in rows)
        click.echo(f"{plural(len(rows), 'configuration')} in {result.seconds:.2f}s "
                   f"({result.backend})" + (f", {diverged} diverged" if diverged else ""))
    best = ", ".join(f"{SHORT_NAMES.get(k, k)}={_value(v)}"
                     for k, v in result.best_params_.items())
    best_row = rows[result.best_index_]
    click.echo(f"best: {best}  (val loss {best_row['val_loss']:.4f}, "
               f"val accuracy {best_row['val_accuracy']:.4f})")
    if result.test_loss is not None:
        click.echo(f"test cost {result.test_loss:.4f}  test accuracy "
                   f"{result.test_accuracy:.4f}  (best refit on train+validation)")
    for label, path in written:
        if path is not None and talk:
            click.echo(f"{label} written to {path}")


def _print_ranking(rows, grid, scoring, top):
    keys = list(grid)
    ok = [r for r in rows if r.get("status") == "ok"]
    if scoring == "accuracy":
        ok.sort(key=lambda r: (-r["val_accuracy"], r["val_loss"]))
    else:
        ok.sort(key=lambda r: (r["val_loss"], -r["val_accuracy"]))
    shown = ok if top == 0 else ok[:top]
    cells = [[_value(r[k]) for k in keys] for r in shown]
    # Each column as wide as its longest value: a long lr such as 0.0316228 keeps its place.
    widths = [max([len(SHORT_NAMES[k])] + [len(row[i]) for row in cells])
              for i, k in enumerate(keys)]
    click.echo("  ".join(f"{SHORT_NAMES[k]:>{w}}" for k, w in zip(keys, widths, strict=True))
               + f"  {'val_loss':>9}  {'val_accuracy':>12}  {'seconds':>7}")
    for r, row in zip(shown, cells, strict=True):
        click.echo("  ".join(f"{c:>{w}}" for c, w in zip(row, widths, strict=True))
                   + f"  {r['val_loss']:9.5f}  {r['val_accuracy']:12.4f}  {r['seconds']:7.3f}")
    if len(ok) > len(shown):
        click.echo(f"... {len(ok) - len(shown)} more (--top 0 shows all)")


def _value(value):
    """A hyperparameter as shown: floats with 6 significant digits (``%g``), others as is."""
    return f"{value:g}" if isinstance(value, float) else str(value)
