"""Numba-specific checks: JIT latency of a fresh process, the on-disk cache (and the same bits
from a compiled and a cached kernel), NUMBA_DISABLE_JIT.

The contract itself (numerics, threads, edge cases) is tested for every backend in
tests/test_kernels.py. Here each check runs in a fresh interpreter (``subprocess``) because
the JIT and its cache are per process; NUMBA_CACHE_DIR points at a temporary directory so
"cold" really means nothing cached.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import DENSE, SUBPROCESS_CWD, load_kernels

from softmax_fast.kernels.contract import EXP_FLUSH

NUMBA = next(info for info in DENSE if info.module == "softmax_fast.kernels.numba_backend")
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(autouse=True)
def numba_kernels():
    """The Numba dense kernels; a backend that does not import fails these tests (conftest)."""
    return load_kernels(NUMBA)


# Calls every contract function once in float32 (uint8 X for the linear/SGD kernels, the
# Fashion-MNIST shape of the benchmarks) and reports the time to import and to first result,
# plus the dispatchers' cache statistics.
_FIRST_CALL = textwrap.dedent(
    """
    import json, os, sys, time
    t0 = time.perf_counter()
    import numpy as np
    from softmax_fast.kernels import numba_backend as nb
    t_import = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    z = rng.standard_normal((64, 10)).astype(np.float32)
    y = rng.integers(0, 10, 64).astype(np.intp)
    out = np.empty_like(z)
    X = rng.integers(0, 256, (64, 784), dtype=np.uint8)
    coef = np.zeros((10, 784), np.float32)
    b = np.zeros(10, np.float32)
    gc, gb = np.empty_like(coef), np.empty_like(b)
    times = {}
    t = time.perf_counter(); nb.softmax(z, out, 2); times["softmax"] = time.perf_counter() - t
    t = time.perf_counter(); nb.log_softmax(z, out, 2)
    times["log_softmax"] = time.perf_counter() - t
    t = time.perf_counter(); loss = nb.softmax_ce(z, y, None, out, 2)
    times["softmax_ce"] = time.perf_counter() - t
    t = time.perf_counter()
    nb.linear_softmax_ce(X, 1 / 255, coef, b, y, None, 1e-4, gc, gb, 2)
    times["linear_softmax_ce"] = time.perf_counter() - t
    t = time.perf_counter()
    nb.sgd_epoch(X, 1 / 255, y, None, np.arange(64), coef, b, np.zeros_like(coef),
                 np.zeros_like(b), 0.01, 1e-4, 0.0, False, 32, 2)
    times["sgd_epoch"] = time.perf_counter() - t
    kernels = [nb._softmax_kernel, nb._softmax_ce_kernel, nb._linear_kernel, nb._sgd_kernel]
    # small calls run a kernel's serial twin: count the dispatcher and its twin together
    groups = {k.__name__: [k] + ([nb.SERIAL_TWINS[k]] if k in nb.SERIAL_TWINS else [])
              for k in kernels}
    stats = {name: [sum(sum(j.stats.cache_hits.values()) for j in group),
                    sum(sum(j.stats.cache_misses.values()) for j in group)]
             for name, group in groups.items()}
    probe_out = os.environ.get("SOFTMAX_FAST_PROBE_OUT")
    if probe_out:  # every output of the kernels on numba_cache_probe's inputs, for bits
        sys.path.insert(0, os.environ["SOFTMAX_FAST_TESTS_DIR"])
        import numba_cache_probe
        np.savez(probe_out, **numba_cache_probe.outputs())
    print(json.dumps({"import": t_import, "first_calls": times, "stats": stats,
                      "finite": bool(np.isfinite(loss))}))
    """
)


def _run(code, env_extra, timeout=600):
    env = dict(os.environ, **env_extra)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=SUBPROCESS_CWD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _report(capsys, label, res):
    with capsys.disabled():
        calls = ", ".join(f"{k} {v:.2f}s" for k, v in res["first_calls"].items())
        total = res["import"] + sum(res["first_calls"].values())
        print(f"\n[numba first call, {label}] import {res['import']:.2f}s, {calls}; "
              f"total {total:.2f}s")


@pytest.mark.slow
def test_first_call_cold_then_warm_cache(tmp_path, capsys):
    """A cold cache compiles (seconds); a second fresh process loads everything from disk,
    and its kernels give the same bits as the ones the first process compiled.

    They run different machine code: a freshly compiled kernel calls its helpers' own
    compiled copies, a kernel loaded from the cache the copies inside its cached object,
    which LLVM optimised again in the kernel's module. A sum LLVM may reassociate came out
    vectorised in one and not in the other, and the loss an ulp apart (see
    ``_numba_math._ce_sum``); README's "bitwise identical for any rerun" needs both kinds of
    process to agree. Both processes also run ``numba_cache_probe.outputs()`` (inputs on
    which the old sum differed) and every output is compared bit for bit.
    """
    cache_dir = tmp_path / "numba-cache"
    env = {"NUMBA_CACHE_DIR": str(cache_dir), "SOFTMAX_FAST_TESTS_DIR": str(TESTS_DIR),
           "SOFTMAX_FAST_PROBE_OUT": str(tmp_path / "compiled.npz")}
    cold = _run(_FIRST_CALL, env)
    _report(capsys, "cold cache", cold)
    assert cold["finite"]
    index_files = sorted(f for _, _, files in os.walk(cache_dir) for f in files
                         if f.endswith((".nbi", ".nbc")))
    assert index_files, "numba wrote no cache index"
    for name, (_hits, misses) in cold["stats"].items():
        assert misses >= 1, name  # compiled, not loaded
    warm = _run(_FIRST_CALL, dict(env, SOFTMAX_FAST_PROBE_OUT=str(tmp_path / "cached.npz")))
    _report(capsys, "warm cache", warm)
    for name, (hits, misses) in warm["stats"].items():
        assert hits >= 1 and misses == 0, (name, hits, misses)
    # the probe's kernels too were loaded, not compiled again
    assert sorted(f for _, _, files in os.walk(cache_dir) for f in files
                  if f.endswith((".nbi", ".nbc"))) == index_files
    compiled = np.load(tmp_path / "compiled.npz")
    cached = np.load(tmp_path / "cached.npz")
    assert compiled.files and sorted(compiled.files) == sorted(cached.files)
    differ = [k for k in compiled.files if not np.array_equal(compiled[k], cached[k])]
    assert not differ, f"compiled and cached kernels differ in {differ}"
    cold_total = sum(cold["first_calls"].values())
    warm_total = sum(warm["first_calls"].values())
    assert warm_total < cold_total / 3


def test_first_call_warm_cache(capsys):
    """First call in a fresh process with the package's own cache (warmed by a first run)."""
    _run(_FIRST_CALL, {})  # make sure this configuration is cached
    res = _run(_FIRST_CALL, {})
    _report(capsys, "warm cache (package __pycache__)", res)
    for name, (hits, misses) in res["stats"].items():
        assert hits >= 1 and misses == 0, (name, hits, misses)


