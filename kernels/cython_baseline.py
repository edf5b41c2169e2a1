"""Backend ``cython-baseline``: the Cython kernels' x86-64-v2 build (SSE4.2, 4 float32 lanes).

What ``cython`` runs on an x86-64 CPU without AVX2 (on other architectures, the one build).
Opt-in: registered so that the contract suite, which takes its backends from the registry,
tests this build on every machine, and so that it can be compared; see ``cython_backend.py``.
"""

from .cython_backend import CythonKernels

_KERNELS = CythonKernels("baseline")
ISA, EXTENSION, VECTOR_LANES = _KERNELS.ISA, _KERNELS.EXTENSION, _KERNELS.VECTOR_LANES
softmax, log_softmax, softmax_ce = _KERNELS.softmax, _KERNELS.log_softmax, _KERNELS.softmax_ce
linear_softmax_ce, sgd_epoch = _KERNELS.linear_softmax_ce, _KERNELS.sgd_epoch
