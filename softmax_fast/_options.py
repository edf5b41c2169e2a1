"""Reusable, typed Click options and parameter types shared by the CLI commands.

Heavy modules (numpy, the kernels) are not imported here, so ``--help`` stays fast.
"""

import click

BACKENDS = ("auto", "cython", "numba", "reference")


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
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if number < 0 or (number == 0 and not self.allow_zero):
            bound = ">= 0" if self.allow_zero else "> 0"
            self.fail(f"{value!r} must be {bound}", param, ctx)
        return number


POSITIVE_INT = click.IntRange(min=1)
FRACTION = click.FloatRange(min=0.0, max=1.0, min_open=True, max_open=True)

dataset_option = click.option(
    "--dataset", "-d", default="fashion-mnist-sample", show_default=True, metavar="NAME|FILE",
    help="Dataset name (fashion-mnist, fashion-mnist-sample) or a data file "
         "(.npz with X,y; .npy; .csv with a label column; libsvm/svmlight).",
)
batch_size_option = click.option("--batch-size", "-b", type=POSITIVE_INT, default=32,
                                 show_default=True, help="Minibatch size.")
lr_option = click.option("--lr", "learning_rate", type=PositiveFloat(), default=0.1,
                         show_default=True, help="Initial learning rate (learning_rate_init).")
epochs_option = click.option("--epochs", "-e", type=POSITIVE_INT, default=10, show_default=True,
                             help="Number of epochs (max_iter).")
alpha_option = click.option("--alpha", type=PositiveFloat(allow_zero=True), default=1e-5,
                            show_default=True, help="L2 penalty: adds (alpha/2)*||W||^2.")
seed_option = click.option("--seed", type=int, default=0, show_default=True,
                           help="Random seed (shuffling, validation split).")
backend_option = click.option("--backend", type=click.Choice(BACKENDS), default="auto",
                              show_default=True, help="Kernel backend.")
threads_option = click.option("--threads", "n_threads", type=POSITIVE_INT, default=None,
                              help="Threads for the kernels [default: all cores].")
val_fraction_option = click.option("--val-fraction", type=FRACTION, default=0.2,
                                   show_default=True,
                                   help="Fraction of the training data held out for validation.")
