/* Portable SIMD building blocks for the Cython kernels of softmax-fast.
 *
 * Design
 * ------
 * Everything here is written with GCC/Clang generic vector extensions (no intrinsics): the
 * compiler maps `sf_vf` / `sf_vd` onto the widest registers that `-march` allows (AVX-512,
 * AVX2 or SSE2), so one source serves every x86-64 (and aarch64) build.
 *
 * - sf_exp_vf / sf_exp_vd: branch-free exp (Cody-Waite reduction x = n ln2 + r, a Taylor
 *   polynomial in r, 2^n built from exponent bits in two halves). Results that would be
 *   tiny (x < -64 in float, x < -680 in double) are exactly 0, so no subnormal is ever
 *   made (each costs a microcode assist; see sf_exp_vf); exp(-inf) = 0 and NaN propagates.
 *   Errors: <= 2 ulp (float), <= 1 ulp (double) on the range kept (x <= 0).
 * - sf_log_vd: log for positive normal doubles (NaN/inf give NaN), used on the row sums
 *   s = sum exp(z - max) >= 1, so a vector of rows is handled at once.
 * - array helpers (max, exp in place, sums in float64 with a fixed association) whose
 *   results do not depend on anything but the input, so kernels built on them are bitwise
 *   reproducible for any thread count.
 * - the GEMM-like tiles of the linear model live in _sf_linear_impl.h, instantiated below
 *   for (float, uint8), (float, float), (double, uint8) and (double, double).
 * - sf_barrier_wait: the barrier between the phases of a persistent parallel region.
 */
#ifndef SF_SIMD_H
#define SF_SIMD_H

#include <math.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(__GNUC__)
#error "softmax-fast's Cython kernels need GCC-style vector extensions (gcc or clang)"
#endif

#ifndef SF_VBYTES
#if defined(__AVX512F__)
#define SF_VBYTES 64
#elif defined(__AVX__)
#define SF_VBYTES 32
#else
#define SF_VBYTES 16
#endif
#endif

#define SF_NF (SF_VBYTES / 4) /* float lanes */
#define SF_ND (SF_VBYTES / 8) /* double lanes */
#define SF_INLINE static inline __attribute__((always_inline))

typedef float sf_vf __attribute__((vector_size(SF_VBYTES)));
typedef double sf_vd __attribute__((vector_size(SF_VBYTES)));
typedef int32_t sf_vi __attribute__((vector_size(SF_VBYTES)));
typedef int64_t sf_vl __attribute__((vector_size(SF_VBYTES)));
typedef float sf_vfh __attribute__((vector_size(SF_VBYTES / 2)));  /* half an sf_vf */
typedef uint8_t sf_vbf __attribute__((vector_size(SF_NF)));  /* SF_NF bytes -> sf_vf */
typedef uint8_t sf_vbd __attribute__((vector_size(SF_ND)));  /* SF_ND bytes -> sf_vd */

/* A sense-reversing barrier for the phases of a persistent parallel region. Cython's prange
 * inside `with parallel()` is `omp for nowait`, so phases need an explicit barrier; this one
 * spins briefly (phases last microseconds) and then yields the CPU, where libgomp's barrier
 * spins for milliseconds: on a machine shared with other processes a descheduled partner
 * thread then cost a scheduler tick per barrier (seconds per epoch at batch 32). */
typedef struct {
    int count;
    int sense;
    char pad[64 - 2 * sizeof(int)];
} sf_barrier_t;

#define SF_BARRIER_SPINS 4000

static inline void sf_barrier_wait(sf_barrier_t *b, int nthreads, int *local_sense) {
    if (nthreads <= 1) return;
    const int s = !*local_sense;
    *local_sense = s;
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == nthreads) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->sense, s, __ATOMIC_RELEASE);
        return;
    }
    for (int spins = 0; __atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) != s; spins++) {
        if (spins < SF_BARRIER_SPINS) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            sched_yield();
        }
    }
}

