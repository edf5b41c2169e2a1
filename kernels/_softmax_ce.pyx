# cython: language_level=3
"""Fused softmax / cross-entropy / linear-model kernels: Cython + OpenMP.

Design
------
* Row-wise kernels (softmax, log_softmax, softmax_ce) work on blocks of R consecutive rows,
  R = clamp(2048 // c, 1, 256) (a function of the class count only). A block is processed in
  flat passes: per-row max and shift, one vectorised exp over the R * c contiguous values,
  per-row sums in float64, one vectorised log over the R sums, per-row scaling. For c <= 16,
  softmax_ce transposes 16 rows at a time so that the rows sit in the vector lanes.
* Reductions run over fixed-size blocks: each block's loss is summed in row order and the
  block sums are added in block order after the parallel loop (blocks are handed out
  dynamically, which is safe for exactly that reason). Nothing depends on which thread ran
  a block, so results are bitwise identical for any ``n_threads``.
* The linear model (linear_softmax_ce, sgd_epoch) uses the register-blocked tiles of
  _sf_linear_impl.h inside one persistent OpenMP region. Thread t owns the classes
  [t c / T, (t + 1) c / T): it computes their logits for a chunk of rows (a minibatch in
  sgd_epoch), then, after the one barrier of the chunk, every thread runs the cheap
  softmax-CE of all rows into a private G = w_i (softmax(z_i) - onehot(y_i)) / sum(w) and
  sums G^T X for its own classes; sgd_epoch then updates its own rows of coef, intercept
  and velocities, which therefore never move between cores. Logits are double-buffered, so
  one barrier per chunk suffices. Every output element is computed by the same operations
  in the same order whatever T is (see _sf_linear_impl.h).
* linear_softmax_ce walks the rows in chunks of at most 1024 rows, 65536 logits and 1 MiB
  of X, so its extra memory is O(chunk x threads) even for 32,000 classes, and a chunk's
  rows are still in L2 when the backward pass reads them again (a 3.2 MB float32 chunk of
  Fashion-MNIST came from L3 and ran at 40 GFLOP/s; 1 MiB chunks run at ~80).
* The BLAS path (_cy_gemm.pxi) cuts dW into at least 8 tiles when d allows, so both
  threads share the gradient product at c = 100 too (one 100 x 512 tile ran on one thread).
* Float32 data keep float32 logits, exp and gradient; sums of exp, the losses and the
  weight sums are float64.
"""

import numpy as np

cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc

cnp.import_array()

include "_cy_common.pxi"
include "_cy_rowwise.pxi"
include "_cy_linear.pxi"
include "_cy_gemm.pxi"
