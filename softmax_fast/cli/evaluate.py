"""``softmax-fast evaluate``: a saved model's cost, accuracy, per-class figures and confusion.

Without ``--dataset`` the model is scored on the test data of its own training run, as
``train --out`` recorded it in the model file (:func:`.common.training_metadata`): the test
split of a named dataset, the ``--test`` file, or the part of the training file held out
(the same stratified split, from the recorded ``--test-fraction`` and ``--seed``).
"""

import os

import click

from softmax_fast.cli.common import (
    CONTEXT,
    CLIError,
    check_label_column_args,
    check_plotting,
    class_names,
    is_csv,
    is_dataset_name,
    load_data_file,
    load_model,
    load_named,
    load_train_test,
    make_plot_dir,
    model_metadata,
    prepare_plot_dir,
    record_saved,
    run_guarded,
    validate_dataset_arg,
    with_files,
    write_json,
)
from softmax_fast.cli.options import (
    evaluate_label_column_option,
    header_option,
    json_files_option,
    names_option,
    quiet_option,
    threads_option,
)

EXAMPLES = """
\b
Examples:
  softmax-fast evaluate model.npz                      # the test data it was trained with
  softmax-fast evaluate model.npz -d fashion-mnist --plot plots/
  softmax-fast evaluate model.npz -d holdout.npz --json
  softmax-fast evaluate model.npz -d holdout.csv --label-column species
"""


@click.command(epilog=EXAMPLES, context_settings=CONTEXT)
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--dataset", "-d", default=None, metavar="NAME|FILE",
              help="A dataset name (its test split is used) or a data file (all of it) "
                   "[default: the model's own test data, as train --out recorded it: the test "
                   "split of its dataset, its --test file, or the part of its file held out].")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              metavar="DIR", help="Write confusion.png and weights.png (image data) into DIR "
                                  "(needs matplotlib).")
@header_option
@evaluate_label_column_option
@names_option
@json_files_option
@quiet_option
@threads_option
@click.pass_context
def evaluate(ctx, model_path, dataset, plot_dir, header, label_column, names, as_json, quiet,
             n_threads):
    """Cost, accuracy, per-class precision/recall and confusion matrix of a saved model.

    CSV options (--header, --label-column) default to those of the model's training file.
    """
    if dataset is not None:
        validate_dataset_arg(dataset)
        check_label_column_args(label_column, dataset)
    if plot_dir is not None:
        check_plotting()
    plot_dir = prepare_plot_dir(plot_dir)
    run_guarded(ctx, _evaluate, model_path, dataset, plot_dir, header, label_column, names,
                as_json, quiet or as_json, n_threads)


def _evaluate(model_path, dataset, plot_dir, header, label_column, names, as_json, quiet,
              n_threads):
    from softmax_fast.workflow import DataMismatchError, evaluate_model

    model = load_model(model_path, n_threads)
    X, y, what = _evaluation_data(model, model_path, dataset, header, label_column, quiet)
    try:
        figures = evaluate_model(model, X, y, what)
    except DataMismatchError as exc:
        raise CLIError(str(exc)) from exc
    names = class_names(dataset, model.classes_, given=names, model=model)
    result = {
        "model": str(model_path), "data": what, "n_samples": int(X.shape[0]),
        "cost": figures.cost, "accuracy": figures.accuracy,
        "classes": [str(c) for c in model.classes_], "class_names": names,
        "per_class": [{"class": str(c), "name": n, "precision": float(p), "recall": float(r),
                       "f1": float(f), "support": int(s)}
                      for c, n, p, r, f, s in zip(model.classes_, names, figures.precision,
                                                  figures.recall, figures.f1, figures.support,
                                                  strict=True)],
        "confusion_matrix": figures.confusion_matrix.tolist(),
    }
    if plot_dir is not None:
        result["plots"] = _plots(model, figures.confusion_matrix, names, plot_dir)
    if as_json:
        write_json(with_files(result, result.get("plots", [])))
        return
    _print_report(result, figures.confusion_matrix, names, what, quiet)


