/* Register-blocked tiles of the linear softmax model: a "template" included by _sf_simd.h
 * once per (weight type SF_T, data type SF_XT) with SF_NAME(f) giving the suffix.
 *
 * forward:  Z[i, k] = x_scale * <x_i, W_k> + b_k       (x_i a row of X, W_k a row of coef)
 * backward: out[k, j] (+)= sum_i G[i, k] x_i[j]          (out has row stride ldo)
 *
 * Both are vectorised along the features j. The forward tile keeps SF_MR rows x SF_KR classes
 * of vector accumulators in registers (per step: SF_MR + SF_KR loads for SF_MR * SF_KR FMAs);
 * the backward tile keeps SF_BK classes x SF_BJ feature vectors (per row: SF_BJ loads and SF_BK
 * broadcasts for SF_BK * SF_BJ FMAs). uint8 data are widened to SF_T in registers, so X is
 * read at a quarter of the float32 bytes and never copied.
 *
 * Reproducibility: every output element is produced by the same sequence of operations
 * whatever tile it falls in (a vector lane and the scalar tail both do acc = fma(a, b, acc) in
 * the same order), so results do not depend on how callers split rows, classes or feature
 * chunks between threads.
 */

#ifndef SF_TILES_DEFINED
#define SF_TILES_DEFINED
#if SF_VBYTES >= 64 /* 32 vector registers */
#define SF_MR 4
#define SF_KR 5
#define SF_BK 5
#define SF_BJ 4
#else /* 16 vector registers */
#define SF_MR 2
#define SF_KR 5
#define SF_BK 5
#define SF_BJ 2
#endif
#define SF_ROW(X, idx, i, d) ((X) + ((idx) ? (idx)[i] : (i)) * (d))
#endif

/* Z[r, k0 + k] for r < MR, k < NR; x[r] point at the data rows. */
SF_INLINE void SF_NAME(sf_dot_tile)(
    const int MR, const int NR, const SF_XT *const *x, const SF_T *W, ptrdiff_t d,
    ptrdiff_t k0, SF_T x_scale, const SF_T *b, SF_T *Z, ptrdiff_t ldz, const SF_XT *const *pf)
{
    SF_VT acc[SF_MR][SF_KR];
    for (int r = 0; r < MR; r++)
        for (int k = 0; k < NR; k++) acc[r][k] = (SF_VT){0};
    ptrdiff_t j = 0;
    for (; j + SF_NL <= d; j += SF_NL) {
        SF_VT xv[SF_MR];
        for (int r = 0; r < MR; r++) xv[r] = SF_LDX(x[r] + j);
        if (pf) /* rows of the next tile: randomly ordered rows defeat the hardware prefetcher */
            for (int r = 0; r < MR; r++) __builtin_prefetch(pf[r] + j);
        for (int k = 0; k < NR; k++) {
            SF_VT wv = SF_LDT(W + (k0 + k) * d + j);
            for (int r = 0; r < MR; r++) acc[r][k] += xv[r] * wv;
        }
    }
    for (int r = 0; r < MR; r++) {
        for (int k = 0; k < NR; k++) {
            SF_T s = SF_HSUM(acc[r][k]);
            const SF_T *w = W + (k0 + k) * d;
            for (ptrdiff_t jj = j; jj < d; jj++) s += (SF_T)x[r][jj] * w[jj];
            Z[r * ldz + k0 + k] = x_scale * s + b[k0 + k];
        }
    }
}

/* Z[r, k:k1] for one row tile (MR rows), class tiles of SF_KR then one narrower tile. */
SF_INLINE void SF_NAME(sf_dot_rows)(
    const int MR, const SF_XT *const *x, const SF_T *W, ptrdiff_t d, ptrdiff_t k0,
    ptrdiff_t k1, SF_T x_scale, const SF_T *b, SF_T *Z, ptrdiff_t ldz, const SF_XT *const *pf)
{
    ptrdiff_t k = k0;
    for (; k + SF_KR <= k1; k += SF_KR, pf = NULL)  /* prefetch during the first tile only */
        SF_NAME(sf_dot_tile)(MR, SF_KR, x, W, d, k, x_scale, b, Z, ldz, pf);
    switch (k1 - k) {
    case 4: SF_NAME(sf_dot_tile)(MR, 4, x, W, d, k, x_scale, b, Z, ldz, pf); break;
    case 3: SF_NAME(sf_dot_tile)(MR, 3, x, W, d, k, x_scale, b, Z, ldz, pf); break;
    case 2: SF_NAME(sf_dot_tile)(MR, 2, x, W, d, k, x_scale, b, Z, ldz, pf); break;
    case 1: SF_NAME(sf_dot_tile)(MR, 1, x, W, d, k, x_scale, b, Z, ldz, pf); break;
    default: break;
    }
}

