"""Every Numba kernel compiles with the option sets of ``kernels/_numba_config.py``, and only those.

A stumpy-style check (stumpy's ``test_precision``/``fastmath`` tests): a jitted function that
sets its own options (``fastmath=True``, a forgotten ``error_model``, ``parallel``...) would
silently change the numeric policy — ``fastmath`` with ``nnan``/``ninf`` lets LLVM assume no
NaN/inf, so a NaN logit no longer reaches the returned loss, and ``error_model="python"``
raises on 0/0. Two independent checks:

* statically, with ``ast``: in every ``kernels/*.py``, each use of a Numba JIT decorator is a
  call whose only argument is ``**JIT``, ``**PJIT`` or ``**JIT_STRICT`` imported from
  ``_numba_config`` (no bare ``@njit``, no literal keyword, no signature);
* at runtime: every compiled dispatcher of those modules has ``targetoptions`` equal to one
  of the three option sets, and the dispatchers found at runtime are the ones found in the
  source.
"""

import ast
import importlib
import pathlib

import numba
import numpy as np
import pytest

import softmax_fast.kernels
from softmax_fast.kernels import _isa
from softmax_fast.kernels import _numba_config as cfg
from softmax_fast.kernels import _numba_math as nm

KERNELS_DIR = pathlib.Path(softmax_fast.kernels.__file__).parent
MODULES = sorted(p for p in KERNELS_DIR.glob("*.py") if p.name != "__init__.py")
OPTION_SETS = {"JIT": cfg.JIT, "PJIT": cfg.PJIT, "JIT_STRICT": cfg.JIT_STRICT,
               "JIT_INLINE": cfg.JIT_INLINE}
#: Numba's compiling decorators (``intrinsic``/``overload`` take no JIT options)
JIT_DECORATORS = {"njit", "jit", "generated_jit", "vectorize", "guvectorize", "cfunc",
                  "stencil"}
#: LLVM fast-math flags that would let the compiler assume there is no NaN / infinity
FORBIDDEN_FLAGS = {"nnan", "ninf", "fast"}


def _ids(paths):
    return [p.name for p in paths]


class _JitUses(ast.NodeVisitor):
    """Collect each use of a Numba JIT decorator/factory in one module."""

    def __init__(self):
        self.numba_modules = set()  # names bound to the numba package ("numba", "nb")
        self.jit_names = set()  # names bound to a JIT decorator ("njit", "jit")
        self.config_names = {}  # local name -> option set name, from "from ._numba_config"
        self.rebound = set()  # option-set names assigned in the module itself
        self.calls = []  # (line, ast.Call) of every call of a JIT decorator
        self.bare = []  # (line, source) of a JIT decorator used without a call
        self.jitted = set()  # names of the functions decorated with a JIT decorator

    def visit_Import(self, node):
        for alias in node.names:
            if alias.name == "numba":
                self.numba_modules.add(alias.asname or "numba")

    def visit_ImportFrom(self, node):
        if node.module == "numba":
            for alias in node.names:
                if alias.name in JIT_DECORATORS:
                    self.jit_names.add(alias.asname or alias.name)
        if node.module == "_numba_config" and node.level == 1:
            for alias in node.names:
                if alias.name in OPTION_SETS:
                    self.config_names[alias.asname or alias.name] = alias.name

    def visit_Assign(self, node):
        for target in node.targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name) and name.id in OPTION_SETS:
                    self.rebound.add(name.id)
        self.generic_visit(node)

    def is_jit(self, node):
        if isinstance(node, ast.Name):
            return node.id in self.jit_names
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            return node.value.id in self.numba_modules and node.attr in JIT_DECORATORS
        return False

    def visit_FunctionDef(self, node):
        for dec in node.decorator_list:
            target = dec.func if isinstance(dec, ast.Call) else dec
            if self.is_jit(target):
                self.jitted.add(node.name)
                if not isinstance(dec, ast.Call):
                    self.bare.append((dec.lineno, ast.unparse(dec)))
        self.generic_visit(node)

    def visit_Call(self, node):
        if self.is_jit(node.func):
            self.calls.append((node.lineno, node))
        self.generic_visit(node)


def _scan(path):
    uses = _JitUses()
    uses.visit(ast.parse(path.read_text(), filename=str(path)))
    return uses


