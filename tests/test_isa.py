"""The builds of the Cython kernels per instruction set and the choice among them at import.

``setup.py`` compiles the kernels once per x86-64 level (``baseline``, ``avx2``, ``avx512``);
``kernels/_isa.py`` imports the best one the CPU runs, or the one ``SOFTMAX_FAST_ISA`` forces.
The contract suite covers every build through the registry (``cython-baseline``,
``cython-avx2``, ``cython-avx512``: thread-count invariance, the oracle, each other); here:

* which builds exist, and the CPU's level against the kernel's own view (``/proc/cpuinfo``);
* the choice: the best build the CPU runs, with fake CPUs for the levels this one is not;
* forcing a build (subprocesses, since the choice is made once per process), a build the CPU
  cannot run (ImportError), an unknown value (ValueError);
* the builds agree to rounding on both linear paths (register tiles and BLAS tiles) and each
  is bitwise the same for any thread count. They do not agree bitwise (the README says so):
  vector widths change the order of sums, and baseline has no FMA.
"""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
from conftest import DENSE, SUBPROCESS_CWD, load_kernels

from softmax_fast import backends
from softmax_fast.kernels import _isa
from softmax_fast.kernels import reference as ref

#: The registry's records of the forced builds (cython-baseline, cython-avx2, cython-avx512).
BUILD_INFOS = [info for info in DENSE if info.module.startswith("softmax_fast.kernels.cython_")
               and info.module != "softmax_fast.kernels.cython_backend"]
LANES = {"baseline": 4, "avx2": 8, "avx512": 16}
X86_64 = platform.machine().lower() in ("x86_64", "amd64")


class FakeCPU:
    """Stands in for the ``_cpu`` helper: an x86-64 level and the builds an installation has."""

    def __init__(self, level, builds=("baseline", "avx2", "avx512")):
        self.level, self.builds = level, tuple(builds)

    def x86_64_level(self):
        return self.level

    def kernel_builds(self):
        return self.builds


@pytest.fixture
def fake_cpu(monkeypatch):
    """``fake_cpu(level, builds)`` makes ``_isa`` see that CPU; nothing is imported for real."""
    monkeypatch.delenv(_isa.ENV_VAR, raising=False)

    def never_import(name):
        raise AssertionError(f"imported {name}")

    monkeypatch.setattr(_isa, "import_module", never_import)

    def install(level, builds=("baseline", "avx2", "avx512")):
        cpu = FakeCPU(level, builds)
        monkeypatch.setattr(_isa, "_cpu", lambda: cpu)
        return cpu

    return install