/* Z (nr, ldz) [rows, classes k0:k1] = x_scale * X[rows] W[k0:k1]^T + b[k0:k1] for the data
 * rows idx[r0:r0+nr] (or r0:r0+nr when idx is NULL). n_ahead: how many rows after the last
 * one may be prefetched (those the caller does next). */
static void SF_NAME(sf_forward)(
    const SF_XT *X, ptrdiff_t d, const ptrdiff_t *idx, ptrdiff_t r0, ptrdiff_t nr,
    ptrdiff_t n_ahead, const SF_T *W, ptrdiff_t k0, ptrdiff_t k1, SF_T x_scale,
    const SF_T *b, SF_T *Z, ptrdiff_t ldz)
{
    const SF_XT *x[SF_MR], *pf[SF_MR];
    ptrdiff_t i = 0;
    if (k1 <= k0) return;
    for (; i + SF_MR <= nr; i += SF_MR) {
        int ahead = i + 2 * SF_MR <= nr + n_ahead;
        for (int r = 0; r < SF_MR; r++) {
            x[r] = SF_ROW(X, idx, r0 + i + r, d);
            pf[r] = ahead ? SF_ROW(X, idx, r0 + i + SF_MR + r, d) : x[r];
        }
        SF_NAME(sf_dot_rows)(SF_MR, x, W, d, k0, k1, x_scale, b, Z + i * ldz, ldz,
                             ahead ? pf : NULL);
    }
    for (; i < nr; i++) {
        x[0] = SF_ROW(X, idx, r0 + i, d);
        SF_NAME(sf_dot_rows)(1, x, W, d, k0, k1, x_scale, b, Z + i * ldz, ldz, NULL);
    }
}

/* out[k0 + k, j0 + jv * NL + l] (+)= sum_i G[i, k0 + k] X_i[...] for k < NK, jv < NJ. */
SF_INLINE void SF_NAME(sf_gt_tile)(
    const int NK, const int NJ, const SF_XT *X, ptrdiff_t d, const ptrdiff_t *idx,
    ptrdiff_t r0, ptrdiff_t nr, const SF_T *G, ptrdiff_t ldg, ptrdiff_t k0, ptrdiff_t j0,
    SF_T *out, ptrdiff_t ldo, int accumulate)
{
    SF_VT acc[SF_BK][SF_BJ];
    for (int k = 0; k < NK; k++)
        for (int v = 0; v < NJ; v++) acc[k][v] = (SF_VT){0};
    for (ptrdiff_t i = 0; i < nr; i++) {
        const SF_XT *xi = SF_ROW(X, idx, r0 + i, d) + j0;
        const SF_T *gi = G + i * ldg + k0;
        SF_VT xv[SF_BJ];
        for (int v = 0; v < NJ; v++) xv[v] = SF_LDX(xi + v * SF_NL);
        for (int k = 0; k < NK; k++) {
            const SF_T g = gi[k];
            for (int v = 0; v < NJ; v++) acc[k][v] += g * xv[v];
        }
    }
    for (int k = 0; k < NK; k++) {
        for (int v = 0; v < NJ; v++) {
            SF_T *o = out + (k0 + k) * ldo + j0 + v * SF_NL;
            SF_STT(o, accumulate ? SF_LDT(o) + acc[k][v] : acc[k][v]);
        }
    }
}

