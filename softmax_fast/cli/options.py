"""Reusable, typed Click options and parameter types shared by the CLI commands.

Heavy modules (numpy, the kernels) are not imported here, so ``--help`` stays fast: grid
ranges are expanded with :mod:`math` alone, and the backend and dataset names come from
registries that import nothing heavy (:mod:`softmax_fast.backends`,
:mod:`softmax_fast.datasets.catalog`).
"""

import math
from pathlib import Path

import click

from softmax_fast.backends import backend_names
from softmax_fast.datasets.catalog import DATASETS

#: ``--backend`` of the training commands: any registered backend, or ``auto``.
BACKENDS = ("auto", *backend_names())
#: ``bench --backend``: our dense backends.
BENCH_BACKENDS = backend_names("dense")
#: The named datasets (``--dataset NAME``, ``datasets download NAME``).
DATASET_NAMES = tuple(DATASETS)
SOLVERS = ("sgd", "lbfgs")
SCHEDULES = ("step", "constant", "invscaling", "adaptive")

#: Largest value of a count option (epochs, batch size, ...): kernels count in int32/int64,
#: and nothing real comes near it.
MAX_COUNT = 2**31 - 1
#: Most threads ``--threads`` accepts: more is a typo, and would start that many threads.
MAX_THREADS = 4096
#: Seeds are NumPy's: 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1
#: Most points one ``START:STOP:N`` range (and one grid option) may have; checked before the
#: values are made.
MAX_GRID_POINTS = 10_000
#: Default of ``search --max-configurations``.
MAX_CONFIGURATIONS = 100_000


def _finite(number):
    return not (math.isnan(number) or math.isinf(number))


