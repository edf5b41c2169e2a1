"""``softmax-fast predict``: class names (or probabilities) for the samples in files.

The files are read by :func:`softmax_fast._io.read_input_parts` (the readers of training
data for NumPy, CSV and svmlight files, plus IDX files, images and standard input).
"""

import csv
import io
from pathlib import Path

import click

from softmax_fast.cli.common import (
    CONTEXT,
    check_out_dir,
    class_names,
    load_model,
    note_numba_compile,
    record_saved,
    recorded_csv_options,
    run_guarded,
)
from softmax_fast.cli.options import (
    header_option,
    names_option,
    predict_label_column_option,
    quiet_option,
    threads_option,
)

EXAMPLES = """
\b
Examples:
  softmax-fast predict model.npz shoe.png              # one 28x28 grayscale image
  softmax-fast predict model.npz a.png b.png --proba   # a file column first
  softmax-fast predict model.npz images.npy --out labels.csv
  softmax-fast predict model.npz t10k-images-idx3-ubyte.gz --out labels.npy
  softmax-fast predict model.npz test.svm
  cat rows.csv | softmax-fast predict model.npz -     # CSV (or .npy bytes) on stdin
"""


@click.command(epilog=EXAMPLES, context_settings=CONTEXT)
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True,
                type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--proba", is_flag=True, help="Output class probabilities instead of classes.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE", help="Write to FILE (.npy, .csv or .txt; atomically) instead of "
                                   "stdout. A .npy file holds the labels (or probabilities) "
                                   "of all inputs, in order, never names.")
@header_option
@predict_label_column_option
@names_option
@quiet_option
@threads_option
@click.pass_context
def predict(ctx, model_path, inputs, proba, out_path, header, label_column, names, quiet,
            n_threads):
    """Predict the class (or class probabilities) of the samples in INPUT files.

    INPUT: .npy / .npz (array X) / .csv (feature columns; a label column is left out, see
    --label-column) / .svm, .svmlight, .libsvm (labels ignored) / IDX files (Fashion-MNIST
    format, plain or .gz) / images (PNG, JPEG...; each is converted to grayscale and is one
    sample, so a Fashion-MNIST model takes 28x28 images with a dark background; 16-bit images
    are scaled to 8 bits; needs Pillow) / - for standard input: .npy bytes (told by NumPy's
    magic number), else CSV text. CSV options default to those of the model's training file.

    Text output is CSV: one class per line, by name (see --names; Fashion-MNIST models show
    "Ankle boot", not 9); with --proba a header of the class names, then one row of
    probabilities per sample. With several INPUT files every row starts with its file (a
    "file" column, under a header row), as grep does; - is named "-".
    """
    if out_path is not None and Path(out_path).suffix.lower() not in (".npy", ".csv", ".txt"):
        raise click.BadParameter("the output file must end in .npy, .csv or .txt",
                                 param_hint="--out")
    check_out_dir(out_path, "--out", inputs=[(model_path, "MODEL")]
                  + [(path, "an INPUT") for path in inputs if path != "-"])
    run_guarded(ctx, _predict, model_path, inputs, proba, out_path, header, label_column,
                names, quiet, n_threads)


def _predict(model_path, inputs, proba, out_path, header, label_column, names, quiet,
             n_threads):
    import numpy as np

    from softmax_fast._io import atomic_output, read_input_parts, stack_inputs, write_text_atomic

    model = load_model(model_path, n_threads)
    header, label_column, strict = recorded_csv_options(model, header, label_column)
    parts = read_input_parts(inputs, model.n_features_in_, header=header,
                             label_column=label_column, strict_label_column=strict)
    X = stack_inputs([part for _, part in parts])
    if proba:
        _note_softmax_compile(model, quiet)
    values = model.predict_proba(X) if proba else model.predict(X)
    if out_path is not None and out_path.lower().endswith(".npy"):
        with atomic_output(out_path) as tmp:
            np.save(tmp, values)
        record_saved(out_path)
        return
    shown = class_names(None, model.classes_, given=names,
                        model=model)
    files = [name for name, part in parts for _ in range(part.shape[0])] \
        if len(parts) > 1 else None
    text = _csv_text(model.classes_, shown, values, proba, files)
    if out_path is None:
        click.echo(text, nl=False)
    else:
        write_text_atomic(out_path, text)
        record_saved(out_path)


def _note_softmax_compile(model, quiet):
    from softmax_fast.backends import resolve_backend_name

    try:
        backend = resolve_backend_name(model.backend)
    except (ValueError, TypeError):
        return
    note_numba_compile("dense", backend, "softmax", quiet)


def _csv_text(classes, names, values, proba, files=None):
    """The predictions as CSV: the csv module quotes a name holding a comma, a quote or a
    line break, so every row has one field per column.

    ``files`` (one per row, several inputs only) adds a first column ``file`` under a header.
    """
    import numpy as np

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    lead = (lambda i: [files[i]]) if files is not None else (lambda i: [])
    if proba:
        writer.writerow((["file"] if files is not None else []) + list(names))
        writer.writerows(lead(i) + [f"{p:.6g}" for p in row] for i, row in enumerate(values))
        return buffer.getvalue()
    by_label = dict(zip(np.asarray(classes).tolist(), names, strict=True))
    if files is not None:
        writer.writerow(["file", "class"])
    writer.writerows(lead(i) + [by_label[v]] for i, v in enumerate(np.asarray(values).tolist()))
    return buffer.getvalue()
