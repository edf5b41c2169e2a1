"""Reusable, typed Click options and parameter types shared by the CLI commands.

Heavy modules (numpy, the kernels) are not imported here, so ``--help`` stays fast: grid
ranges are expanded with :mod:`math` alone.
"""

import math

import click

BACKENDS = ("auto", "cython", "numba", "reference")
SOLVERS = ("sgd", "lbfgs")
SCHEDULES = ("step", "constant", "invscaling", "adaptive")


def _finite(number):
    return not (math.isnan(number) or math.isinf(number))


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
    checked against ``minimum``/``maximum`` (``*_open`` excludes the bound itself).

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
        self.maximum = maximum
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

    def _expand(self, text, param, ctx):
        parts = text.split(":")
        if len(parts) != 3:
            self.fail(f"{text!r}: a range is START:STOP:N or START:STOP:Nlog", param, ctx)
        start, stop = self._number(parts[0], param, ctx), self._number(parts[1], param, ctx)
        count_text = parts[2].strip().lower()
        log = count_text.endswith("log")
        count_text = count_text[:-3] if log else count_text
        if not count_text.isdigit() or int(count_text) < 1:
            self.fail(f"{text!r}: the number of points must be a positive integer", param, ctx)
        count = int(count_text)
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
        values = []
        for item in str(value).split(","):
            item = item.strip()
            if not item:
                self.fail(f"{value!r} has an empty item", param, ctx)
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


POSITIVE_INT = click.IntRange(min=1)
FRACTION = click.FloatRange(min=0.0, max=1.0, min_open=True, max_open=True)
MOMENTUM = click.FloatRange(min=0.0, max=1.0, max_open=True)

dataset_option = click.option(
    "--dataset", "-d", default="fashion-mnist-sample", show_default=True, metavar="NAME|FILE",
    help="Dataset name (fashion-mnist, fashion-mnist-sample) or a data file "
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
epochs_option = click.option("--epochs", "-e", type=POSITIVE_INT, default=10, show_default=True,
                             help="Number of epochs (max_iter; L-BFGS: iterations).")
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
seed_option = click.option("--seed", type=int, default=0, show_default=True,
                           help="Random seed (shuffling, validation and test splits).")
backend_option = click.option("--backend", type=click.Choice(BACKENDS), default="auto",
                              show_default=True, help="Kernel backend.")
threads_option = click.option("--threads", "n_threads", type=POSITIVE_INT, default=None,
                              help="Threads for the kernels [default: all cores].")
val_fraction_option = click.option("--val-fraction", type=FRACTION, default=0.2,
                                   show_default=True,
                                   help="Fraction of the training data held out for validation.")
quiet_option = click.option("--quiet", "-q", is_flag=True,
                            help="No progress bars and no per-step output, only the results.")
json_flag_option = click.option(
    "--json", "as_json", is_flag=True,
    help="Print one JSON object with the results on stdout and nothing else.",
)