def _evaluation_data(model, model_path, dataset, header, label_column, quiet):
    """(X, y, description) of ``-d`` (a name: its test split; a file: all of it), else of
    the test data recorded in the model."""
    if dataset is None:
        return _recorded_test_data(model, model_path, header, label_column, quiet)
    if is_dataset_name(dataset):
        _, _, X, y = load_named(dataset, quiet)
        return X, y, f"{dataset} test split"
    header, label_column = _csv_options(dataset, model, header, label_column)
    X, y = load_data_file(dataset, header=header, label_column=label_column)
    return X, y, dataset


def _csv_options(path, model, header, label_column, recorded_key="label_column"):
    """``--header`` and ``--label-column`` for ``path``: as given, else as recorded for the
    training file (``recorded_key="test_label_column"``: for its test file)."""
    from softmax_fast._io import recorded_label_column

    meta = model_metadata(model)
    if not is_csv(path):
        return header, label_column
    if header is None and meta.get("header") in (True, False):
        header = meta["header"]
    recorded = meta.get(recorded_key)
    if label_column is None and isinstance(recorded, (str, int)) and \
            not isinstance(recorded, bool):
        label_column = recorded_label_column(path, model.n_features_in_, header, recorded)
    return header, label_column


def _recorded_test_data(model, model_path, header, label_column, quiet):
    meta = model_metadata(model)
    dataset = meta.get("dataset")
    if not isinstance(dataset, str):
        raise click.UsageError(f"{model_path} has no record of its training data (it was not "
                               "saved by softmax-fast train --out); give the data to score it "
                               "on: -d NAME|FILE")
    if is_dataset_name(dataset):
        _, _, X, y = load_named(dataset, quiet)
        return X, y, f"{dataset} test split"
    test_source = meta.get("test_source")
    source = test_source if isinstance(test_source, str) else dataset
    if not os.path.isfile(source):
        raise CLIError(f"{source}: no such file (the data {model_path} was trained with, as "
                       "recorded in it); give the data to score it on: -d NAME|FILE")
    if isinstance(test_source, str):
        header, label_column = _csv_options(test_source, model, header, label_column,
                                            "test_label_column")
        X, y = load_data_file(test_source, "the recorded test file", header, label_column)
        return X, y, test_source
    fraction, seed = meta.get("test_fraction"), meta.get("seed")
    if not isinstance(fraction, float) or not isinstance(seed, int):
        raise CLIError(f"{model_path}: the record of its test split is incomplete; give the "
                       "data to score it on: -d NAME|FILE")
    header, label_column = _csv_options(dataset, model, header, label_column)
    _, _, X, y, _ = load_train_test(dataset, None, fraction, seed, quiet, header, label_column)
    return X, y, f"{dataset} (the stratified {fraction:g} held out for test, seed {seed})"


def _plots(model, matrix, names, plot_dir):
    from softmax_fast import plots

    make_plot_dir(plot_dir)
    written = [str(plots.plot_confusion_matrix(matrix, plot_dir / "confusion.png",
                                               class_names=names))]
    record_saved(written[-1])
    if plots.image_shape(model.coef_.shape[1]) is not None:
        written.append(str(plots.plot_weights(model.multinomial_coef_,
                                              plot_dir / "weights.png", class_names=names)))
        record_saved(written[-1])
    return written


def _print_report(result, matrix, names, what, quiet):
    click.echo(f"{what}: {result['n_samples']} samples")
    click.echo(f"cost {result['cost']:.4f}  accuracy {result['accuracy']:.4f}")
    click.echo("")
    width = max(12, max(len(n) for n in names))
    click.echo(f"{'class':<{width}} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}")
    for row in result["per_class"]:
        click.echo(f"{row['name']:<{width}} {row['precision']:9.4f} {row['recall']:7.4f} "
                   f"{row['f1']:7.4f} {row['support']:8d}")
    click.echo("")
    click.echo("confusion matrix (rows: true, columns: predicted):")
    cell = max(5, len(str(int(matrix.max()))) + 1)
    short = [n[:cell - 1] for n in names]
    click.echo(" " * width + "".join(f"{s:>{cell}}" for s in short))
    for name, row in zip(names, matrix, strict=True):
        click.echo(f"{name:<{width}}" + "".join(f"{int(v):>{cell}}" for v in row))
    if "plots" in result and not quiet:
        click.echo(f"plots written: {', '.join(result['plots'])}")
