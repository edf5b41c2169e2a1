"""Training code on already-validated arrays — the one place for each training rule.

* :mod:`.sampling` — the sample order of an epoch, the training seed, the stratified
  validation split and the input-scale default.
* :mod:`.policy` — :class:`~.policy.TrainingPolicy`, the learning-rate schedule, divergence,
  stall/adaptive and early-stopping rules of one model (the estimator uses one, grid search
  one per model).
* :mod:`.scoring` — the one loss-and-accuracy evaluation (estimator, CLI, grid search).
* :mod:`.sgd` — SGD epochs of one model (:func:`~.sgd.run_sgd`).
* :mod:`.lbfgs` — full-batch L-BFGS (:func:`~.lbfgs.run_lbfgs`).

The estimator (:mod:`softmax_fast.estimator`) and grid search (:mod:`softmax_fast.search`) turn
user input into the arrays these functions take; nothing here validates user input.
"""
