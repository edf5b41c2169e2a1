"""Backend ``cython-avx2``: the Cython kernels' x86-64-v3 build (AVX2 + FMA, 8 float32 lanes).

What ``cython`` runs on a CPU with AVX2 but not AVX-512. Opt-in: registered so that the
contract suite, which takes its backends from the registry, tests this build on every machine
that runs it, and so that it can be compared; see ``cython_backend.py``. Importing raises
ImportError where the CPU cannot run it.
"""

from .cython_backend import CythonKernels

_KERNELS = CythonKernels("avx2")
ISA, EXTENSION, VECTOR_LANES = _KERNELS.ISA, _KERNELS.EXTENSION, _KERNELS.VECTOR_LANES
softmax, log_softmax, softmax_ce = _KERNELS.softmax, _KERNELS.log_softmax, _KERNELS.softmax_ce
linear_softmax_ce, sgd_epoch = _KERNELS.linear_softmax_ce, _KERNELS.sgd_epoch