_NO_JIT = textwrap.dedent(
    """
    import json
    import numba
    import numpy as np
    from softmax_fast.kernels import numba_backend as nb, reference as ref
    assert numba.config.DISABLE_JIT
    rng = np.random.default_rng(1)
    z = rng.standard_normal((7, 4)) * 3
    z[2, 1] = -np.inf
    y = np.array([0, 1, 2, 3, 0, 1, 2], dtype=np.intp)
    w = rng.random(7)
    res = {}
    o1, o2 = np.empty_like(z), np.empty_like(z)
    nb.softmax(z, o1, 2); ref.softmax(z, o2)
    res["softmax"] = float(np.max(np.abs(o1 - o2)))
    nb.log_softmax(z, o1, 2); ref.log_softmax(z, o2)
    fin = np.isfinite(o2)
    res["log_softmax"] = float(np.max(np.abs(o1[fin] - o2[fin])))
    l1 = nb.softmax_ce(z, y, w, o1, 2); l2 = ref.softmax_ce(z, y, w, o2)
    res["softmax_ce"] = max(abs(l1 - l2), float(np.max(np.abs(o1 - o2))))
    X = rng.integers(0, 256, (7, 5), dtype=np.uint8)
    coef = rng.standard_normal((4, 5)) * 0.1
    b = rng.standard_normal(4) * 0.1
    g1, gb1, g2, gb2 = np.empty_like(coef), np.empty_like(b), np.empty_like(coef), np.empty_like(b)
    l1 = nb.linear_softmax_ce(X, 0.01, coef, b, y, w, 0.1, g1, gb1, 2)
    l2 = ref.linear_softmax_ce(X, 0.01, coef, b, y, w, 0.1, g2, gb2)
    res["linear_softmax_ce"] = max(abs(l1 - l2), float(np.max(np.abs(g1 - g2))),
                                   float(np.max(np.abs(gb1 - gb2))))
    order = np.array([3, 1, 4, 0, 6, 5, 2], dtype=np.intp)
    runs = []
    for mod in (nb, ref):
        c, bb = coef.copy(), b.copy()
        vc, vb = np.zeros_like(c), np.zeros_like(bb)
        loss = mod.sgd_epoch(X, 0.01, y, w, order, c, bb, vc, vb, 0.5, 0.01, 0.9, True, 3, 2)
        runs.append((loss, c, bb))
    res["sgd_epoch"] = max(abs(runs[0][0] - runs[1][0]),
                           float(np.max(np.abs(runs[0][1] - runs[1][1]))),
                           float(np.max(np.abs(runs[0][2] - runs[1][2]))))
    print(json.dumps(res))
    """
)