/* ---------------------------------------------------------------- busy machines
 * Threads must never lose to one thread when another program keeps a core busy: a partner
 * thread that the OS deschedules for a time slice (milliseconds) makes every barrier of a
 * persistent region wait for it. Results never depend on the thread count, so the kernels
 * may change it freely:
 * - a team *watches* its barriers (sf_watch_t): when the master thread spends more than
 *   SF_WAIT_SHARE of a SF_WINDOW-long window waiting, or one wait exceeds SF_LONG_WAIT, the
 *   team falls back to one thread for the rest of the call, and
 * - it reports the contention to the *governor*: for the next SF_BACKOFF_MIN seconds (doubled
 *   on every report in a row, up to SF_BACKOFF_MAX) kernels start on one thread; then they try
 *   their threads again. An idle machine never triggers it (waits of microseconds). */
#include <time.h>

#define SF_WINDOW 0.002        /* seconds of barrier history judged at once */
#define SF_WAIT_SHARE 0.35     /* share of a window the master may spend waiting */
#define SF_LONG_WAIT 0.002     /* one wait this long is a descheduled partner */
#define SF_BACKOFF_MIN 0.05
#define SF_BACKOFF_MAX 8.0

static inline double sf_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Process-wide hint (racy by design: a hint, read and written with relaxed atomics), in
 * nanoseconds of CLOCK_MONOTONIC. */
static int64_t sf_serial_until_ns = 0;
static int64_t sf_backoff_ns = (int64_t)(SF_BACKOFF_MIN * 1e9);

static inline int64_t sf_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + (int64_t)ts.tv_nsec;
}

static inline int sf_governed_threads(int nthreads) {
    if (nthreads <= 1) return nthreads;
    return sf_now_ns() < __atomic_load_n(&sf_serial_until_ns, __ATOMIC_RELAXED) ? 1 : nthreads;
}

static inline void sf_report_contention(void) {
    int64_t backoff = __atomic_load_n(&sf_backoff_ns, __ATOMIC_RELAXED);
    const int64_t most = (int64_t)(SF_BACKOFF_MAX * 1e9);
    __atomic_store_n(&sf_serial_until_ns, sf_now_ns() + backoff, __ATOMIC_RELAXED);
    __atomic_store_n(&sf_backoff_ns, 2 * backoff < most ? 2 * backoff : most, __ATOMIC_RELAXED);
}

/* A team that waited for a partner once is a hint, not proof: creating the OpenMP team on a
 * process's first parallel call, or a hypervisor pausing a vCPU for a millisecond, looks the
 * same for one loop. Backing off on that ran idle machines at half speed for a while (seen as
 * 2x slower BLAS-path calls in benchmarks), so an unbalanced loop only counts as contention
 * when SF_STRIKES loops in a row were unbalanced. A busy core unbalances most loops, so it is
 * still caught within a few (tests/test_cython_backend.py: oversubscribed runs). */
#define SF_STRIKES 2
static int sf_strikes = 0;

static inline void sf_report_parallel_ok(void) {
    __atomic_store_n(&sf_strikes, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&sf_backoff_ns, (int64_t)(SF_BACKOFF_MIN * 1e9), __ATOMIC_RELAXED);
}

static inline void sf_report_unbalanced(void) {
    if (__atomic_add_fetch(&sf_strikes, 1, __ATOMIC_RELAXED) >= SF_STRIKES) {
        __atomic_store_n(&sf_strikes, 0, __ATOMIC_RELAXED);
        sf_report_contention();
    }
}

/* The master thread's view of its barrier waits in one call. */
typedef struct {
    double window_start, waited, t0;
    int contended;
} sf_watch_t;

static inline void sf_watch_init(sf_watch_t *w) {
    w->window_start = sf_now();
    w->waited = 0.0;
    w->t0 = 0.0;
    w->contended = 0;
}

