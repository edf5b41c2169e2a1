"""The backend registry (:mod:`softmax_fast.backends`) and the contracts of the kernel families.

* every registered module implements its kind's ``typing.Protocol`` (``missing_functions``);
* each kind has exactly one float64 oracle (``kernels/reference.py``) and at least one other
  implementation, so the ``fast_*`` fixtures of ``conftest.py`` are never empty;
* the ``auto`` order, name resolution (unknown names, names without the kind, the
  ``SOFTMAX_FAST_BACKEND`` override) and ``resolve_n_threads``;
* the fixture mechanism itself: a registered backend that does not import fails its tests
  unless ``SOFTMAX_FAST_ALLOW_MISSING_BACKENDS=1``.
"""

import numpy as np
import pytest
from conftest import ALL, ALLOW_MISSING_ENV_VAR, FAST, load_kernels, oracle_info, require_backend

from softmax_fast import backends
from softmax_fast.kernels import contract
from softmax_fast.kernels._isa import UnsupportedISAError

Failed, Skipped = pytest.fail.Exception, pytest.skip.Exception
ALL_INFOS = [info for kind in backends.KINDS for info in ALL[kind]]


@pytest.fixture
def scratch_registry(monkeypatch):
    """Register backends freely: the registry's tables are restored afterwards."""
    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))
    monkeypatch.setattr(backends, "_loaded", dict(backends._loaded))
    monkeypatch.setattr(backends, "_import_errors", dict(backends._import_errors))
    monkeypatch.delenv(backends.BACKEND_ENV_VAR, raising=False)
    return backends


@pytest.fixture(autouse=True)
def _no_forced_backend(monkeypatch):
    monkeypatch.delenv(backends.BACKEND_ENV_VAR, raising=False)


# ---------------------------------------------------------------------------------------
# the registered modules and the contracts
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("info", ALL_INFOS, ids=[f"{i.kind}-{i.name}" for i in ALL_INFOS])
def test_every_registered_module_implements_its_protocol(info):
    module = load_kernels(info)
    assert contract.missing_functions(module, info.kind) == []
    assert isinstance(module, contract.PROTOCOLS[info.kind])


def test_missing_functions_names_what_is_missing():
    import types

    module = types.SimpleNamespace(softmax=lambda *a: None, sgd_epoch=42)
    missing = contract.missing_functions(module, "dense")
    assert set(missing) == {"log_softmax", "softmax_ce", "linear_softmax_ce", "sgd_epoch"}
    assert contract.missing_functions(module, "multi") == ["multi_sgd_epoch"]
    assert set(contract.PROTOCOLS) == set(backends.KINDS)


@pytest.mark.parametrize("kind", backends.KINDS)
def test_each_kind_has_one_oracle_and_something_to_test_against_it(kind):
    oracle = oracle_info(kind)
    assert oracle.module == "softmax_fast.kernels.reference"
    assert FAST[kind], f"no {kind} implementation besides the oracle: nothing is tested"
    assert [i for i in ALL[kind] if not i.oracle] == FAST[kind]


@pytest.mark.parametrize("kind", backends.KINDS)
def test_registered_is_in_auto_order(kind):
    infos = backends.registered(kind)
    ranked = [i.auto_rank for i in infos if i.auto_rank is not None]
    assert ranked == sorted(ranked)
    unranked = [i for i in infos if i.auto_rank is None]
    assert infos[len(ranked):] == unranked  # never-auto backends come last, by name
    assert [i.name for i in unranked] == sorted(i.name for i in unranked)
    assert backends.backend_names(kind) == tuple(i.name for i in infos)


def test_backend_names_of_all_kinds_are_unique_and_ordered():
    names = backends.backend_names()
    assert len(names) == len(set(names))
    assert names[:len(backends.backend_names("dense"))] == backends.backend_names("dense")
    assert set(names) == {i.name for i in ALL_INFOS}


# ---------------------------------------------------------------------------------------
# resolution
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", backends.KINDS)
def test_auto_is_the_first_auto_ranked_backend(kind):
    first = next(i.name for i in backends.registered(kind) if i.auto_rank is not None)
    assert backends.resolve_backend_name("auto", kind) == first
    assert backends.get_kernels("auto", kind) is load_kernels(backends.registered(kind)[0])


def test_unknown_name_raises_value_error_naming_the_choices():
    with pytest.raises(ValueError, match="unknown backend 'fortran'") as err:
        backends.resolve_backend_name("fortran")
    for name in ("auto",) + backends.backend_names():
        assert name in str(err.value)
    for kind in backends.KINDS:
        with pytest.raises(ValueError, match="unknown backend"):
            backends.get_kernels("fortran", kind)


def test_bad_arguments():
    with pytest.raises(TypeError, match="string"):
        backends.resolve_backend_name(None)
    with pytest.raises(ValueError, match="kind"):
        backends.resolve_backend_name("auto", "gpu")
    with pytest.raises(ValueError, match="kind"):
        backends.registered("gpu")
    with pytest.raises(ValueError, match="kind"):
        backends.BackendInfo("x", "gpu", "x")