class FiniteFloatRange(click.FloatRange):
    """:class:`click.FloatRange` that also refuses NaN (which passes every range check) and
    infinity."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not _finite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class PositiveFloat(click.ParamType):
    """A float > 0 (or >= 0 with ``allow_zero``); bad values raise ``click.BadParameter``."""

    name = "float"

    def __init__(self, allow_zero=False):
        self.allow_zero = allow_zero

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not _finite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if number < 0 or (number == 0 and not self.allow_zero):
            bound = ">= 0" if self.allow_zero else "> 0"
            self.fail(f"{value!r} must be {bound}", param, ctx)
        return number


class GridValues(click.ParamType):
    """A list of hyperparameter values: ``a,b,c`` or a range ``start:stop:N`` / ``start:stop:Nlog``.

    ``start:stop:N`` is N evenly spaced values including both ends; ``Nlog`` spaces them evenly
    on a log scale (start and stop must then be > 0). For integer hyperparameters the values
    are rounded and duplicates dropped, so ``5:40:8`` gives 5, 10, ..., 40. Every value is
    checked against ``minimum``/``maximum`` (``*_open`` excludes the bound itself). A range
    has at most :data:`MAX_GRID_POINTS` points and so has the whole option: counted before any
    value is made, so ``0.1:1:100000000`` fails at once.

    Parameters
    ----------
    kind : {int, float}
        Type of the values.
    minimum, maximum : float or None
        Allowed range.
    min_open, max_open : bool
        Whether the bound is excluded.
    """

    def __init__(self, kind=float, minimum=None, maximum=None, min_open=False, max_open=False):
        self.kind = kind
        self.minimum = minimum
        # Integer hyperparameters are counts: bounded like the count options.
        self.maximum = MAX_COUNT if maximum is None and kind is int else maximum
        self.min_open = min_open
        self.max_open = max_open
        self.name = "ints" if kind is int else "floats"

    def get_metavar(self, param, ctx=None):
        return "LIST|A:B:N[log]"

    def _number(self, text, param, ctx):
        try:
            number = float(text)
        except ValueError:
            self.fail(f"{text!r} is not a number", param, ctx)
        if not _finite(number):
            self.fail(f"{text!r} is not a finite number", param, ctx)
        return number

    def _count(self, text, param, ctx):
        """(number of points, log scale) of the range ``text``, checked before it is made."""
        parts = text.split(":")
        if len(parts) != 3:
            self.fail(f"{text!r}: a range is START:STOP:N or START:STOP:Nlog", param, ctx)
        count_text = parts[2].strip().lower()
        log = count_text.endswith("log")
        count_text = count_text[:-3] if log else count_text
        if not (count_text.isascii() and count_text.isdigit()) or not count_text.strip("0"):
            self.fail(f"{text!r}: the number of points must be a positive integer", param, ctx)
        # len() first: int() of a 5,000-digit string is itself an error in Python >= 3.11.
        if len(count_text.lstrip("0")) > 6 or int(count_text) > MAX_GRID_POINTS:
            self.fail(f"{text!r}: at most {MAX_GRID_POINTS:,} points per range", param, ctx)
        return int(count_text), log

    def _expand(self, text, param, ctx):
        parts = text.split(":")
        count, log = self._count(text, param, ctx)
        start, stop = self._number(parts[0], param, ctx), self._number(parts[1], param, ctx)
        if log:
            if start <= 0 or stop <= 0:
                self.fail(f"{text!r}: a log range needs START and STOP > 0", param, ctx)
            lo, hi = math.log10(start), math.log10(stop)
            points = [10 ** (lo + (hi - lo) * i / (count - 1)) if count > 1 else start
                      for i in range(count)]
        else:
            points = [start + (stop - start) * i / (count - 1) if count > 1 else start
                      for i in range(count)]
        # Pin the ends exactly: 10**log10(x) can be off in the last bit.
        points[0] = start
        if count > 1:
            points[-1] = stop
        # Round to 12 significant digits so 1e-3:1e-1:3log prints as 0.001, 0.01, 0.1.
        return [float(f"{p:.12g}") for p in points]

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        items = [item.strip() for item in str(value).split(",")]
        if "" in items:
            self.fail(f"{value!r} has an empty item", param, ctx)
        total = sum(self._count(item, param, ctx)[0] if ":" in item else 1 for item in items)
        if total > MAX_GRID_POINTS:
            self.fail(f"{total:,} values, more than {MAX_GRID_POINTS:,}", param, ctx)
        values = []
        for item in items:
            if ":" in item:
                points = self._expand(item, param, ctx)
                values.extend([round(p) for p in points] if self.kind is int else points)
                continue
            number = self._number(item, param, ctx)
            if self.kind is int:
                if number != round(number):
                    self.fail(f"{item!r} is not an integer", param, ctx)
                number = round(number)
            values.append(number)
        unique = list(dict.fromkeys(values))
        for number in unique:
            self._check_bounds(number, value, param, ctx)
        return unique

    def _check_bounds(self, number, value, param, ctx):
        low, high = self.minimum, self.maximum
        if low is not None and (number < low or (self.min_open and number == low)):
            self.fail(f"{number:g} (from {value!r}) must be {'>' if self.min_open else '>='} "
                      f"{low:g}", param, ctx)
        if high is not None and (number > high or (self.max_open and number == high)):
            self.fail(f"{number:g} (from {value!r}) must be {'<' if self.max_open else '<='} "
                      f"{high:g}", param, ctx)


class LabelColumn(click.ParamType):
    """A CSV label column: an integer is its index (negative counts from the end), anything
    else its header name."""

    name = "column"

    def get_metavar(self, param, ctx=None):
        return "NAME|INDEX"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip()
        if not text:
            self.fail("give a column name or index", param, ctx)
        try:
            return int(text)
        except ValueError:
            return text


class ClassNames(click.ParamType):
    """Class names for display: ``a,b,c`` or a file of one name per line (a value naming an
    existing file is read as one), in the order of the model's sorted class labels."""

    name = "names"

    def get_metavar(self, param, ctx=None):
        return "FILE|A,B,..."

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        path = Path(value)
        if path.is_file():
            try:
                lines = path.read_text(encoding="utf-8-sig").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                self.fail(f"cannot read {value!r}: {exc}", param, ctx)
            names = [line.strip() for line in lines if line.strip()]
        else:
            names = [name.strip() for name in str(value).split(",")]
        if len(names) < 2 or "" in names:
            self.fail(f"{value!r}: give at least two non-empty names (a,b,...) or a file of "
                      "one name per line", param, ctx)
        return names


POSITIVE_INT = click.IntRange(min=1, max=MAX_COUNT)
THREADS = click.IntRange(min=1, max=MAX_THREADS)
SEED = click.IntRange(min=0, max=MAX_SEED)
FRACTION = FiniteFloatRange(min=0.0, max=1.0, min_open=True, max_open=True)
MOMENTUM = FiniteFloatRange(min=0.0, max=1.0, max_open=True)

