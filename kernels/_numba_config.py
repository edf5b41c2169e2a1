"""Compilation settings and tiling constants of every Numba kernel, defined once.

Every ``@njit`` in ``kernels/`` takes its options from here (``JIT``, ``PJIT`` or
``JIT_STRICT``); ``tests/test_numba_config.py`` checks that no jitted function sets its own.

FASTMATH keeps LLVM free to reassociate and contract (vectorised reductions, FMA) but NOT
``nnan``/``ninf``: the numeric policy relies on NaN and infinities propagating into the
returned loss. ``error_model="numpy"`` makes 0/0 give NaN instead of raising.

The tile sizes below fix which operations are grouped together. They depend only on the
problem shape, never on the thread count, which is what makes every kernel bitwise
reproducible for any ``n_threads``.
"""

import platform

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

#: options of every compiled function (``parallel`` is added where a kernel has prange)
JIT = {"fastmath": set(FASTMATH), "error_model": "numpy", "cache": True, "nogil": True}
PJIT = dict(JIT, parallel=True)
#: scalar helpers whose order of operations is part of their accuracy (range reductions,
#: (z - m) - lse): only "contract", and never inlined into a caller that would add its own
#: reassociation flags (see numba_backend._shifted_minus).
JIT_STRICT = {"fastmath": {"contract"}, "error_model": "numpy", "cache": True,
              "inline": "never"}
#: small per-row helpers called once per row of a kernel (``_row_max``, ``_row_exp``):
#: inlined by Numba itself, because LLVM kept them a call per row. Each version compiled
#: side by side in one process, one thread: softmax-CE 65536 x 10 2.04 -> 1.76 ms; softmax
#: 65536 x 10 5.00 -> 3.00 ms, 8192 x 1000 12.5 -> 11.0 ms; linear_softmax_ce and SGD epochs
#: unchanged. Same flags as JIT. Also the forward tile's inner products (``_dot_4x5``,
#: ``_dot_4x4``): as calls, their accumulators went through memory (the tiles of 4 ran
#: 1.1-1.4x slower than written inline).
JIT_INLINE = dict(JIT, inline="always")

#: elements (rows x classes) of logits/gradients that one chunk of linear_softmax_ce keeps
#: in memory: the extra memory is O(CHUNK_ELEMS), whatever n and n_classes are.
CHUNK_ELEMS = 1 << 16
#: most rows and most bytes of X in one chunk of linear_softmax_ce (the Cython backend's
#: LIN_ROWS and LIN_X_BYTES): the backward pass reads the rows the forward pass just read,
#: which must still be in cache. Chunks of CHUNK_ELEMS // c rows (20 MB of X at d = 784,
#: c = 10) made both passes read X from memory, and 2 threads gained 1.3x instead of 2x.
CHUNK_ROWS = 1024
CHUNK_X_BYTES = 1 << 20


def _vector_registers():
    """Vector registers of the CPU Numba compiles for: 32 with AVX-512 (or on 64-bit Arm),
    16 on every other x86-64 (AVX2 and older: ymm0-15).

    Read from what Numba targets: ``NUMBA_CPU_FEATURES`` when set, else the host's features
    (a ``NUMBA_CPU_NAME`` without features is taken as 16, the safe side). Numba's cache keys
    compiled code by CPU name and features too, so a cache never holds tiles chosen for
    another CPU.
    """
    if platform.machine().lower() in ("aarch64", "arm64"):
        return 32
    from numba.core import config

    features = config.CPU_FEATURES
    if features is None:
        if config.CPU_NAME is not None:
            return 16
        try:
            import llvmlite.binding as llvm

            features = llvm.get_host_cpu_features().flatten()
        except RuntimeError:  # llvmlite cannot read this host's features: the old choice
            return 32
    return 32 if "+avx512f" in features.split(",") else 16