def _problems(path):
    """What is wrong with the JIT options of the module at ``path`` (empty: nothing)."""
    uses = _scan(path)
    problems = [f"line {line}: bare @{src} (Numba's default options)"
                for line, src in uses.bare]
    for line, call in uses.calls:
        src = ast.unparse(call)
        if call.args:
            problems.append(f"line {line}: {src}: positional arguments (a signature)")
        named = [kw for kw in call.keywords if kw.arg is not None]
        if named:
            problems.append(f"line {line}: {src}: literal options "
                            f"{[kw.arg for kw in named]}")
        spread = [kw.value for kw in call.keywords if kw.arg is None]
        if len(spread) != 1:
            problems.append(f"line {line}: {src}: expected exactly one **JIT/**PJIT/"
                            f"**JIT_STRICT")
        for value in spread:
            if not (isinstance(value, ast.Name) and value.id in uses.config_names):
                problems.append(f"line {line}: {src}: options not imported from "
                                f"_numba_config")
    for name in sorted(uses.rebound & set(uses.config_names)):
        problems.append(f"{name} is reassigned in the module")
    return problems


# ---------------------------------------------------------------------------------------
# the option sets themselves
# ---------------------------------------------------------------------------------------
def test_fastmath_keeps_nan_and_inf():
    assert not FORBIDDEN_FLAGS & set(cfg.FASTMATH), cfg.FASTMATH
    assert "nnan" not in cfg.FASTMATH and "ninf" not in cfg.FASTMATH


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_option_sets_follow_the_numeric_policy(name):
    options = OPTION_SETS[name]
    fastmath = options["fastmath"]
    assert fastmath is not True, "fastmath=True enables nnan and ninf"
    assert isinstance(fastmath, (set, frozenset)) and set(fastmath) <= set(cfg.FASTMATH)
    assert not FORBIDDEN_FLAGS & set(fastmath)
    assert options["error_model"] == "numpy"  # 0/0 gives NaN, never raises
    assert options["cache"] is True
    assert options.get("parallel", False) == (name == "PJIT")
    assert "nopython" not in options or options["nopython"] is True


def test_strict_set_has_contract_only():
    """The order-sensitive scalar helpers may fuse multiply-adds but never reassociate."""
    assert set(cfg.JIT_STRICT["fastmath"]) == {"contract"}
    assert cfg.JIT_STRICT["inline"] == "never"