static inline void sf_watch_before(sf_watch_t *w) { w->t0 = sf_now(); }

/* After a barrier: 1 if the team should fall back to one thread (reported once). */
static inline int sf_watch_after(sf_watch_t *w) {
    double now = sf_now(), waited = now - w->t0, elapsed = now - w->window_start;
    w->waited += waited;
    if (!w->contended && (waited > SF_LONG_WAIT
                          || (elapsed > SF_WINDOW && w->waited > SF_WAIT_SHARE * elapsed))) {
        w->contended = 1;
        sf_report_contention();
    } else if (elapsed > SF_WINDOW) {
        w->window_start = now;
        w->waited = 0.0;
    }
    return w->contended;
}

#ifdef _OPENMP
#include <omp.h>
static inline int sf_omp_num_threads(void) { return omp_get_num_threads(); }
static inline int sf_omp_thread_num(void) { return omp_get_thread_num(); }
#else
static inline int sf_omp_num_threads(void) { return 1; }
static inline int sf_omp_thread_num(void) { return 0; }
#endif

/* 1 if the extension was compiled with OpenMP (n_threads is honoured), else 0. */
static inline int sf_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* ---------------------------------------------------------------- loads and stores */
SF_INLINE sf_vf sf_ld_f(const float *p) { sf_vf v; memcpy(&v, p, sizeof v); return v; }
SF_INLINE sf_vd sf_ld_d(const double *p) { sf_vd v; memcpy(&v, p, sizeof v); return v; }
SF_INLINE void sf_st_f(float *p, sf_vf v) { memcpy(p, &v, sizeof v); }
SF_INLINE void sf_st_d(double *p, sf_vd v) { memcpy(p, &v, sizeof v); }
/* uint8 -> float lanes. The one place with intrinsics: gcc 12 scalarises the generic
 * __builtin_convertvector from 8-bit lanes, which made uint8 data 3x slower than float32. */