VECTOR_REGISTERS = _vector_registers()
#: rows of one forward tile (``_numba_math._forward_tile``): 4 rows x 5 classes keep 20
#: accumulators and 9 loads in AVX-512's 32 registers; with 16 they spilled (86 stack accesses
#: in the SGD forward loop on an AVX2 EPYC) and 2 rows x 5 classes, as the C kernels' AVX2
#: build, ran 1.2-1.35x faster (Fashion-MNIST batches of 32, one thread, float32 and uint8).
#: One row count per CPU (the class split inside it changes no bits); the two counts agree
#: to rounding, and to the bit only where LLVM vectorises their loops alike (see
#: ``_numba_math._forward_tile``).
FORWARD_TILE_ROWS = 4 if VECTOR_REGISTERS >= 32 else 2
#: rows of one forward/softmax tile (even: the forward kernel works on pairs of rows)
ROW_TILE = 16
#: classes of one forward tile and of one backward tile
CLASS_TILE = 128
#: least classes per thread for ``linear_softmax_ce`` to split its classes among the threads
#: (``numba_backend._class_groups``; with fewer, the row and feature tiles share the work)
CLASS_GROUP_MIN = 4
#: target width (features) of one feature block; blocks are multiples of 16 elements. Wide
#: blocks amortise the horizontal sums of the forward tile; 784 features give 2 blocks.
FEATURE_BLOCK = 384
#: feature blocks of linear_softmax_ce's gradient (dW): per thread, at most, and their least
#: width (at c = 10 the class tiles give no parallelism, the feature blocks do; see
#: _numba_math._gradient_blocks for what more blocks cost)
GRAD_BLOCKS_PER_THREAD = 2
GRAD_FEATURE_BLOCKS = 8
GRAD_MIN_FEATURE_WIDTH = 64
#: rows shorter than this take _row_max's single select chain (the eight-way one is for
#: long rows; at c = 10 it cost 10 % more of softmax-CE)
SHORT_ROW = 16
#: rows x classes handled by one softmax block (fixed-order loss partials)
SOFTMAX_BLOCK_ELEMS = 1 << 14
#: from this many classes softmax and log_softmax go row by row (``_row_exp``): a row is long
#: enough to vectorise, and the flat block's extra pass over z - max cost 4-11 % at c = 300 to
#: 32,000; below, the flat block (``_exp_block``) ran 1,000,000 x 10 2.1x (softmax) and 2.9x
#: (log_softmax) faster (one thread, AMD EPYC). Both give the same bits.
SOFTMAX_ROWWISE_CLASSES = 256
#: the softmax-CE rows of ``linear_softmax_ce`` and of the BLAS path (``_softmax_ce_rows``,
#: float64 logits there) take the flat block below this many classes: 256 x 784 x 10 and
#: 60000 x 784 x 10 ran 2-9 % faster; from 100 classes on it gained nothing (2000 x 64 x c,
#: one process, interleaved, AMD EPYC)
CE_FLAT_CLASSES = 64
#: below this much work per thread (elements of softmax / softmax-CE, multiply-adds of an
#: SGD minibatch), a call uses fewer threads (same code, same result)
MIN_WORK_PER_THREAD = 1 << 16
#: ... and the multiply-adds (2 n c d) of ``linear_softmax_ce``'s register-tile path per
#: thread: its three parallel loops per chunk cost more to launch than a small call's work
#: (one thread against two: 784 x 10 float32, 32 rows 36 against 67 us, 128 rows 87
#: against 111 us, 256 rows even, 512 rows 344 against 220 us; 512 x 30, 128 rows 182
#: against 136 us)
LINEAR_MIN_WORK_PER_THREAD = 1_500_000
#: the BLAS path (_numba_gemm; the same numbers as the Cython one): logits per chunk (the
#: O(chunk) memory), most rows per chunk, and the fixed tiles of the two products
GEMM_CHUNK_ELEMS = 1 << 22
GEMM_MAX_ROWS = 2048
GEMM_ROW_TILE = 512
GEMM_CLASS_TILE = 512
GEMM_FEATURE_TILE = 512
#: the gradient's feature tiles are narrowed (to GEMM_MIN_FEATURE_TILE at most) until dW has
#: GEMM_MIN_GRAD_TILES tiles for the threads to share (one 100 x 512 tile ran on one thread)
GEMM_MIN_FEATURE_TILE = 64
GEMM_MIN_GRAD_TILES = 8
#: row-split mode of the BLAS path (see _numba_gemm): slots (partial gradients), most rows of
#: one block, and most bytes of one partial gradient (every block reads and writes all of
#: it, which must stay in cache)
GEMM_SPLIT_SLOTS = 8
GEMM_SPLIT_BLOCK = 512
GEMM_SPLIT_MIN_BLOCK = 128  # (when n and c allow; 32-row blocks were slower than tiles)
GEMM_SPLIT_BYTES = 1 << 22
#: most models one thread of the multi-model epoch trains side by side (one gather of each
#: minibatch serves them all); the grouping never changes a model's numbers
MULTI_MODELS_PER_TASK = 8


def read_only(*arrays):
    """The kernels' input arrays as Numba should see them: read-only (views, never copies).

    Numba types a read-only array apart from a writeable one, so a caller's read-only input
    (``np.load(path, mmap_mode="r")``, ``flags.writeable = False``) used to compile every
    kernel it reached a second time (a memory map's first ``linear_softmax_ce`` and
    ``sgd_epoch``: 21-24 s more on a cold cache). Every input reaches the kernels read-only
    instead, whatever the caller's flags, so there is one compilation for both, and Numba
    refuses at compile time any kernel that would write into an input. A view costs
    ~0.8 us; a read-only array (or None) is passed through.
    """
    views = []
    for array in arrays:
        if array is not None and array.flags.writeable:
            array = array.view()
            array.flags.writeable = False
        views.append(array)
    return views