def test_disable_jit_path_matches_reference():
    """With NUMBA_DISABLE_JIT=1 the same source runs as Python (intrinsics have fallbacks)."""
    res = _run(_NO_JIT, {"NUMBA_DISABLE_JIT": "1"})
    assert set(res) == {"softmax", "log_softmax", "softmax_ce", "linear_softmax_ce",
                        "sgd_epoch"}
    for name, err in res.items():
        assert err <= 1e-12, (name, err)


def test_exp_log_accuracy(numba_kernels):
    """The vectorisable exp/log used by the kernels: <= 1 ulp against NumPy's libm, exp
    exactly 0 below the contract's flush point (never subnormal)."""
    from numba import njit

    from softmax_fast.kernels import _numba_math as nm

    @njit
    def apply(a, out_exp, out_log):
        for i in range(a.shape[0]):
            out_exp[i] = nm._exp(a[i])
            out_log[i] = nm._log(1.0 - a[i])

    rng = np.random.default_rng(2)
    a = np.concatenate([-rng.random(200_000) * 760, -rng.random(1000) * 1e-8,
                        [0.0, -0.0, -745.1, -745.2, -708.5, -1e4, -np.inf, np.nan]])
    e, lg = np.empty_like(a), np.empty_like(a)
    apply(a, e, lg)
    # the kernels' vectorised loop of logs (_log_each) gives the same bits as the scalar one
    lg_each = np.empty_like(a)
    njit(lambda s, out: nm._log_each(s, out))(1.0 - a, lg_each)
    np.testing.assert_array_equal(lg_each, lg)
    ref_e = np.exp(a)
    kept = a >= EXP_FLUSH["float64"]
    assert np.all(np.abs(e[kept] - ref_e[kept]) <= np.spacing(ref_e[kept]))
    assert np.all(e[~kept & ~np.isnan(a)] == 0.0)
    assert np.isnan(e[-1])
    ref_l = np.log(1.0 - a)
    ok = np.isfinite(ref_l) & (ref_l > 0)
    assert np.all(np.abs(lg[ok] - ref_l[ok]) <= np.spacing(ref_l[ok]))
    assert np.isinf(lg[-2]) and np.isnan(lg[-1])


