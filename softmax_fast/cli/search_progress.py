"""The progress bar of ``softmax-fast search``, moved by every epoch of every group.

``grid_search(progress=...)`` reports finished configurations only, after each group: a
group of many models training for many epochs would leave the bar still for its whole run
(17 s on the bundled sample). ``grid_search(on_epoch=...)`` reports every epoch of every
group trained in this process, so the bar measures group epochs, planned from the grid with
the search's own grouping (:func:`softmax_fast.search.groups.make_tasks`); the reports of
finished configurations keep it honest (a group whose models all stop early runs fewer
epochs than planned). On a Dask cluster the epochs run elsewhere and the bar moves per
group.
"""

import contextlib
import math
import sys
import threading

import click

__all__ = ["SearchProgress"]


def planned_epochs(grid, max_group_size=64):
    """Group epochs of a search over the full ``grid`` (estimator names -> value lists)."""
    from softmax_fast.search.grid import expand_grid
    from softmax_fast.search.groups import make_tasks

    configs, _ = expand_grid(grid, math.prod(len(v) for v in grid.values()))
    tasks = make_tasks(configs, range(len(configs)), max_group_size, {})
    return sum(max(max(m["checkpoints"]) for m in task["models"]) for task in tasks)


class SearchProgress:
    """``progress(done, total)`` for ``grid_search`` and an epoch counter, one bar on stderr.

    Use as a context manager around the search; without ``enabled`` it draws nothing.

    Parameters
    ----------
    grid : dict
        The search's grid (estimator names -> value lists).
    kernel : str
        The resolved multi-model backend (whose epochs are counted).
    enabled : bool
        Draw the bar (a terminal, neither ``-q`` nor ``--json``).
    """

    def __init__(self, grid, kernel, enabled):
        self.grid = grid
        self.kernel = kernel
        self.enabled = enabled
        self.n_reused = 0
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()
        self._bar = None
        self._planned = 0
        self._first = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._stack.close()

    def __call__(self, done, total):
        """The ``progress`` callback of ``grid_search``: after resuming, and per group."""
        if self._first is None:
            self._first = done  # the results reused from the file: nothing to train there
            self.n_reused = done
            if self.enabled and done < total:
                self._open(total)
            return
        if self._bar is None:
            return
        with self._lock:
            share = (done - self._first) / max(1, total - self._first)
            floor = self._planned if done == total else int(self._planned * share)
            self._bar.update(max(0, floor - self._bar.pos))

    def _open(self, total):
        planned = planned_epochs(self.grid)
        # Resumed: only the missing configurations run; their share of the plan, roughly.
        self._planned = max(1, math.ceil(planned * (total - self._first) / total))
        label = f"training {total - self._first:,} configurations"
        self._bar = self._stack.enter_context(click.progressbar(
            length=self._planned, label=label, file=sys.stderr, show_eta=True,
            show_pos=False, show_percent=True))

    def _tick(self):
        if self._bar is None:
            return
        with self._lock:
            # Never complete before the search says so: the last report fills the bar.
            if self._bar.pos < self._planned - 1:
                self._bar.update(1)

    def on_epoch(self, group, epoch, n_models):
        """The ``on_epoch`` hook of ``grid_search``: one group epoch done (any thread)."""
        self._tick()