@pytest.mark.parametrize("kind", ["sparse", "multi"])
def test_a_name_without_the_kind_falls_back_to_the_kinds_auto_choice(kind):
    dense_only = [i.name for i in ALL["dense"]
                  if (kind, i.name) not in {(j.kind, j.name) for j in ALL[kind]}]
    assert dense_only, "every dense name also has a sparse/multi implementation"
    auto = backends.resolve_backend_name("auto", kind)
    for name in dense_only:  # e.g. "cython" for CSR input
        assert backends.resolve_backend_name(name, kind) == auto
        assert backends.get_kernels(name, kind) is backends.get_kernels("auto", kind)


def test_cython_with_csr_input_uses_the_sparse_auto_choice():
    assert ("sparse", "cython") not in {(i.kind, i.name) for i in ALL["sparse"]}
    assert backends.resolve_backend_name("cython", "sparse") == \
        backends.resolve_backend_name("auto", "sparse")


def test_names_of_a_kind_resolve_to_their_own_module():
    for info in ALL_INFOS:
        if isinstance(backends.import_error(info.name, info.kind), UnsupportedISAError):
            continue  # a build of the kernels this CPU cannot run (its own tests skip)
        assert backends.resolve_backend_name(info.name, info.kind) == info.name
        assert backends.get_kernels(info.name, info.kind).__name__ == info.module
    assert backends.get_backend("numba").__name__ == "softmax_fast.kernels.numba_backend"


@pytest.mark.parametrize("forced,kind,expected", [
    ("numba", "dense", "numba"),
    ("reference", "dense", "reference"),
    ("reference", "multi", "reference"),
    ("auto", "dense", None),
    ("cython", "sparse", None),  # no sparse cython: the sparse auto choice
])
def test_environment_variable_overrides_auto(monkeypatch, forced, kind, expected):
    default = backends.resolve_backend_name("auto", kind)
    monkeypatch.setenv(backends.BACKEND_ENV_VAR, forced)
    assert backends.resolve_backend_name("auto", kind) == (expected or default)
    # an explicit name is not overridden
    explicit = backends.available_backends(kind)[-1]
    assert backends.resolve_backend_name(explicit, kind) == explicit


# ---------------------------------------------------------------------------------------
# a backend that does not import
# ---------------------------------------------------------------------------------------
BROKEN = backends.BackendInfo("broken", "dense", "softmax_fast.kernels._no_such_module",
                              auto_rank=-1)


def test_an_unimportable_backend_is_reported_and_skipped_by_auto(scratch_registry):
    scratch_registry.register_backend(BROKEN)
    assert "broken" in scratch_registry.backend_names("dense")
    assert "broken" not in scratch_registry.available_backends("dense")
    assert isinstance(scratch_registry.import_error("broken"), ImportError)
    assert scratch_registry.resolve_backend_name("auto") == ALL["dense"][0].name
    with pytest.raises(ValueError, match="'broken' is not available"):
        scratch_registry.resolve_backend_name("broken")


def test_an_unimportable_backend_fails_its_tests(scratch_registry, monkeypatch):
    scratch_registry.register_backend(BROKEN)
    monkeypatch.delenv(ALLOW_MISSING_ENV_VAR, raising=False)
    with pytest.raises(Failed, match="does not import"):
        load_kernels(BROKEN)
    with pytest.raises(Failed, match="does not import"):
        require_backend("broken")
    monkeypatch.setenv(ALLOW_MISSING_ENV_VAR, "0")
    with pytest.raises(Failed):
        load_kernels(BROKEN)


def test_an_unimportable_backend_is_skipped_only_when_allowed(scratch_registry, monkeypatch):
    scratch_registry.register_backend(BROKEN)
    monkeypatch.setenv(ALLOW_MISSING_ENV_VAR, "1")
    with pytest.raises(Skipped, match="_no_such_module"):
        load_kernels(BROKEN)
    # an importable backend is never skipped
    assert load_kernels(ALL["dense"][0]) is backends.get_kernels(ALL["dense"][0].name)


def test_require_backend_of_an_unregistered_name_fails():
    with pytest.raises(Failed, match="no dense backend named 'fortran'"):
        require_backend("fortran")
    assert require_backend(ALL["dense"][0].name) == ALL["dense"][0].name


# ---------------------------------------------------------------------------------------
# resolve_n_threads
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [1, 3, np.int64(2), np.int32(4), np.uint8(1), np.intp(7)])
def test_n_threads_accepts_ints_and_numpy_ints(value):
    got = backends.resolve_n_threads(value)
    assert got == int(value) and type(got) is int


def test_n_threads_none_is_every_usable_core():
    n = backends.resolve_n_threads(None)
    assert type(n) is int and n >= 1


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 1.0, 2.5, np.float64(2.0),
                                   "2", [2]])
def test_n_threads_rejects_bool_float_and_others(value):
    with pytest.raises(TypeError, match="n_threads"):
        backends.resolve_n_threads(value)


@pytest.mark.parametrize("value", [0, -1, np.int64(0), np.int32(-3)])
def test_n_threads_rejects_non_positive(value):
    with pytest.raises(ValueError, match="n_threads"):
        backends.resolve_n_threads(value)