# ---------------------------------------------------------------------------------------
# the source of every kernel module
# ---------------------------------------------------------------------------------------
def test_the_kernel_modules_are_found():
    names = {p.name for p in MODULES}
    assert {"numba_backend.py", "numba_multi.py", "sparse.py", "_numba_config.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=_ids(MODULES))
def test_jitted_functions_take_their_options_from_numba_config(path):
    assert _problems(path) == []


@pytest.mark.parametrize("source", [
    "import numba\n@numba.njit\ndef f(x):\n    return x\n",
    "from numba import njit\n@njit(fastmath=True)\ndef f(x):\n    return x\n",
    "from numba import njit\nfrom ._numba_config import JIT\n"
    "@njit(**JIT, parallel=True)\ndef f(x):\n    return x\n",
    "import numba as nb\nfrom ._numba_config import JIT\n"
    "@nb.jit('f8(f8)', **JIT)\ndef f(x):\n    return x\n",
    "from numba import njit as nj\nOPTS = {'fastmath': True}\n"
    "@nj(**OPTS)\ndef f(x):\n    return x\n",
    "from numba import njit\nfrom ._numba_config import JIT\nJIT = dict(JIT, fastmath=True)\n"
    "@njit(**JIT)\ndef f(x):\n    return x\n",
    "from numba import njit\ndef g(x):\n    return x\nf = njit(cache=True)(g)\n",
], ids=["bare", "literal-fastmath", "extra-keyword", "signature", "local-dict", "rebound",
        "call-not-decorator"])
def test_the_source_check_catches_violations(tmp_path, source):
    path = tmp_path / "bad.py"
    path.write_text(source)
    assert _problems(path) != []


# ---------------------------------------------------------------------------------------
# the compiled dispatchers
# ---------------------------------------------------------------------------------------
#: the kernel modules that use Numba (imported by the runtime check)
NUMBA_MODULES = [p for p in MODULES if _scan(p).numba_modules or _scan(p).jit_names]


def _dispatchers(module):
    from numba.core.dispatcher import Dispatcher

    return {name: obj for name, obj in vars(module).items()
            if isinstance(obj, Dispatcher) and obj.py_func.__module__ == module.__name__}


def _without_numba_defaults(options):
    """``targetoptions`` minus what Numba's njit adds itself (and never from our sets)."""
    out = dict(options)
    if out.get("nopython") is True:
        del out["nopython"]
    if out.get("boundscheck", None) is None:
        out.pop("boundscheck", None)
    return out


@pytest.mark.parametrize("path", NUMBA_MODULES, ids=_ids(NUMBA_MODULES))
def test_compiled_dispatchers_use_one_of_the_option_sets(path):
    if numba.config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: nothing is compiled")
    module = importlib.import_module(f"softmax_fast.kernels.{path.stem}")
    found = _dispatchers(module)
    assert set(found) == _scan(path).jitted, "dispatchers differ from the decorated functions"
    # ``cache`` is taken out of targetoptions by the dispatcher (it becomes its cache object)
    expected = {name: {k: v for k, v in opts.items() if k != "cache"}
                for name, opts in OPTION_SETS.items()}
    for name, dispatcher in found.items():
        options = _without_numba_defaults(dispatcher.targetoptions)
        matches = [set_name for set_name, opts in expected.items() if options == opts]
        assert matches, f"{module.__name__}.{name}: targetoptions {options} match none of " \
                        f"{sorted(OPTION_SETS)}"
        assert type(dispatcher._cache).__name__ != "NullCache", f"{name} is not cached"


def test_known_dispatchers_are_checked():
    """The runtime check above really sees the kernels (e.g. the softmax kernel is PJIT)."""
    from softmax_fast.kernels import numba_backend, numba_multi, sparse

    assert _without_numba_defaults(numba_backend._softmax_kernel.targetoptions) == \
        {k: v for k, v in cfg.PJIT.items() if k != "cache"}
    assert _without_numba_defaults(numba_backend._exp.targetoptions) == \
        {k: v for k, v in cfg.JIT_STRICT.items() if k != "cache"}
    assert "_epoch" in _dispatchers(numba_multi) and "_epoch" in _dispatchers(sparse)


# --------------------------------------------------------------------------------------
# The wide-vector hint (``_numba_math._wide_vectors``)
# --------------------------------------------------------------------------------------
@numba.njit(cache=False)
def _axpy_without_hint(a, x, y):
    for i in range(x.shape[0]):
        y[i] += a * x[i]


def _fresh_asm_and_ir(function, *args):
    """Compile ``function``'s Python source again (no cache: a dispatcher loaded from Numba's
    cache has no IR to show) with its own options, call it, return (LLVM IR, assembly)."""
    dispatcher = numba.njit(cache=False, **{k: v for k, v in function.targetoptions.items()
                                            if k not in ("cache", "nopython")})(function.py_func)
    dispatcher(*args)
    sig = dispatcher.signatures[0]
    return dispatcher.inspect_llvm(sig), dispatcher.inspect_asm(sig)


def test_the_tiles_carry_the_wide_vector_attributes():
    """Both matrix-product tiles are compiled with the two attributes in their definition,
    and on an AVX-512 CPU into 512-bit code (the hint is an attribute, not a JIT option:
    the option sets above are untouched)."""
    rng = np.random.default_rng(0)
    A = rng.random((8, 64), dtype=np.float32)
    W = rng.random((3, 64), dtype=np.float32)
    P = np.zeros((8, 3))
    G = rng.random((8, 3), dtype=np.float32)
    Out = np.zeros((3, 64), dtype=np.float32)
    rows = np.arange(8)
    cases = [(nm._forward_tile, (A, rows, 0, 64, W, 0, 3, P, 0, rows[:0])),
             (nm._backward_tile, (A, rows, 0, 64, G, 0, 0, 3, Out, 0))]
    for tile, args in cases:
        ir, asm = _fresh_asm_and_ir(tile, *args)
        # (LLVM may drop the other attribute once the tile's own vector types are known)
        assert '"prefer-vector-width"="512"' in ir, tile.__name__
        if _isa.cpu_runs("avx512"):
            assert "zmm" in asm, tile.__name__
    np.testing.assert_allclose(P, A.astype(np.float64) @ W.T.astype(np.float64), rtol=1e-5)
    np.testing.assert_allclose(Out, G.T @ A, rtol=1e-5)


@pytest.mark.skipif(not _isa.cpu_runs("avx512"), reason="the hint only changes code on AVX-512")
def test_the_wide_vector_hint_gives_512_bit_code_on_avx512():
    """On an AVX-512 CPU, LLVM's prefer-256-bit tuning keeps a plain loop on ymm registers
    and the hint moves it to zmm (if a Numba or LLVM upgrade changed either, the tiles would
    silently lose or no longer need the hint)."""

    @numba.njit(cache=False)
    def axpy_with_hint(a, x, y):
        nm._wide_vectors()
        for i in range(x.shape[0]):
            y[i] += a * x[i]

    x = np.ones(1000, dtype=np.float32)
    y1, y2 = np.zeros_like(x), np.zeros_like(x)
    a = np.float32(2)  # (a float64 factor widens to 8 doubles, which LLVM puts in zmm anyway)
    _axpy_without_hint(a, x, y1)
    axpy_with_hint(a, x, y2)
    assert (y1 == 2).all() and (y2 == 2).all()
    plain = _axpy_without_hint.inspect_asm(_axpy_without_hint.signatures[0])
    hinted = axpy_with_hint.inspect_asm(axpy_with_hint.signatures[0])
    assert "ymm" in plain and "zmm" not in plain
    assert "zmm" in hinted