#if SF_VBYTES == 64 && defined(__AVX512F__)
#include <immintrin.h>
SF_INLINE sf_vf sf_ld_bf(const uint8_t *p) {
    return (sf_vf)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
SF_INLINE sf_vd sf_ld_bd(const uint8_t *p) {
    return (sf_vd)_mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
#elif SF_VBYTES == 32 && defined(__AVX2__)
#include <immintrin.h>
SF_INLINE sf_vf sf_ld_bf(const uint8_t *p) {
    return (sf_vf)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
SF_INLINE sf_vd sf_ld_bd(const uint8_t *p) {
    int32_t b; memcpy(&b, p, sizeof b);
    return (sf_vd)_mm256_cvtepi32_pd(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(b)));
}
#else
SF_INLINE sf_vf sf_ld_bf(const uint8_t *p) {
    sf_vbf b; memcpy(&b, p, sizeof b); return __builtin_convertvector(b, sf_vf);
}
SF_INLINE sf_vd sf_ld_bd(const uint8_t *p) {
    sf_vbd b; memcpy(&b, p, sizeof b); return __builtin_convertvector(b, sf_vd);
}
#endif
/* lane-wise a if mask else b (mask lanes are all ones or all zeros) */
SF_INLINE sf_vf sf_sel_f(sf_vi m, sf_vf a, sf_vf b) {
    return (sf_vf)(((sf_vi)a & m) | ((sf_vi)b & ~m));
}
SF_INLINE sf_vd sf_sel_d(sf_vl m, sf_vd a, sf_vd b) {
    return (sf_vd)(((sf_vl)a & m) | ((sf_vl)b & ~m));
}
SF_INLINE float sf_hsum_f(sf_vf v) {
    float s = v[0];
    for (int l = 1; l < SF_NF; l++) s += v[l];
    return s;
}
SF_INLINE double sf_hsum_d(sf_vd v) {
    double s = v[0];
    for (int l = 1; l < SF_ND; l++) s += v[l];
    return s;
}

/* ---------------------------------------------------------------- exp and log */
/* exp(x), float lanes, with results below SF_EXP_FLUSH_F32 flushed to exactly 0.
 *
 * Why flush: exp(x) for x < -87.3 is subnormal in float32, and arithmetic that produces or
 * reads a subnormal takes a microcode assist (~100+ cycles) on x86. At weak regularization
 * logit spreads pass 87 on many entries; softmax-CE on 65536 x 10 with 11 % of entries that
 * far down ran 5x slower (2.1 -> 10.7 ms), and the gradients built from those probabilities
 * were subnormal too, slowing the BLAS products after. Dropping exp(x < -64) changes a
 * row's sum by at most c e^-64 = c 1.6e-28 relative, far below float32's 6e-8, and keeps
 * p = e / s (s <= c) and w p / sum(w) normal for any realistic c and n (Intel's and
 * XLA's flush-to-zero, made explicit and per value so it does not depend on MXCSR).
 * x is clamped first so no lane ever computes a subnormal; -inf gives 0, NaN passes the
 * comparisons untouched and poisons the polynomial. */
#define SF_EXP_FLUSH_F32 (-64.0f)
#define SF_EXP_FLUSH_F64 (-680.0)
SF_INLINE sf_vf sf_exp_vf(sf_vf x) {
    const sf_vf lo = (sf_vf){0} + SF_EXP_FLUSH_F32, hi = (sf_vf){0} + 88.0f;
    const sf_vi flush = x < lo;
    x = sf_sel_f(flush, lo, x);
    x = sf_sel_f(x > hi, hi, x);
    sf_vf n = x * 1.44269504088896341f + 12582912.0f;  /* 1.5 * 2^23: round to nearest */
    n = n - 12582912.0f;
    sf_vf r = x - n * 0.693145751953125f;                 /* ln 2, high bits (exact n * hi) */
    r = r - n * 1.428606765330187045e-06f;                /* ln 2, low bits */
    sf_vf p = 1.0f / 5040.0f + r * (1.0f / 40320.0f);
    p = 1.0f / 720.0f + r * p;
    p = 1.0f / 120.0f + r * p;
    p = 1.0f / 24.0f + r * p;
    p = 1.0f / 6.0f + r * p;
    p = 0.5f + r * p;
    p = 1.0f + r * p;
    p = 1.0f + r * p;
    sf_vi ni = __builtin_convertvector(n, sf_vi);
    sf_vi n1 = ni >> 1, n2 = ni - n1;                     /* 2^n = 2^n1 2^n2, both normal */
    sf_vf s1 = (sf_vf)((n1 + 127) << 23), s2 = (sf_vf)((n2 + 127) << 23);
    return sf_sel_f(flush, (sf_vf){0}, p * s1 * s2);
}

/* exp(x), double lanes; same scheme, degree-13 Taylor polynomial on |r| <= ln2/2, results
 * below SF_EXP_FLUSH_F64 flushed to 0 (float64 turns subnormal below -708; same reasons). */
SF_INLINE sf_vd sf_exp_vd(sf_vd x) {
    const sf_vd lo = (sf_vd){0} + SF_EXP_FLUSH_F64, hi = (sf_vd){0} + 709.0;
    const double magic = 6755399441055744.0;            /* 1.5 * 2^52 */
    const sf_vl flush = x < lo;
    x = sf_sel_d(flush, lo, x);
    x = sf_sel_d(x > hi, hi, x);
    sf_vd t = x * 1.4426950408889634074 + magic;
    sf_vd n = t - magic;
    sf_vl ni = (sf_vl)t - (sf_vl)((sf_vd){0} + magic);   /* n as an integer, exactly */
    sf_vd r = x - n * 6.93147180369123816490e-01;
    r = r - n * 1.90821492927058770002e-10;
    sf_vd p = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0);  /* 1/12! + r/13! */
    p = 1.0 / 39916800.0 + r * p;
    p = 1.0 / 3628800.0 + r * p;
    p = 1.0 / 362880.0 + r * p;
    p = 1.0 / 40320.0 + r * p;
    p = 1.0 / 5040.0 + r * p;
    p = 1.0 / 720.0 + r * p;
    p = 1.0 / 120.0 + r * p;
    p = 1.0 / 24.0 + r * p;
    p = 1.0 / 6.0 + r * p;
    p = 0.5 + r * p;
    p = 1.0 + r * p;
    p = 1.0 + r * p;
    sf_vl n1 = ni >> 1, n2 = ni - n1;
    sf_vd s1 = (sf_vd)((n1 + 1023) << 52), s2 = (sf_vd)((n2 + 1023) << 52);
    return sf_sel_d(flush, (sf_vd){0}, p * s1 * s2);
}

/* log(s) for positive normal s: s = 2^e m with m in [sqrt(1/2), sqrt(2)),
 * log m = 2 atanh(f) = 2 (f + f^3/3 + ...), f = (m - 1)/(m + 1), |f| <= 0.172.
 * NaN and inf give NaN (the `+ (s - s)` term), which is all the kernels need. */
SF_INLINE sf_vd sf_log_vd(sf_vd s) {
    sf_vl bits = (sf_vl)s;
    sf_vl e = ((bits >> 52) & 0x7ff) - 1023;
    sf_vd m = (sf_vd)((bits & 0x000fffffffffffffLL) | 0x3ff0000000000000LL);
    sf_vl big = m > 1.4142135623730951;
    m = sf_sel_d(big, m * 0.5, m);
    e = e - big;                                          /* big lanes are -1 */
    sf_vd f = (m - 1.0) / (m + 1.0);
    sf_vd f2 = f * f;
    sf_vd q = 1.0 / 19.0 + f2 * (1.0 / 21.0);
    q = 1.0 / 17.0 + f2 * q;
    q = 1.0 / 15.0 + f2 * q;
    q = 1.0 / 13.0 + f2 * q;
    q = 1.0 / 11.0 + f2 * q;
    q = 1.0 / 9.0 + f2 * q;
    q = 1.0 / 7.0 + f2 * q;
    q = 1.0 / 5.0 + f2 * q;
    q = 1.0 / 3.0 + f2 * q;
    sf_vd logm = 2.0 * f + (2.0 * f) * (f2 * q);
    sf_vd ed = __builtin_convertvector(e, sf_vd);
    sf_vd res = ed * 6.93147180369123816490e-01 + (logm + ed * 1.90821492927058770002e-10);
    return res + (s - s);
}

/* ---------------------------------------------------------------- array helpers */
/* max of a[0:n] (-inf for n == 0); NaN entries are skipped (they poison exp later). */
static inline float sf_max_f32(const float *a, ptrdiff_t n) {
    ptrdiff_t i = 0;
    float m = -INFINITY;
    if (n >= 2 * SF_NF) {
        sf_vf m0 = sf_ld_f(a), m1 = sf_ld_f(a + SF_NF);
        for (i = 2 * SF_NF; i + 2 * SF_NF <= n; i += 2 * SF_NF) {
            sf_vf v0 = sf_ld_f(a + i), v1 = sf_ld_f(a + i + SF_NF);
            m0 = sf_sel_f(v0 > m0, v0, m0);
            m1 = sf_sel_f(v1 > m1, v1, m1);
        }
        m0 = sf_sel_f(m1 > m0, m1, m0);
        for (int l = 0; l < SF_NF; l++) m = m0[l] > m ? m0[l] : m;
    }
    for (; i < n; i++) m = a[i] > m ? a[i] : m;
    return m;
}

static inline double sf_max_f64(const double *a, ptrdiff_t n) {
    ptrdiff_t i = 0;
    double m = -INFINITY;
    if (n >= 2 * SF_ND) {
        sf_vd m0 = sf_ld_d(a), m1 = sf_ld_d(a + SF_ND);
        for (i = 2 * SF_ND; i + 2 * SF_ND <= n; i += 2 * SF_ND) {
            sf_vd v0 = sf_ld_d(a + i), v1 = sf_ld_d(a + i + SF_ND);
            m0 = sf_sel_d(v0 > m0, v0, m0);
            m1 = sf_sel_d(v1 > m1, v1, m1);
        }
        m0 = sf_sel_d(m1 > m0, m1, m0);
        for (int l = 0; l < SF_ND; l++) m = m0[l] > m ? m0[l] : m;
    }
    for (; i < n; i++) m = a[i] > m ? a[i] : m;
    return m;
}

/* a[i] = exp(a[i]) in place; the ragged end goes through one zero-padded vector. */
static inline void sf_exp_f32(float *a, ptrdiff_t n) {
    ptrdiff_t i = 0;
    for (; i + SF_NF <= n; i += SF_NF) sf_st_f(a + i, sf_exp_vf(sf_ld_f(a + i)));
    if (i < n) {
        sf_vf v = {0};
        memcpy(&v, a + i, (size_t)(n - i) * sizeof(float));
        v = sf_exp_vf(v);
        memcpy(a + i, &v, (size_t)(n - i) * sizeof(float));
    }
}

static inline void sf_exp_f64(double *a, ptrdiff_t n) {
    ptrdiff_t i = 0;
    for (; i + SF_ND <= n; i += SF_ND) sf_st_d(a + i, sf_exp_vd(sf_ld_d(a + i)));
    if (i < n) {
        sf_vd v = {0};
        memcpy(&v, a + i, (size_t)(n - i) * sizeof(double));
        v = sf_exp_vd(v);
        memcpy(a + i, &v, (size_t)(n - i) * sizeof(double));
    }
}

/* a[i] = log(a[i]) in place (positive normal values; NaN stays NaN). */
static inline void sf_log_f64(double *a, ptrdiff_t n) {
    ptrdiff_t i = 0;
    for (; i + SF_ND <= n; i += SF_ND) sf_st_d(a + i, sf_log_vd(sf_ld_d(a + i)));
    if (i < n) {
        sf_vd v = {0};
        for (ptrdiff_t l = 0; l < SF_ND; l++) v[l] = 1.0;
        memcpy(&v, a + i, (size_t)(n - i) * sizeof(double));
        v = sf_log_vd(v);
        memcpy(a + i, &v, (size_t)(n - i) * sizeof(double));
    }
}

/* out[i] = a[i] - m (a and out may be the same array). */
static inline void sf_shift_f32(const float *a, float m, float *out, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) out[i] = a[i] - m;
}
static inline void sf_shift_f64(const double *a, double m, double *out, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) out[i] = a[i] - m;
}