def test_a_descheduled_partner_thread_changes_nothing():
    """Numba's threads squeezed onto one core: the epoch's watch stops the team, the wrapper
    resumes on one thread (the governor keeps later calls there), results stay bitwise."""
    script = textwrap.dedent("""
        import os
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        import numpy as np
        from softmax_fast.kernels import numba_backend as nb
        from softmax_fast.kernels._governor import GOVERNOR
        rng = np.random.default_rng(0)
        n, d = 6000, 300
        X = rng.integers(0, 256, (n, d), dtype=np.uint8)
        order = rng.permutation(n).astype(np.intp)
        for c, bs in ((10, 16), (300, 256)):
            y = rng.integers(0, c, n).astype(np.intp)
            results = []
            for threads in (1,) + (2,) * 8:
                W = np.zeros((c, d), np.float32); b = np.zeros(c, np.float32)
                V, Vb = np.zeros_like(W), np.zeros_like(b)
                loss = nb.sgd_epoch(X, 1 / 255, y, None, order, W, b, V, Vb, 0.1, 1e-4, 0.5,
                                    True, bs, threads)
                gW, gb = np.empty_like(W), np.empty_like(b)
                lin = nb.linear_softmax_ce(X, 1 / 255, W, b, y, None, 1e-4, gW, gb, threads)
                results.append((loss, lin, W.tobytes(), b.tobytes(), gW.tobytes(), gb.tobytes()))
            assert all(r == results[0] for r in results), c
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, cwd=SUBPROCESS_CWD)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.parametrize("d", [1, 15, 16, 17, 64, 127, 200, 784, 1000, 4096])
@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_feature_blocks_tile_the_features_on_cache_lines(d, threads):
    """Both feature splits cover [0, d) in order, each edge but d a multiple of 16 elements
    (whole 64-byte lines of float32: neighbouring blocks' threads never write one line), and
    the gradient's blocks are GRAD_BLOCKS_PER_THREAD a thread (at most GRAD_FEATURE_BLOCKS)
    and at least GRAD_MIN_FEATURE_WIDTH wide where d allows."""
    from softmax_fast.kernels._numba_config import (
        GRAD_BLOCKS_PER_THREAD,
        GRAD_FEATURE_BLOCKS,
        GRAD_MIN_FEATURE_WIDTH,
    )
    from softmax_fast.kernels._numba_math import _feature_blocks, _gradient_blocks

    most = min(GRAD_BLOCKS_PER_THREAD * threads, GRAD_FEATURE_BLOCKS)
    for edges, limit in ((_feature_blocks(d), None), (_gradient_blocks(d, threads), most)):
        assert edges[0] == 0 and edges[-1] == d
        assert np.all(np.diff(edges) > 0)
        assert np.all(edges[:-1] % 16 == 0)
        if limit is not None:
            assert len(edges) - 1 <= limit
            if d >= limit * GRAD_MIN_FEATURE_WIDTH + 16:
                assert len(edges) - 1 == limit
            if d >= 2 * GRAD_MIN_FEATURE_WIDTH:
                assert np.diff(edges).min() >= GRAD_MIN_FEATURE_WIDTH - 16


@pytest.mark.parametrize("x_dtype,w_dtype", [(np.uint8, np.float32), (np.float64, np.float64)])
@pytest.mark.parametrize("n,c", [(300, 13), (1100, 9)])
def test_gradient_blocks_and_class_groups_change_no_bits(x_dtype, w_dtype, n, c):
    """linear_softmax_ce splits its work by the planned thread count: classes among the
    threads (``_class_groups``) or dW into feature blocks (1-8 here, d = 530 not a multiple
    of 16). Loss and both gradients are the same bits for every split, on one chunk of rows
    and on several (1,100 rows: two chunks in uint8, five in float64)."""
    from softmax_fast.kernels import numba_backend as nb
    from softmax_fast.kernels._numba_config import read_only

    rng = np.random.default_rng(3)
    X = rng.integers(0, 256, (n, 530)).astype(x_dtype)
    coef = (rng.standard_normal((c, 530)) * 0.01).astype(w_dtype)
    b = rng.standard_normal(c).astype(w_dtype)
    y = rng.integers(0, c, n).astype(np.intp)
    w = rng.random(n)
    # read-only, as linear_softmax_ce hands them to the kernel (no compilation of its own)
    X, coef, b, y, w = read_only(X, coef, b, y, w)
    results = set()
    modes = set()
    for threads in (1, 2, 3, 4):
        g, gb = np.empty_like(coef), np.empty_like(b)
        loss = nb._linear_kernel(X, 1 / 255, coef, b, y, w, True, 1e-3, g, gb, threads)
        results.add((loss, g.tobytes(), gb.tobytes()))
        modes.add(nb._class_groups(c, threads) > 0)
    assert len(results) == 1
    assert modes == {True, False}


@pytest.mark.parametrize("n", range(0, 24))
def test_five_class_tiles_leave_whole_tiles_of_four(n):
    """The forward tile's split of n classes: tiles of 5 only where the rest fills tiles of
    4 exactly, as many as that allows; none where nothing does (the old ragged tile of 4)."""
    from softmax_fast.kernels._numba_math import _five_class_tiles

    a = _five_class_tiles(n)
    exact = [k for k in range(n // 5 + 1) if (n - 5 * k) % 4 == 0]
    assert a == (max(exact) if exact else 0)
    assert {10: 2, 13: 1, 16: 0, 20: 4, 3: 0, 7: 0}.get(n, a) == a


@pytest.mark.parametrize("x_dtype,w_dtype", [(np.uint8, np.float32), (np.float32, np.float32),
                                             (np.float64, np.float64)])
def test_forward_tile_split_changes_no_bits(x_dtype, w_dtype):
    """Every logit of the forward tile is the same bits whether its class sits in a tile of
    5, a tile of 4 or a ragged tile alone (k1 = k + 1), in this CPU's tiles
    (``FORWARD_TILE_ROWS`` rows), for 1-17 classes and 11 rows (a ragged last tile) in any
    order, 66 features from an unaligned start (a vector remainder); and it is the float64
    product to rounding. The other row count (the other kind of CPU's tiles, never run here)
    gives the same products to rounding: LLVM vectorises each tile's loop by its own cost
    model, and on an AVX-512 Xeon (tuned for as rocketlake) the 2 x 4 tile sums in another
    order than the other three, so bits across row counts are not promised."""
    from softmax_fast.kernels._numba_config import FORWARD_TILE_ROWS
    from softmax_fast.kernels._numba_math import _forward_tile

    rng = np.random.default_rng(7)
    A = rng.integers(0, 256, (40, 70)).astype(x_dtype)
    rows = rng.permutation(40)[:11].astype(np.intp)
    assert FORWARD_TILE_ROWS in (2, 4)
    rtol, atol = (1e-4, 1e-3) if w_dtype == np.float32 else (1e-12, 1e-9)
    for c in range(1, 18):
        W = rng.standard_normal((c, 70)).astype(w_dtype)
        exact = A[rows, 3:69].astype(np.float64) @ W[:, 3:69].T.astype(np.float64)
        together = np.zeros((11, c))
        _forward_tile(A, rows, 3, 69, W, 0, c, together, 0, rows[:0])  # this CPU's tiles
        np.testing.assert_allclose(together, exact, rtol=rtol, atol=atol)
        for tile_rows in (2, 4):
            alone = np.full((11, c), np.nan)
            for k in range(c):
                _forward_tile(A, rows, 3, 69, W, k, k + 1, alone, 0, rows[:0], tile_rows)
            if tile_rows == FORWARD_TILE_ROWS:
                np.testing.assert_array_equal(together, alone,
                                              err_msg=f"{c} classes, {tile_rows}-row tiles")
            else:
                np.testing.assert_allclose(alone, exact, rtol=rtol, atol=atol,
                                           err_msg=f"{c} classes, {tile_rows}-row tiles")


def test_forward_tile_rows_follow_the_vector_registers(monkeypatch):
    """4-row tiles where Numba compiles for AVX-512 (32 registers), 2 where it has 16: the
    detection reads what Numba targets (NUMBA_CPU_FEATURES), not only the host."""
    from numba.core import config

    from softmax_fast.kernels import _numba_config

    if _numba_config.platform.machine().lower() in ("aarch64", "arm64"):
        pytest.skip("64-bit Arm has 32 vector registers whatever the features")
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx,+avx2,+fma,-avx512f")
    assert _numba_config._vector_registers() == 16
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx,+avx2,+fma,+avx512f,+avx512bw")
    assert _numba_config._vector_registers() == 32
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    monkeypatch.setattr(config, "CPU_NAME", "generic")
    assert _numba_config._vector_registers() == 16
    expected = 4 if _numba_config.VECTOR_REGISTERS >= 32 else 2
    assert _numba_config.FORWARD_TILE_ROWS == expected


def test_serial_twins_are_serial_and_cached_apart():
    """Every twin is its kernel compiled without ``parallel`` (the JIT options), under a cache
    name of its own: sharing the kernel's, it would load the parallel machine code."""
    import numba

    from softmax_fast.kernels import numba_backend as nb

    if numba.config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: nothing is compiled")
    assert set(nb.SERIAL_TWINS) == {nb._linear_kernel}
    for kernel, twin in nb.SERIAL_TWINS.items():
        assert kernel.targetoptions.get("parallel") is True
        assert not twin.targetoptions.get("parallel", False), kernel.__name__
        assert twin.py_func.__code__ is kernel.py_func.__code__
        assert (twin._cache._cache_file._index_name
                != kernel._cache._cache_file._index_name), kernel.__name__


@pytest.mark.parametrize("n", [1, 3, 33, 700])
def test_small_calls_run_the_serial_twin_for_any_thread_count(monkeypatch, n):
    """Work too small for two threads goes to the twin whatever ``n_threads`` says (so a
    shape always runs the same code: the same bits for any thread count); larger work goes
    to the parallel kernel even on one thread. The twin agrees with the parallel kernel
    (their sums may be reassociated differently: to rounding, not bitwise)."""
    import numba

    from softmax_fast.kernels import numba_backend as nb
    from softmax_fast.kernels._numba_config import LINEAR_MIN_WORK_PER_THREAD, read_only

    if numba.config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: nothing is compiled")
    rng = np.random.default_rng(n)
    d, c = 200, 13
    X = rng.standard_normal((n, d)).astype(np.float32)
    coef = (rng.standard_normal((c, d)) * 0.1).astype(np.float32)
    b = (rng.standard_normal(c) * 0.1).astype(np.float32)
    y = rng.integers(0, c, n).astype(np.intp)
    w = rng.random(n)
    small = 2 * n * c * d < 2 * LINEAR_MIN_WORK_PER_THREAD
    calls = []
    twin = nb.SERIAL_TWINS[nb._linear_kernel]

    def spy(*args):
        calls.append(len(args))
        return twin(*args)

    monkeypatch.setitem(nb.SERIAL_TWINS, nb._linear_kernel, spy)
    results = []
    for threads in (1, 2):
        g, gb = np.empty_like(coef), np.empty_like(b)
        loss = nb.linear_softmax_ce(X, 0.5, coef, b, y, w, 1e-3, g, gb, threads)
        results.append((loss, g.tobytes(), gb.tobytes()))
    assert results[0] == results[1]
    assert len(calls) == (2 if small else 0)
    g2, gb2 = np.empty_like(coef), np.empty_like(b)
    X, coef, b, y, w = read_only(X, coef, b, y, w)  # as linear_softmax_ce passes them
    loss2 = (twin if not small else nb._linear_kernel)(X, 0.5, coef, b, y, w, True, 1e-3, g2,
                                                       gb2, 1)
    assert loss2 == pytest.approx(results[0][0], rel=1e-12)
    np.testing.assert_allclose(g2, np.frombuffer(results[0][1], np.float32).reshape(c, d),
                               rtol=1e-5, atol=1e-7)


def test_the_row_softmax_tests_cover_both_numba_paths():
    """tests/test_kernels.py's ROW_CLASSES take the flat blocks and the long rows."""
    from test_kernels import ROW_CLASSES

    from softmax_fast.kernels._numba_config import SOFTMAX_ROWWISE_CLASSES

    assert min(ROW_CLASSES) < SOFTMAX_ROWWISE_CLASSES <= max(ROW_CLASSES)


def _numba_dispatchers():
    """Every jitted function of the Numba kernel modules (and the serial twins), by name."""
    from numba.core.dispatcher import Dispatcher

    from softmax_fast.kernels import _numba_gemm, _numba_math, numba_multi, sparse
    from softmax_fast.kernels import numba_backend as nb

    found = {f"{module.__name__}.{name}": obj
             for module in (nb, _numba_gemm, _numba_math, numba_multi, sparse)
             for name, obj in vars(module).items() if isinstance(obj, Dispatcher)}
    found.update({f"{kernel.__name__} (serial twin)": twin
                  for kernel, twin in nb.SERIAL_TWINS.items()})
    return found


def _call_every_kernel_family(writeable):
    """One call of each Numba entry point and path (row-wise, register tiles, BLAS split and
    tiled, SGD tiles and BLAS, the multi-model epoch, the sparse kernels), float32; the
    inputs read-only unless ``writeable`` (the outputs always writeable)."""
    import scipy.sparse

    from softmax_fast.kernels import numba_backend as nb
    from softmax_fast.kernels import numba_multi, sparse

    rng = np.random.default_rng(5)

    def given(array):
        array = np.array(array)  # a copy of its own, whose flags the test sets
        array.flags.writeable = writeable
        return array

    z = given(rng.standard_normal((40, 7)).astype(np.float32))
    y = given(rng.integers(0, 7, 40).astype(np.intp))
    w = given(rng.random(40))
    nb.softmax(z, np.empty_like(z), 1)
    nb.log_softmax(z, np.empty_like(z), 1)
    nb.softmax_ce(z, y, None, np.empty_like(z), 1)
    nb.softmax_ce(z, y, w, np.empty_like(z), 1)
    # register tiles (uint8 and float X, twin and parallel), BLAS row-split, BLAS tiled
    for n, d, c, uint8 in [(40, 12, 7, True), (3000, 64, 10, False), (9000, 40, 40, False),
                           (9000, 40, 64, True), (120, 1100, 1000, False)]:
        X = given(rng.integers(0, 256, (n, d), dtype=np.uint8) if uint8
                  else rng.standard_normal((n, d)).astype(np.float32))
        coef = given(rng.standard_normal((c, d)).astype(np.float32) * 0.01)
        intercept = given(np.zeros(c, np.float32))
        labels = given(rng.integers(0, c, n).astype(np.intp))
        nb.linear_softmax_ce(X, 1 / 255 if uint8 else 1.0, coef, intercept, labels, None, 1e-3,
                             np.empty_like(coef), np.empty_like(intercept), 2)
    # SGD: register tiles (batch 8) and BLAS (batch 128 x 90 x 300); weights are in/out
    for n, d, c, batch in [(64, 30, 5, 8), (500, 90, 300, 128)]:
        X = given(rng.standard_normal((n, d)).astype(np.float32))
        labels = given(rng.integers(0, c, n).astype(np.intp))
        order = given(rng.permutation(n).astype(np.intp))
        coef = np.zeros((c, d), np.float32)
        intercept = np.zeros(c, np.float32)
        nb.sgd_epoch(X, 1.0, labels, given(rng.random(n)), order, coef, intercept,
                     np.zeros_like(coef), np.zeros_like(intercept), 0.1, 1e-4, 0.9, True, batch,
                     2)
    X = given(rng.integers(0, 256, (64, 30), dtype=np.uint8))
    labels = given(rng.integers(0, 5, 64).astype(np.intp))
    order = given(np.arange(64, dtype=np.intp))
    numba_multi.multi_sgd_epoch(X, 1 / 255, labels, order, np.zeros((2, 5, 30), np.float32),
                                np.ones(2), np.zeros((2, 5), np.float32), None, None,
                                given([0.1, 0.2]), given([1e-4, 0.0]), given([0.0, 0.0]),
                                given([False, False]), 8, 2)
    Xs = scipy.sparse.random(50, 20, density=0.3, format="csr", dtype=np.float32,
                             random_state=6)
    for part in (Xs.data, Xs.indices, Xs.indptr):
        part.flags.writeable = writeable
    coef = given(rng.standard_normal((5, 20)).astype(np.float32))
    intercept = given(np.zeros(5, np.float32))
    labels = given(rng.integers(0, 5, 50).astype(np.intp))
    sparse.linear_softmax_ce(Xs, 1.0, coef, intercept, labels, None, 1e-3, np.empty_like(coef),
                             np.empty_like(intercept), 1)
    sparse.sgd_epoch(Xs, 1.0, labels, None, given(np.arange(50, dtype=np.intp)),
                     np.array(coef), np.array(intercept), np.zeros_like(coef),
                     np.zeros_like(intercept), 0.1, 1e-4, 0.0, False, 8, 1)


def test_read_only_inputs_compile_nothing_more():
    """Inputs reach every kernel read-only whatever the caller's flags (``read_only``): the
    same calls with read-only inputs (a memory map opened "r", say) add no compilation, and
    every kernel's inputs are typed read-only, so none can write into them."""
    import numba

    if numba.config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: nothing is compiled")
    from softmax_fast.kernels import numba_backend as nb

    _call_every_kernel_family(writeable=True)
    dispatchers = _numba_dispatchers()
    compiled = {name: len(d.signatures) for name, d in dispatchers.items()}
    _call_every_kernel_family(writeable=False)
    grown = [name for name, d in dispatchers.items() if len(d.signatures) != compiled[name]]
    assert not grown, f"read-only inputs compiled these again: {grown}"
    # Nothing in this process compiled the register-tile kernel (or its twin) for writeable
    # X, coef, intercept, y, sample_weight: the calls above with writeable inputs would have
    # (tests that call the kernels directly pass read-only views, as the backend does).
    for kernel in (nb._linear_kernel, nb.SERIAL_TWINS[nb._linear_kernel]):
        assert kernel.signatures
        for signature in kernel.signatures:
            assert not any(signature[i].mutable for i in (0, 2, 3, 4, 5)), signature
