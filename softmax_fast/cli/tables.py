"""What ``softmax-fast train`` shows while it trains: a table per fit, and progress bars.

:class:`TrainingTable` is the ``on_phase`` / ``on_epoch`` / ``on_iteration`` / ``on_alpha``
display of :mod:`softmax_fast.workflow`: a heading per fit, then a row per SGD epoch, per
tenth L-BFGS iteration or per strength of a regularization path, and a progress bar on a
terminal. Column names are the JSON keys of ``--json`` (``train_loss``, ``val_loss``, ...),
so the table and the report speak of the same things by the same names.
"""

import contextlib
import re

import click

from softmax_fast.cli.common import fmt, plural, progress_bar
from softmax_fast.cli.guard import note_warning

__all__ = ["TrainingTable", "cli_wording", "pass_on_warnings"]

#: Every how many L-BFGS iterations a row is printed (and the first and the last).
ITERATION_ROW_EVERY = 10

#: The estimator's words for its knobs -> the options of ``train``.
_CLI_WORDS = (
    (re.compile(r"at max_iter=(\d+) epochs"), r"after \1 epochs"),
    (re.compile(r"\bmax_iter\b"), "--epochs"),
    (re.compile(r"solver='lbfgs'"), "--solver lbfgs"),
    (re.compile(r"\blearning_rate_init\b"), "--lr"),
)


def cli_wording(text):
    """A library message in the words of the command line (``max_iter`` is ``--epochs``)."""
    for pattern, words in _CLI_WORDS:
        text = pattern.sub(words, text)
    return text


def pass_on_warnings(caught):
    """Hand warnings caught around a fit to the command's held warnings (also when the fit
    failed): the estimator's convergence advice in the words of the command line, the others
    as they are."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            note_warning(f"ConvergenceWarning: {cli_wording(str(warning.message))}")
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)


class TrainingTable:
    """Shows the fits of :func:`softmax_fast.workflow.run_training` and ``run_path``.

    Parameters
    ----------
    talk : bool
        Print headings and rows (not with ``-q`` or ``--json``).
    bar : bool
        Draw progress bars (stderr is a terminal and neither ``-q`` nor ``--json``).
    redraw : bool
        A row replaces the bar drawn on the terminal (\\r and erase line first).
    """

    EPOCH_HEADER = f"{'epoch':>5}  {'train_loss':>10}  {'val_loss':>9}  {'val_accuracy':>12}  " \
                   f"{'lr':>8}  {'time':>8}"
    ITERATION_HEADER = f"{'iteration':>9}  {'train_loss':>10}  {'time':>8}"
    PATH_HEADER = f"{'alpha':>10}  {'val_loss':>9}  {'val_accuracy':>12}  {'n_iter':>6}  " \
                  f"{'time':>8}"

    def __init__(self, talk, bar, redraw):
        self.talk = talk
        self.bar = bar
        self.redraw = redraw
        self._advance = lambda n=1: None
        self._last_row = None  # the last L-BFGS record, printed when the fit ends
        self.n_alphas = 0  # strengths of a path: the length of its bar

    def echo(self, text=""):
        if self.talk:
            click.echo(text)

    def _row(self, text):
        if self.talk:
            # \r + erase line: the row replaces the progress bar drawn on a terminal.
            click.echo(("\r\x1b[K" if self.redraw else "") + text)

    @contextlib.contextmanager
    def _bar(self, length, label):
        with progress_bar(length, label, self.bar) as advance:
            self._advance = advance
            try:
                yield
            finally:
                self._advance = lambda n=1: None

    @contextlib.contextmanager
    def phase(self, phase):
        """The ``on_phase`` display: a heading, a header row and a bar around one fit."""
        if phase.name == "path":
            self.echo(f"regularization path: {plural(phase.epochs, 'iteration')} at most per "
                      "strength (L-BFGS, strongest first, warm-started from the previous "
                      "ones):")
            self.echo(self.PATH_HEADER)
            with self._bar(self.n_alphas, "strengths"):
                yield
            return
        label = "training" if phase.name == "training" else \
            f"retraining on train+validation ({phase.n_samples} samples" + \
            (f", {phase.epochs} epochs)" if phase.solver == "sgd" else ")")
        if phase.solver == "lbfgs":
            yield from self._lbfgs_phase(phase, label)
            return
        self.echo(f"{label}:")
        self.echo(self.EPOCH_HEADER)
        with self._bar(phase.epochs, "epochs"):
            yield

    def _lbfgs_phase(self, phase, label):
        self.echo(f"{label}: L-BFGS, at most {plural(phase.epochs, 'iteration')}")
        if phase.name == "training":
            self.echo(self.ITERATION_HEADER)
        self._last_row = None
        with self._bar(phase.epochs, "iterations"):
            yield
        if self._last_row is not None and self._last_row["iteration"] % ITERATION_ROW_EVERY:
            self._iteration_row(self._last_row)
        for text in phase.warnings:
            # Held, not printed: stderr gets it after a run that succeeds, and an error
            # stays the only line there.
            note_warning(f"ConvergenceWarning: {cli_wording(text)}")

    def epoch(self, record):
        """The ``on_epoch`` display: one row per SGD epoch."""
        self._row(f"{record['epoch']:5d}  {record['train_loss']:10.5f}  "
                  f"{fmt(record.get('val_loss'), '9.5f')}  "
                  f"{fmt(record.get('val_accuracy'), '12.4f')}  "
                  f"{record['learning_rate']:8.4g}  "
                  f"{record['seconds'] * 1e3:6.1f}ms")
        self._advance(1)

    def iteration(self, record):
        """The ``on_iteration`` display: the first and every tenth L-BFGS iteration."""
        self._last_row = record
        if record["iteration"] == 1 or record["iteration"] % ITERATION_ROW_EVERY == 0:
            self._iteration_row(record)
        self._advance(1)

    def _iteration_row(self, record):
        self._row(f"{record['iteration']:9d}  {record['train_loss']:10.5f}  "
                  f"{record['seconds']:7.2f}s")

    def alpha(self, row):
        """The ``on_alpha`` display: one row per strength of a path."""
        self._row(f"{row['alpha']:10.3g}  {row['val_loss']:9.5f}  {row['val_accuracy']:12.4f}  "
                  f"{row['n_iter']:6d}  {row['seconds']:7.2f}s")
        self._advance(1)