/* out[i] = a[i] * s */
static inline void sf_scale_f32(const float *a, double s, float *out, ptrdiff_t n) {
    const float sf = (float)s;
    for (ptrdiff_t i = 0; i < n; i++) out[i] = a[i] * sf;
}
static inline void sf_scale_f64(const double *a, double s, double *out, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) out[i] = a[i] * s;
}

/* sum of a[0:n] accumulated in float64: fixed lanes-then-tail association. */
static inline double sf_sum_f32(const float *a, ptrdiff_t n) {
    ptrdiff_t i = 0;
    double s = 0.0;
    if (n >= SF_NF) {
        sf_vd acc0 = {0}, acc1 = {0};
        for (; i + SF_NF <= n; i += SF_NF) {
            sf_vf v = sf_ld_f(a + i);
            sf_vfh h0, h1;
            memcpy(&h0, &v, sizeof h0);
            memcpy(&h1, (const char *)&v + sizeof h0, sizeof h1);
            acc0 += __builtin_convertvector(h0, sf_vd);
            acc1 += __builtin_convertvector(h1, sf_vd);
        }
        s = sf_hsum_d(acc0 + acc1);
    }
    for (; i < n; i++) s += (double)a[i];
    return s;
}

static inline double sf_sum_f64(const double *a, ptrdiff_t n) {
    ptrdiff_t i = 0;
    double s = 0.0;
    if (n >= 2 * SF_ND) {
        sf_vd acc0 = {0}, acc1 = {0};
        for (; i + 2 * SF_ND <= n; i += 2 * SF_ND) {
            acc0 += sf_ld_d(a + i);
            acc1 += sf_ld_d(a + i + SF_ND);
        }
        s = sf_hsum_d(acc0 + acc1);
    }
    for (; i < n; i++) s += a[i];
    return s;
}

