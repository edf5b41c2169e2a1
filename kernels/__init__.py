"""The compiled core of softmax-fast and its NumPy reference.

This package never imports the public API (``softmax_fast``); the API imports it.

Backends and the low-level contract
-----------------------------------
Three modules implement the same functions: ``reference`` (NumPy, float64, the oracle),
``cython_backend`` (the compiled ``_softmax_ce`` extension, in the build for the best
instruction set the CPU runs, see ``_isa``) and ``numba_backend`` (JIT, cached). Inputs reaching them are already validated by the API layer:

* floating arrays are float32 or float64; ``X`` is uint8 or of ``coef``'s dtype;
  2-D inputs are C-contiguous (they may be read-only); ``y`` and ``order`` are ``np.intp``;
  ``sample_weight`` is float64 (n,) or None; outputs are preallocated, C-contiguous, of the
  working dtype; ``n_threads >= 1``.
* violations of the numeric policy (NaN/+inf logits, a -inf true class, a row of all -inf)
  show up as a non-finite returned loss; the API then diagnoses and raises ``ValueError``.

Functions (``# IN`` / ``# OUT`` as in the reference):

``softmax(logits, out, n_threads)``; ``log_softmax(logits, out, n_threads)``
``softmax_ce(logits, y, sample_weight, out, n_threads) -> loss``
    (weighted) mean cross-entropy; writes dL/dlogits into ``out`` (may alias ``logits``).
``linear_softmax_ce(X, x_scale, coef, intercept, y, sample_weight, alpha, grad_coef,
grad_intercept, n_threads) -> loss``
    z = (x_scale X) coef^T + intercept; loss includes (alpha/2)||coef||^2.
``sgd_epoch(X, x_scale, y, sample_weight, order, coef, intercept, velocity_coef,
velocity_intercept, lr, alpha, momentum, nesterov, batch_size, n_threads) -> loss``
    one epoch of minibatch SGD over ``order`` (last partial batch kept), in place.
"""
