"""The ``softmax-fast`` command line (Click): the top-level group and its commands.

One module per command, each with its options, help and examples: :mod:`.train`,
:mod:`.evaluate`, :mod:`.predict`, :mod:`.search`, :mod:`.bench`, :mod:`.datasets` (``list``,
``download``). Shared options and parameter types are in :mod:`.options`, shared helpers
(errors, progress bars, data loading, JSON output) in :mod:`.common`, the training tables in
:mod:`.tables` and the search's progress in :mod:`.search_progress`. The commands are thin:
the work is in the library (:mod:`softmax_fast.workflow`, :mod:`softmax_fast.datasets`,
:mod:`softmax_fast.search`, :mod:`softmax_fast.bench`). A new command is a module here and an
``add_command`` line below.

Each command imports numpy, scikit-learn, the kernels and the estimator only when it runs, so
``softmax-fast --help`` does not pay for them (about a second).

Errors are one line on stderr and a non-zero exit status: 2 for usage errors (a bad option
value or combination, an unknown dataset name, an output path that cannot be written — all
found before any data is loaded), 1 for everything else (a missing or bad file, NaN in the
data, a model that does not fit the data, a diverged training), 130 for Ctrl-C (with a line
saying what was saved). Warnings are printed after a command that succeeds, never before an
error. ``--debug`` shows the traceback instead. Output files (models, predictions, plots,
JSON) are written to a temporary file and renamed into place, so a failure or Ctrl-C never
leaves a partial file behind. The rules live in :mod:`.guard`.

Progress bars (epochs, L-BFGS iterations, strengths of a path, grid-search epochs, downloads)
use :func:`click.progressbar` on stderr and are shown only when stderr is a terminal and
neither ``--quiet`` nor ``--json`` is given; so is the note that the numba kernels are being
compiled (their first use, ~10 s).

Options mean the same in every command that has them: ``--json`` is a flag printing one JSON
object on stdout and nothing else (the files written listed under ``"files"``); ``-q`` /
``--quiet`` leaves only the results; ``--names`` gives the names shown for the classes;
``--header`` / ``--no-header`` and ``--label-column`` say how to read CSV files. A model saved
by ``train --out`` records its training data (:func:`.common.training_metadata`), which
``evaluate`` and ``predict`` use by default.

Shell completion (bash; zsh and fish likewise)::

    eval "$(_SOFTMAX_FAST_COMPLETE=bash_source softmax-fast)"
"""

import sys

import click

from softmax_fast import __version__
from softmax_fast.cli import bench, datasets, evaluate, predict, search, train
from softmax_fast.cli.common import CONTEXT
from softmax_fast.cli.guard import EXIT_INTERRUPTED, GuardedGroup, exit_interrupted

__all__ = ["cli", "main"]

EXAMPLES = """
\b
Examples:
  softmax-fast train                         # bundled Fashion-MNIST sample, ~1 s
  softmax-fast train -d fashion-mnist --out model.npz --plot plots/
  softmax-fast evaluate model.npz            # the test data it was trained with
  softmax-fast predict model.npz shoe.png --proba
  softmax-fast train --solver lbfgs --alphas 1e-7:1e-1:16log --plot plots/
  softmax-fast search --lr 1e-3:1e-0:4log --alpha 0,1e-4 --epochs 5,10
  softmax-fast bench --quick
  softmax-fast datasets

\b
Shell completion (bash; use zsh_source or fish_source for those shells):
  eval "$(_SOFTMAX_FAST_COMPLETE=bash_source softmax-fast)"
"""


@click.group(cls=GuardedGroup, context_settings=CONTEXT, epilog=EXAMPLES)
@click.version_option(__version__, prog_name="softmax-fast")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx, debug):
    """Fast softmax (multinomial logistic) regression on the CPU."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


cli.add_command(train.train, "train")
cli.add_command(evaluate.evaluate, "evaluate")
cli.add_command(predict.predict, "predict")
cli.add_command(search.search, "search")
cli.add_command(bench.bench, "bench")
cli.add_command(datasets.datasets, "datasets")


def main(argv=None, prog_name="softmax-fast"):
    """Console-script entry point."""
    try:
        # "process": this is the program, not a test calling the group: Ctrl-C may end it.
        return cli.main(args=argv, prog_name=prog_name, obj={"process": True})
    except SystemExit as exc:
        if exc.code == EXIT_INTERRUPTED:
            exit_interrupted()  # so that the status is 130 whatever CPython noted
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