dataset_option = click.option(
    "--dataset", "-d", default="fashion-mnist-sample", show_default=True, metavar="NAME|FILE",
    help=f"Dataset name ({', '.join(DATASET_NAMES)}) or a data file "
         "(.npz with X,y; .npy with a .labels.npy next to it; .csv with a label column; "
         ".svm/.svmlight/.libsvm).",
)
test_file_option = click.option(
    "--test", "test_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
    help="Test data file for a --dataset FILE; without it a stratified --test-fraction of the "
         "file is held out. Not allowed with a named dataset (it has its own test split).",
)
test_fraction_option = click.option(
    "--test-fraction", type=FRACTION, default=0.2, show_default=True,
    help="Stratified share of a --dataset FILE held out for testing when --test is not given.",
)
batch_size_option = click.option("--batch-size", "-b", type=POSITIVE_INT, default=32,
                                 show_default=True, help="Minibatch size.")
lr_option = click.option("--lr", "learning_rate", type=PositiveFloat(), default=0.1,
                         show_default=True, help="Initial learning rate (learning_rate_init).")
epochs_option = click.option(
    "--epochs", "-e", type=POSITIVE_INT, default=None,
    help="Number of SGD epochs; with --solver lbfgs the most iterations (per strength with "
         "--alphas) [default: 10 epochs; L-BFGS: 500 iterations].")
alpha_option = click.option("--alpha", type=PositiveFloat(allow_zero=True), default=1e-5,
                            show_default=True, help="L2 penalty: adds (alpha/2)*||W||^2.")
momentum_option = click.option("--momentum", type=MOMENTUM, default=0.0, show_default=True,
                               help="SGD momentum in [0, 1).")
schedule_option = click.option(
    "--schedule", type=click.Choice(SCHEDULES), default="step", show_default=True,
    help="Learning-rate schedule: step halves it every 2 epochs; constant; invscaling; "
         "adaptive divides it by 5 on a plateau.",
)
solver_option = click.option("--solver", type=click.Choice(SOLVERS), default="sgd",
                             show_default=True,
                             help="Minibatch SGD, or full-batch L-BFGS (the exact optimum).")
seed_option = click.option("--seed", type=SEED, default=0, show_default=True,
                           help=f"Random seed (shuffling, validation and test splits), "
                                f"0 to {MAX_SEED}.")
backend_option = click.option("--backend", type=click.Choice(BACKENDS), default="auto",
                              show_default=True, help="Kernel backend.")
threads_option = click.option("--threads", "n_threads", type=THREADS, default=None,
                              help="Threads for the kernels [default: all cores].")
val_fraction_option = click.option("--val-fraction", type=FRACTION, default=0.2,
                                   show_default=True,
                                   help="Fraction of the training data held out for validation.")
quiet_option = click.option("--quiet", "-q", is_flag=True,
                            help="No progress bars, notes or per-step output on either "
                                 "stream: only the results.")
header_option = click.option(
    "--header/--no-header", default=None,
    help="Whether the first row of CSV files is a header [default: detected, and an error "
         "when the file leaves it unclear].",
)
#: The rule that finds the label column of a CSV file without --label-column.
LABEL_RULE = ("the one column named label, target, class, y or species, else the first column "
              "if it holds integers or text while the others hold numbers, else an error "
              "asking for this option")


def _label_column_option(default):
    return click.option(
        "--label-column", type=LabelColumn(), default=None,
        help="The label column of CSV files: a header name (any case) or an index (0 is the "
             f"first, -1 the last) [default: {default}].",
    )


label_column_option = _label_column_option(LABEL_RULE)
# evaluate and predict: the model knows the label column of its training file.
evaluate_label_column_option = _label_column_option(
    "the training file's, as the model recorded it; else " + LABEL_RULE)
predict_label_column_option = _label_column_option(
    "the training file's, as the model recorded it, where a file has it; else the one column "
    "named label, target, class, y or species, if any")
names_option = click.option(
    "--names", "names", type=ClassNames(), default=None,
    help="Class names to show in place of the labels, in the order of the sorted labels: "
         "a,b,c or a file of one name per line. train saves them in the model, for evaluate "
         "and predict [default: the names saved in the model; Fashion-MNIST's names for its "
         "datasets; else the labels]. Display only: .npy outputs keep the labels.",
)


def json_option(writes_files=False):
    """``--json``: the same flag, and the same words, on every command."""
    files = " The files written are listed under \"files\"." if writes_files else ""
    return click.option(
        "--json", "as_json", is_flag=True,
        help="Print one JSON object with the results on stdout and nothing else (no progress "
             f"or notes on stderr, as -q); save it with > FILE.{files}",
    )


json_flag_option = json_option()
json_files_option = json_option(writes_files=True)