/* sum of squares in float64 (the L2 penalty), fixed association. */
static inline double sf_sumsq_f32(const float *a, ptrdiff_t n) {
    ptrdiff_t i = 0;
    double s = 0.0;
    if (n >= SF_NF) {
        sf_vd acc0 = {0}, acc1 = {0};
        for (; i + SF_NF <= n; i += SF_NF) {
            sf_vf v = sf_ld_f(a + i);
            sf_vfh h0, h1;
            memcpy(&h0, &v, sizeof h0);
            memcpy(&h1, (const char *)&v + sizeof h0, sizeof h1);
            sf_vd d0 = __builtin_convertvector(h0, sf_vd), d1 = __builtin_convertvector(h1, sf_vd);
            acc0 += d0 * d0;
            acc1 += d1 * d1;
        }
        s = sf_hsum_d(acc0 + acc1);
    }
    for (; i < n; i++) s += (double)a[i] * (double)a[i];
    return s;
}

static inline double sf_sumsq_f64(const double *a, ptrdiff_t n) {
    ptrdiff_t i = 0;
    double s = 0.0;
    if (n >= 2 * SF_ND) {
        sf_vd acc0 = {0}, acc1 = {0};
        for (; i + 2 * SF_ND <= n; i += 2 * SF_ND) {
            sf_vd v0 = sf_ld_d(a + i), v1 = sf_ld_d(a + i + SF_ND);
            acc0 += v0 * v0;
            acc1 += v1 * v1;
        }
        s = sf_hsum_d(acc0 + acc1);
    }
    for (; i < n; i++) s += a[i] * a[i];
    return s;
}