/* The same sums, one scalar column at a time (the ragged end of the features). */
static void SF_NAME(sf_gt_scalar)(
    const SF_XT *X, ptrdiff_t d, const ptrdiff_t *idx, ptrdiff_t r0, ptrdiff_t nr,
    const SF_T *G, ptrdiff_t ldg, ptrdiff_t k0, ptrdiff_t k1, ptrdiff_t j0, ptrdiff_t j1,
    SF_T *out, ptrdiff_t ldo, int accumulate)
{
    for (ptrdiff_t k = k0; k < k1; k++) {
        for (ptrdiff_t j = j0; j < j1; j++) {
            SF_T s = 0;
            for (ptrdiff_t i = 0; i < nr; i++)
                s += G[i * ldg + k] * (SF_T)SF_ROW(X, idx, r0 + i, d)[j];
            out[k * ldo + j] = accumulate ? out[k * ldo + j] + s : s;
        }
    }
}

/* Vector columns [j0, jv_end) of classes k..k+NK: tiles of SF_BJ vectors, then single ones. */
SF_INLINE void SF_NAME(sf_gt_cols)(
    const int NK, const SF_XT *X, ptrdiff_t d, const ptrdiff_t *idx, ptrdiff_t r0,
    ptrdiff_t nr, const SF_T *G, ptrdiff_t ldg, ptrdiff_t k, ptrdiff_t j0, ptrdiff_t jv_end,
    SF_T *out, ptrdiff_t ldo, int accumulate)
{
    ptrdiff_t j = j0;
    for (; j + SF_BJ * SF_NL <= jv_end; j += SF_BJ * SF_NL)
        SF_NAME(sf_gt_tile)(NK, SF_BJ, X, d, idx, r0, nr, G, ldg, k, j, out, ldo, accumulate);
    for (; j + SF_NL <= jv_end; j += SF_NL)
        SF_NAME(sf_gt_tile)(NK, 1, X, d, idx, r0, nr, G, ldg, k, j, out, ldo, accumulate);
}

/* out[k, j] (+)= sum_i G[i, k] X[rows_i, j] for k in [k0, k1), j in [j0, j1); G is (nr, ldg).
 * Feature columns at or beyond d - d % SF_NL are always summed by the scalar path, so callers
 * may cut the features anywhere on a multiple of SF_NL. */
static void SF_NAME(sf_backward)(
    const SF_XT *X, ptrdiff_t d, const ptrdiff_t *idx, ptrdiff_t r0, ptrdiff_t nr,
    const SF_T *G, ptrdiff_t ldg, ptrdiff_t k0, ptrdiff_t k1, ptrdiff_t j0, ptrdiff_t j1,
    SF_T *out, ptrdiff_t ldo, int accumulate)
{
    const ptrdiff_t jv_end = j1 < d - d % SF_NL ? j1 : d - d % SF_NL;
    for (ptrdiff_t k = k0; k < k1; k += SF_BK) {
        const int nk = (k1 - k) < SF_BK ? (int)(k1 - k) : SF_BK;
        if (jv_end > j0) {
            switch (nk) {
            case SF_BK:
                SF_NAME(sf_gt_cols)(SF_BK, X, d, idx, r0, nr, G, ldg, k, j0, jv_end, out, ldo,
                                    accumulate);
                break;
            case 4:
                SF_NAME(sf_gt_cols)(4, X, d, idx, r0, nr, G, ldg, k, j0, jv_end, out, ldo,
                                    accumulate);
                break;
            case 3:
                SF_NAME(sf_gt_cols)(3, X, d, idx, r0, nr, G, ldg, k, j0, jv_end, out, ldo,
                                    accumulate);
                break;
            case 2:
                SF_NAME(sf_gt_cols)(2, X, d, idx, r0, nr, G, ldg, k, j0, jv_end, out, ldo,
                                    accumulate);
                break;
            default:
                SF_NAME(sf_gt_cols)(1, X, d, idx, r0, nr, G, ldg, k, j0, jv_end, out, ldo,
                                    accumulate);
            }
        }
        const ptrdiff_t js = jv_end > j0 ? jv_end : j0;
        if (js < j1)
            SF_NAME(sf_gt_scalar)(X, d, idx, r0, nr, G, ldg, k, k + nk, js, j1, out, ldo,
                                  accumulate);
    }
}

#undef SF_T
#undef SF_XT
#undef SF_VT
#undef SF_NL
#undef SF_LDX
#undef SF_LDT
#undef SF_STT
#undef SF_HSUM
#undef SF_NAME
