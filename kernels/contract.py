"""The low-level contracts a kernel module implements, written once as ``typing.Protocol``.

A *family* (``kind``) is a set of functions with one contract:

``dense``  — :class:`DenseKernels`: row-wise softmax/log-softmax/softmax-CE, the linear model's
             loss and gradient, one SGD epoch. ``X`` is a dense C-contiguous array.
``sparse`` — :class:`SparseKernels`: the linear model's loss/gradient and one SGD epoch for a
             ``scipy.sparse`` CSR ``X`` (never densified).
``multi``  — :class:`MultiModelKernels`: one SGD epoch of K models that share their
             minibatches (grid search).

Inputs reaching a kernel are already validated by the API layer (shapes agree, floating inputs
are float32 or float64, ``X`` is uint8 or of the weights' dtype, ``y``/``order`` are
``np.intp`` inside ``[0, n_classes)`` / ``[0, n_samples)``, ``sample_weight`` is float64 or
None, outputs are preallocated C-contiguous arrays of the working dtype, ``n_threads >= 1``).
Kernels may rely on that and nothing more. A violation of the numeric policy (NaN/+inf logits,
a -inf true class, a row of all -inf) shows up as a non-finite returned loss; the API layer
then diagnoses it.

Tiny probabilities are exactly 0: every compiled kernel flushes exp(z - max) to 0 where
z - max < :data:`EXP_FLUSH` of the working dtype, so no subnormal number is ever made (each
costs a microcode assist on x86: softmax-CE ran 5x slower once 11 % of the logits were that
far down, as they are at weak regularization). The reference keeps them; the difference is
below c e^-64 relative to a row's sum.

Every parameter is documented ``# IN`` / ``# OUT`` / ``# IN/OUT`` in the reference
implementation (:mod:`softmax_fast.kernels.reference`). Weights are always laid out
(n_classes, n_features) — as ``coef_``, PyTorch's ``nn.Linear.weight`` and every kernel — and K
models are stacked as (K, n_classes, n_features).

:func:`missing_functions` is how the backend registry and the tests check a module against its
family's protocol.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = [
    "DenseKernels",
    "SparseKernels",
    "MultiModelKernels",
    "PROTOCOLS",
    "EXP_FLUSH",
    "missing_functions",
]

#: exp(x) below these (x = z - row max) is exactly 0 in every compiled kernel, by dtype
#: name (the module docstring says why). Cython: SF_EXP_FLUSH_F32/_F64 in ``_sf_simd.h``.
EXP_FLUSH = {"float32": -64.0, "float64": -680.0}

Array = Any  # numpy.ndarray; kept abstract so importing this module never imports numpy


@runtime_checkable
class DenseKernels(Protocol):
    """Contract of the ``dense`` family (dense ``X``)."""

    def softmax(self, logits: Array, out: Array, n_threads: int) -> None:
        """out = softmax(logits) row-wise; ``out`` may be ``logits``."""

    def log_softmax(self, logits: Array, out: Array, n_threads: int) -> None:
        """out = (z - max) - log sum exp(z - max) row-wise; ``out`` may be ``logits``."""

    def softmax_ce(self, logits: Array, y: Array, sample_weight: Array | None, out: Array,
                   n_threads: int) -> float:
        """(Weighted) mean cross-entropy; writes dL/dlogits into ``out`` (may alias)."""

    def linear_softmax_ce(self, X: Array, x_scale: float, coef: Array, intercept: Array,
                          y: Array, sample_weight: Array | None, alpha: float,
                          grad_coef: Array, grad_intercept: Array, n_threads: int) -> float:
        """Loss of z = x_scale X coef^T + intercept incl. (alpha/2)||coef||^2; gradients."""

    def sgd_epoch(self, X: Array, x_scale: float, y: Array, sample_weight: Array | None,
                  order: Array, coef: Array, intercept: Array, velocity_coef: Array,
                  velocity_intercept: Array, lr: float, alpha: float, momentum: float,
                  nesterov: bool, batch_size: int, n_threads: int) -> float:
        """One epoch of minibatch SGD over ``order`` in place; returns the epoch's mean loss."""


@runtime_checkable
class SparseKernels(Protocol):
    """Contract of the ``sparse`` family: as :class:`DenseKernels`, ``X`` a CSR matrix.

    The CSR structure is validated by the caller (``indptr`` non-decreasing from 0 to nnz,
    ``indices`` inside ``[0, n_features)``), so the kernels may index without checks.
    """

    def linear_softmax_ce(self, X: Any, x_scale: float, coef: Array, intercept: Array,
                          y: Array, sample_weight: Array | None, alpha: float,
                          grad_coef: Array, grad_intercept: Array, n_threads: int) -> float:
        """As :meth:`DenseKernels.linear_softmax_ce`."""

    def sgd_epoch(self, X: Any, x_scale: float, y: Array, sample_weight: Array | None,
                  order: Array, coef: Array, intercept: Array, velocity_coef: Array,
                  velocity_intercept: Array, lr: float, alpha: float, momentum: float,
                  nesterov: bool, batch_size: int, n_threads: int) -> float:
        """As :meth:`DenseKernels.sgd_epoch`."""


@runtime_checkable
class MultiModelKernels(Protocol):
    """Contract of the ``multi`` family: K models trained on the same minibatches (grid search).

    ``coefs`` (K, c, d), ``intercepts`` (K, c) and the velocities are float32 and hold K
    independent models; ``scales`` (K,) float64 are lazy weight-decay factors (model j's
    weights are ``scales[j] * coefs[j]``; a model with momentum keeps its scale at 1). The
    velocities may be None when no model has momentum. Model j's numbers must depend on model
    j's inputs only — never on K, on the other models or on ``n_threads`` — so a configuration
    trains bitwise alike alone, in any group and after any resume.
    """

    def multi_sgd_epoch(self, X: Array, x_scale: float, y: Array, order: Array, coefs: Array,
                        scales: Array, intercepts: Array, velocity_coefs: Array | None,
                        velocity_intercepts: Array | None, lr: Array, alpha: Array,
                        momentum: Array, nesterov: Array, batch_size: int,
                        n_threads: int) -> Array:
        """One epoch of every model in place; returns each model's mean loss, shape (K,)."""


#: The protocol of each family, by ``kind``.
PROTOCOLS = {"dense": DenseKernels, "sparse": SparseKernels, "multi": MultiModelKernels}


def missing_functions(module: object, kind: str) -> list[str]:
    """Names of the functions of ``kind``'s protocol that ``module`` lacks (or are not callable)."""
    protocol = PROTOCOLS[kind]
    names = [name for name in vars(protocol) if not name.startswith("_")
             and callable(vars(protocol)[name])]
    return [name for name in names if not callable(getattr(module, name, None))]