/* ---------------------------------------------------------------- linear-model tiles */
#define SF_T float
#define SF_XT uint8_t
#define SF_VT sf_vf
#define SF_NL SF_NF
#define SF_LDX sf_ld_bf
#define SF_LDT sf_ld_f
#define SF_STT sf_st_f
#define SF_HSUM sf_hsum_f
#define SF_NAME(f) f##_f32_u8
#include "_sf_linear_impl.h"

#define SF_T float
#define SF_XT float
#define SF_VT sf_vf
#define SF_NL SF_NF
#define SF_LDX sf_ld_f
#define SF_LDT sf_ld_f
#define SF_STT sf_st_f
#define SF_HSUM sf_hsum_f
#define SF_NAME(f) f##_f32_f32
#include "_sf_linear_impl.h"

#define SF_T double
#define SF_XT uint8_t
#define SF_VT sf_vd
#define SF_NL SF_ND
#define SF_LDX sf_ld_bd
#define SF_LDT sf_ld_d
#define SF_STT sf_st_d
#define SF_HSUM sf_hsum_d
#define SF_NAME(f) f##_f64_u8
#include "_sf_linear_impl.h"

#define SF_T double
#define SF_XT double
#define SF_VT sf_vd
#define SF_NL SF_ND
#define SF_LDX sf_ld_d
#define SF_LDT sf_ld_d
#define SF_STT sf_st_d
#define SF_HSUM sf_hsum_d
#define SF_NAME(f) f##_f64_f64
#include "_sf_linear_impl.h"

#endif /* SF_SIMD_H */
