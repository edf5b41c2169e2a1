"""The rules of one SGD run, in one object: schedule, divergence, plateaus, stopping.

:class:`TrainingPolicy` is used by the estimator (one per model, kept across ``partial_fit``
calls) and by grid search (one per configuration). The compiled epochs only apply updates;
every decision between two epochs is made here:

* the learning rate of the coming epoch — "constant"; "invscaling" lr_init / (t + 1)^power_t
  with t the samples seen (MLPClassifier's); "step" lr_init * lr_gamma^(epoch // lr_step_size);
  "adaptive" divides the rate by 5 on a plateau (MLPClassifier's);
* divergence: a non-finite training loss or intercept;
* plateaus: the monitored loss (validation loss with early stopping, else the training
  objective) has not improved by ``tol`` for ``n_iter_no_change`` epochs — then "adaptive"
  lowers the rate and continues, the others stop ("converged" / "early_stopping");
* the best epoch, whose weights early stopping restores.
"""

import dataclasses
import math

__all__ = ["SGDConfig", "TrainingPolicy", "EpochOutcome", "TrainingDivergedError",
           "LEARNING_RATE_SCHEDULES", "still_falling", "last_epoch_share"]

LEARNING_RATE_SCHEDULES = ("constant", "invscaling", "adaptive", "step")

#: "adaptive" stops lowering the rate below this (MLPClassifier's 1e-6).
_ADAPTIVE_FLOOR = 1e-6
#: Inputs beyond this magnitude, not the learning rate, are blamed for a divergence.
_LARGE_INPUT = 1e4


class TrainingDivergedError(FloatingPointError):
    """The training loss became non-finite (typically a learning rate that is too large)."""


@dataclasses.dataclass
class SGDConfig:
    """Hyperparameters of one SGD run (names follow scikit-learn's MLPClassifier)."""

    batch_size: int = 32
    learning_rate_init: float = 0.1
    learning_rate: str = "step"  # constant | invscaling | adaptive | step
    power_t: float = 0.5
    lr_step_size: int = 2
    lr_gamma: float = 0.5
    alpha: float = 1e-5
    momentum: float = 0.0
    nesterovs_momentum: bool = False
    max_iter: int = 10
    shuffle: bool = True
    tol: float = 1e-4
    n_iter_no_change: int = 10
    early_stopping: bool = False

    @classmethod
    def from_params(cls, params):
        """A config from a dict holding (a superset of) the fields."""
        return cls(**{name: params[name] for name in cls.__dataclass_fields__ if name in params})


@dataclasses.dataclass(frozen=True)
class EpochOutcome:
    """What :meth:`TrainingPolicy.end_epoch` decided about the epoch that just ended.

    ``diverged``: the loss is not finite. ``improved``: a new best monitored loss (early
    stopping keeps these weights). ``stop``: None to go on, else "converged" or
    "early_stopping".
    """

    diverged: bool = False
    improved: bool = False
    stop: str | None = None


class TrainingPolicy:
    """Schedule, divergence and stopping rules of one model trained by SGD.

    Parameters
    ----------
    config : SGDConfig
    epoch_size : int or None
        Samples in one pass over the data (the "step" schedule counts passes by it).

    Attributes
    ----------
    epochs_done, samples_seen : int
        Epochs and samples trained so far (over every ``fit``/``partial_fit`` of the model).
    learning_rate : float
        The rate of the current (or last) epoch.
    best_loss : float
        Lowest monitored loss of the current run.
    """

    def __init__(self, config, epoch_size=None):
        self.config = config
        self.epoch_size = epoch_size
        self.epochs_done = 0
        self.samples_seen = 0
        self.learning_rate = float(config.learning_rate_init)
        self.start_run()

    def start_run(self, config=None):
        """Begin a ``fit`` call: new hyperparameters may apply; plateau counters restart."""
        if config is not None:
            self.config = config
        self.best_loss = math.inf
        self._stall = 0

    @property
    def monitors_validation(self):
        return bool(self.config.early_stopping)

    def next_learning_rate(self):
        """The learning rate of the coming epoch (and remember it).

        "step" counts passes over the data by samples seen: ``samples_seen // epoch_size``
        (``fit`` sets ``epoch_size`` to its number of samples, so that is its epoch count;
        ``partial_fit`` calls on chunks of one data set pass that set's size). Without an
        epoch size it keeps the initial rate: calls alone do not say when a pass is over.
        """
        cfg = self.config
        if cfg.learning_rate == "invscaling":
            self.learning_rate = cfg.learning_rate_init / (self.samples_seen + 1) ** cfg.power_t
        elif cfg.learning_rate == "step":
            passes = self.samples_seen // self.epoch_size if self.epoch_size else 0
            self.learning_rate = cfg.learning_rate_init * \
                cfg.lr_gamma ** (passes // cfg.lr_step_size)
        return self.learning_rate

    def end_epoch(self, n_samples, train_loss, val_loss=None, finite_weights=True):
        """Account for an epoch over ``n_samples`` samples and decide what comes next."""
        self.epochs_done += 1
        self.samples_seen += int(n_samples)
        if not (math.isfinite(train_loss) and finite_weights):
            return EpochOutcome(diverged=True)
        cfg = self.config
        monitored = val_loss if self.monitors_validation else train_loss
        self._stall = 0 if monitored < self.best_loss - cfg.tol else self._stall + 1
        improved = monitored < self.best_loss
        if improved:
            self.best_loss = monitored
        if self._stall < cfg.n_iter_no_change:
            return EpochOutcome(improved=improved)
        if cfg.learning_rate == "adaptive" and self.learning_rate / 5.0 > _ADAPTIVE_FLOOR:
            self.learning_rate /= 5.0  # a plateau: continue with a smaller step
            self._stall = 0
            return EpochOutcome(improved=improved)
        return EpochOutcome(improved=improved,
                            stop="early_stopping" if self.monitors_validation else "converged")

    def divergence_message(self, train_loss, input_magnitude=None):
        """The message of :class:`TrainingDivergedError` for the epoch that just diverged.

        Inputs of huge magnitude make any learning rate overflow: then the inputs, not the
        rate, are named as the cause.
        """
        head = (f"training diverged in epoch {self.epochs_done}: the loss became {train_loss} "
                f"with learning rate {self.learning_rate:g}; ")
        advice = "try a smaller learning_rate_init (e.g. 10x smaller)"
        if input_magnitude is not None and input_magnitude > _LARGE_INPUT:
            return head + (f"the scaled inputs reach {input_magnitude:.3g}: standardize the "
                           "features (e.g. scikit-learn's StandardScaler) or set input_scale; "
                           f"otherwise {advice}")
        return head + advice


#: A last epoch that made more than this share of all the progress since the first one has
#: not converged (a decaying schedule ends with a small share: 0.4 % on Fashion-MNIST).
_STILL_FALLING = 0.05


def last_epoch_share(curve):
    """The last epoch's share of the training loss's drop since the first epoch."""
    total = curve[0] - curve[-1]
    return (curve[-2] - curve[-1]) / total if len(curve) >= 2 and total > 0 else 0.0


def still_falling(curve, tol):
    """Whether SGD stopped while its loss was still dropping fast (under-trained)."""
    return (len(curve) >= 2 and curve[-2] - curve[-1] > tol
            and last_epoch_share(curve) > _STILL_FALLING)
