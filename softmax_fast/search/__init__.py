"""Hyperparameter grid search that trains many models per pass over the data.

Why it is fast: configurations that share a batch size and the shuffle seed see exactly the
same minibatches, so they are trained together as one *group* — each minibatch gathered once
for several models, every model's products of one fixed shape (the ``multi`` kernel family,
:mod:`softmax_fast.kernels.numba_multi`), so a configuration's numbers are bitwise the same
alone, in any group and after any resume. Epoch counts (``max_iter``) are *checkpoints* of
one run: a model is trained once to its largest ``max_iter`` and evaluated on the validation
set after each smaller one on the way.

Every configuration's result equals training it alone with
``SoftmaxRegression(**params, learning_rate="constant", random_state=...)`` on the training
part of the split (up to float32 rounding): the same initial weights, sample order per epoch
(:func:`softmax_fast._training.sampling.epoch_order` with the estimator's seed), learning-rate
schedule, stopping rule (``tol`` / ``n_iter_no_change``) and divergence check. The grid search
defaults to ``learning_rate="constant"`` (the estimator's default is ``"step"``); put
``learning_rate`` (and ``lr_step_size``, ``lr_gamma``, ``power_t``) in the grid to search
schedules.

A group trains its models in parallel tasks (the compiled epoch releases the GIL); groups
run in this process or as Dask tasks, and results stream to a CSV or JSON Lines file as
each group finishes, one fsync'ed line per configuration, so an interrupted search resumes where it
stopped.

Modules: :mod:`.grid` (searchable parameters, grid expansion), :mod:`.groups` (which models
train together, one group's training loop), :mod:`.results` (the results file),
:mod:`.runners` (threads or Dask) and :mod:`.api` (:func:`grid_search`).
"""

from .api import GridSearchResult, grid_search
from .grid import MAX_CONFIGURATIONS, METRIC_KEYS, SEARCHABLE_PARAMS
from .results import ResultsFileError, read_results
from .runners import SearchInterrupted

__all__ = ["grid_search", "GridSearchResult", "SEARCHABLE_PARAMS", "METRIC_KEYS",
           "MAX_CONFIGURATIONS", "ResultsFileError", "SearchInterrupted", "read_results"]