def _python(code, **env):
    """Run ``code`` in a fresh interpreter with ``env`` added; (returncode, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if k != _isa.ENV_VAR}
    environ.update(env)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=SUBPROCESS_CWD, env=environ)
    return proc.returncode, proc.stdout.strip(), proc.stderr


# ------------------------------------------------------------------ the builds and the CPU
def test_this_installation_has_the_builds_of_its_platform():
    builds = _isa.built()
    if "native" in builds:
        assert builds == ("native",)  # SOFTMAX_FAST_NATIVE=1: one module
    elif X86_64:
        assert builds == ("avx512", "avx2", "baseline")
    else:
        assert builds == ("baseline",)


def _level_from_proc_cpuinfo():
    """The x86-64 level from the flags Linux shows (it hides what the OS does not enable)."""
    with open("/proc/cpuinfo") as fh:
        flags = set(next(line for line in fh if line.startswith("flags")).split(":")[1].split())
    levels = [
        {"pni", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "lahf_lm"},
        {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
        {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
    ]
    level = 1
    for needed in levels:
        if not needed <= flags:
            break
        level += 1
    return level


@pytest.mark.skipif(not (X86_64 and sys.platform.startswith("linux")),
                    reason="x86-64 Linux: /proc/cpuinfo")
def test_cpu_level_agrees_with_the_kernel():
    from softmax_fast.kernels import _cpu

    assert _cpu.x86_64_level() == _level_from_proc_cpuinfo()


def test_the_cython_backend_runs_the_best_build_this_cpu_runs():
    code = "from softmax_fast.kernels import cython_backend as cy; print(cy.ISA, cy.VECTOR_LANES)"
    rc, out, err = _python(code)
    assert rc == 0, err
    isa, lanes = out.split()
    assert isa == _isa.supported()[0]
    if isa in LANES and X86_64:
        assert int(lanes) == LANES[isa]
    if X86_64 and "native" not in _isa.built():  # the level decides, as the helper reports it
        from softmax_fast.kernels import _cpu

        best = {4: "avx512", 3: "avx2", 2: "baseline"}.get(_cpu.x86_64_level())
        assert isa == best


# ------------------------------------------------------------------ the choice, on fake CPUs
@pytest.mark.parametrize("level,builds,expected", [
    (4, ("baseline", "avx2", "avx512"), "avx512"),
    (3, ("baseline", "avx2", "avx512"), "avx2"),
    (2, ("baseline", "avx2", "avx512"), "baseline"),
    (4, ("baseline", "avx2"), "avx2"),           # a compiler that could not target v4
    (0, ("baseline",), "baseline"),              # aarch64 & co: one build
    (3, ("native",), "native"),                  # SOFTMAX_FAST_NATIVE=1
    (0, ("native",), "native"),
])
def test_auto_takes_the_best_build_the_cpu_runs(fake_cpu, level, builds, expected):
    fake_cpu(level, builds)
    assert _isa.choose() == expected
    assert _isa.supported()[0] == expected


def test_a_cpu_below_the_baseline_runs_no_build(fake_cpu):
    fake_cpu(1)  # x86-64 without SSE4.2 / POPCNT: every build would die of SIGILL
    assert _isa.supported() == ()
    with pytest.raises(_isa.UnsupportedISAError, match="x86-64-v2"):
        _isa.choose()


@pytest.mark.parametrize("level,builds,isa,reason", [
    (3, ("baseline", "avx2", "avx512"), "avx512", "cannot run the AVX-512"),
    (2, ("baseline", "avx2", "avx512"), "avx2", "cannot run the AVX2"),
    (0, ("baseline",), "avx2", "not x86-64"),
    (4, ("native",), "baseline", "SOFTMAX_FAST_NATIVE=1"),
    (4, ("baseline", "avx2", "avx512"), "native", "SOFTMAX_FAST_NATIVE=1"),
])
def test_a_build_the_cpu_or_platform_cannot_run_is_never_imported(fake_cpu, level, builds, isa,
                                                                   reason):
    fake_cpu(level, builds)
    with pytest.raises(_isa.UnsupportedISAError, match=reason):  # an ImportError: tests skip
        _isa.load(isa)
    assert issubclass(_isa.UnsupportedISAError, ImportError)


def test_a_build_the_compiler_skipped_is_an_error_not_a_skip(fake_cpu):
    fake_cpu(4, ("baseline", "avx2"))
    with pytest.raises(ImportError, match="no avx512 build") as err:
        _isa.load("avx512")
    assert not isinstance(err.value, _isa.UnsupportedISAError)


def test_a_build_the_cpu_cannot_run_skips_its_tests_a_missing_one_fails(monkeypatch):
    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))
    monkeypatch.setattr(backends, "_import_errors", dict(backends._import_errors))
    monkeypatch.delenv("SOFTMAX_FAST_ALLOW_MISSING_BACKENDS", raising=False)
    for name, error, outcome in [
            ("cython-v9", _isa.UnsupportedISAError("this CPU cannot run it"), pytest.skip),
            ("cython-v8", ImportError("no v8 build of the kernels"), pytest.fail)]:
        info = backends.register_backend(
            backends.BackendInfo(name, "dense", f"softmax_fast.kernels.{name}"))
        backends._import_errors[(info.kind, info.name)] = error
        with pytest.raises(outcome.Exception, match=str(error)):
            load_kernels(info)


# ------------------------------------------------------------------ SOFTMAX_FAST_ISA
def test_forcing_a_build_the_cpu_cannot_run_raises_import_error(fake_cpu, monkeypatch):
    fake_cpu(3)
    monkeypatch.setenv(_isa.ENV_VAR, "avx512")
    with pytest.raises(ImportError, match=r"SOFTMAX_FAST_ISA=avx512: .*AVX-512.*"
                                          r"builds this CPU runs: avx2, baseline") as err:
        _isa.choose()
    # asked for by name: an error for the tests too, not a hardware skip
    assert not isinstance(err.value, _isa.UnsupportedISAError)


@pytest.mark.parametrize("value", ["avx3", "sse2", "x86-64-v4", "fast"])
def test_an_unknown_value_is_a_value_error_naming_the_choices(fake_cpu, monkeypatch, value):
    fake_cpu(4)
    monkeypatch.setenv(_isa.ENV_VAR, value)
    with pytest.raises(ValueError, match=f"SOFTMAX_FAST_ISA='{value}'.*auto, baseline, avx2, "
                                         "avx512, native"):
        _isa.choose()


@pytest.mark.parametrize("value,expected", [("", "avx512"), ("auto", "avx512"),
                                            (" AVX2 ", "avx2"), ("Baseline", "baseline")])
def test_values_are_case_and_space_insensitive(fake_cpu, monkeypatch, value, expected):
    fake_cpu(4)
    monkeypatch.setenv(_isa.ENV_VAR, value)
    assert _isa.choose() == expected


@pytest.mark.parametrize("isa", ["baseline", "avx2", "avx512", "native"])
def test_forcing_a_build_at_import(isa):
    code = ("from softmax_fast.kernels import cython_backend as cy; "
            "print(cy.ISA, cy.VECTOR_LANES, cy.EXTENSION.__name__)")
    rc, out, err = _python(code, SOFTMAX_FAST_ISA=isa)
    if isa not in _isa.supported():
        assert rc != 0 and f"ImportError: SOFTMAX_FAST_ISA={isa}:" in err
        return
    assert rc == 0, err
    got, lanes, module = out.split()
    assert got == isa and module == f"softmax_fast.kernels._softmax_ce_{isa}"
    if X86_64 and isa in LANES:
        assert int(lanes) == LANES[isa]


def test_an_unknown_value_fails_the_import_loudly():
    code = "from softmax_fast.kernels import cython_backend"
    rc, _, err = _python(code, SOFTMAX_FAST_ISA="avx3")
    assert rc != 0
    assert "ValueError: SOFTMAX_FAST_ISA='avx3' is not a build" in err


# ------------------------------------------------------------------ numerics per build
@pytest.fixture(params=[pytest.param(info, id=info.name) for info in BUILD_INFOS])
def build(request):
    """The contract module of each forced build (skipped where the CPU cannot run it)."""
    return load_kernels(request.param)


def _linear(mod, X, xs, coef, b, y, w, threads):
    gW, gb = np.empty_like(coef), np.empty_like(b)
    loss = mod.linear_softmax_ce(X, xs, coef, b, y, w, 1e-3, gW, gb, threads)
    return loss, gW, gb


def _sgd(mod, X, xs, coef, b, y, w, batch_size, threads):
    W, bb, V, Vb = coef.copy(), b.copy(), np.zeros_like(coef), np.zeros_like(b)
    order = np.random.default_rng(7).permutation(X.shape[0]).astype(np.intp)
    loss = mod.sgd_epoch(X, xs, y, w, order, W, bb, V, Vb, 0.01, 1e-4, 0.5, True, batch_size,
                         threads)
    return loss, W, bb


# (n, d, c, batch): Fashion-MNIST-like (register tiles) and many classes (BLAS tiles)
SHAPES = {"register": (600, 784, 10, 32), "blas": (512, 256, 300, 256)}


def _problem(shape, dtype, uint8):
    n, d, c, batch = SHAPES[shape]
    rng = np.random.default_rng(11)
    X = rng.integers(0, 256, (n, d), dtype=np.uint8)
    X, xs = (X, 1 / 255) if uint8 else ((X / 255).astype(dtype), 1.0)
    coef = (rng.standard_normal((c, d)) * 0.05).astype(dtype)
    b = (rng.standard_normal(c) * 0.1).astype(dtype)
    y = rng.integers(0, c, n).astype(np.intp)
    return X, xs, coef, b, y, rng.random(n), batch


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_each_build_matches_the_oracle_and_is_bitwise_thread_invariant(build, shape, dtype):
    from softmax_fast.kernels.cython_backend import prefers_gemm

    X, xs, coef, b, y, w, batch = _problem(shape, dtype, uint8=shape == "register")
    for rows in (X.shape[0], batch):  # the path under test, for the call and the minibatches
        assert prefers_gemm(rows, coef.shape[1], coef.shape[0], X.dtype == np.uint8) == \
            (shape == "blas")
    rW, rb = np.empty(coef.shape), np.empty(coef.shape[0])
    loss_ref = ref.linear_softmax_ce(X, xs, coef.astype(float), b.astype(float), y, w, 1e-3,
                                     rW, rb)
    rtol = 2e-5 if dtype == np.float32 else 1e-10
    runs = [_linear(build, X, xs, coef, b, y, w, t) for t in (1, 2, 3)]
    assert runs[0][0] == pytest.approx(loss_ref, rel=rtol)
    np.testing.assert_allclose(runs[0][1], rW, rtol=0, atol=rtol * np.abs(rW).max())
    epochs = [_sgd(build, X, xs, coef, b, y, w, batch, t) for t in (1, 2, 3)]
    for other in runs[1:]:
        assert other[0] == runs[0][0]
        for got, first in zip(other[1:], runs[0][1:], strict=True):
            np.testing.assert_array_equal(got, first)
    for other in epochs[1:]:
        assert other[0] == epochs[0][0]
        for got, first in zip(other[1:], epochs[0][1:], strict=True):
            np.testing.assert_array_equal(got, first)


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_the_builds_agree_to_rounding(shape, dtype):
    runnable = [info for info in BUILD_INFOS if not isinstance(
        backends.import_error(info.name, info.kind), _isa.UnsupportedISAError)]
    if len(runnable) < 2:
        pytest.skip(f"this CPU runs one build only: {[info.name for info in runnable]}")
    X, xs, coef, b, y, w, batch = _problem(shape, dtype, uint8=shape == "register")
    # one call: float32 results ~1e-7 of their scale apart; an epoch of SGD carries that on
    tol_call, tol_epoch = {np.float32: (3e-6, 3e-5), np.float64: (1e-13, 1e-11)}[dtype]
    results = []
    for info in runnable:
        mod = load_kernels(info)
        results.append((_linear(mod, X, xs, coef, b, y, w, 2),
                        _sgd(mod, X, xs, coef, b, y, w, batch, 2)))
    (call0, epoch0), *others = results
    for call, epoch in others:
        for got, want, tol in ((call, call0, tol_call), (epoch, epoch0, tol_epoch)):
            assert got[0] == pytest.approx(want[0], rel=tol)
            for g, e in zip(got[1:], want[1:], strict=True):
                np.testing.assert_allclose(g, e, rtol=0, atol=tol * np.abs(e).max())
