"""Which build of the compiled kernels to import: chosen at import, by what the CPU runs.

``setup.py`` compiles the SIMD kernels (``_softmax_ce.pyx``) once per instruction set, each
build its own extension module ``_softmax_ce_<isa>``:

============  ===========================================  ===================================
build         compiled for                                 float32 lanes per vector
============  ===========================================  ===================================
``baseline``  x86-64-v2 (SSE4.2); elsewhere (aarch64, ...)  4 on x86-64; the platform's own
              the compiler's default target                 elsewhere
``avx2``      x86-64-v3 (AVX2, FMA)                        8
``avx512``    x86-64-v4 (AVX-512 F, BW, CD, DQ, VL)        16
``native``    ``-march=native``: the only build when       the build machine's widest
              built with ``SOFTMAX_FAST_NATIVE=1``
============  ===========================================  ===================================

As NumPy does, :func:`choose` takes the best build that this installation has and this CPU
runs, never one it cannot: the ``_cpu`` helper, compiled for the plain target so that it
imports anywhere, asks the CPU for its x86-64 level (CPUID, and XGETBV for the OS's support of
the AVX / AVX-512 registers). A native build is trusted to run where it was built.

``SOFTMAX_FAST_ISA`` forces a build: ``baseline``, ``avx2``, ``avx512`` (``native`` in a native
build) or ``auto`` (the default). One this CPU cannot run raises ImportError, an unknown value
ValueError; both name the choices.

The builds agree to rounding, not bitwise: vectors of other widths add in other orders, and
from x86-64-v3 on the compiler fuses multiply-adds (FMA). Each build on its own gives bitwise
the same results for any ``n_threads``.
"""

import os
from importlib import import_module

__all__ = ["ENV_VAR", "BUILDS", "UnsupportedISAError", "built", "cpu_runs", "supported",
           "choose", "load"]

#: Environment variable that forces a build (see the module doc).
ENV_VAR = "SOFTMAX_FAST_ISA"

#: Every build, best first, with the x86-64 level its code needs (None: no check).
BUILDS = {"native": None, "avx512": 4, "avx2": 3, "baseline": 2}

_TITLES = {"native": "-march=native", "avx512": "AVX-512 (x86-64-v4)",
           "avx2": "AVX2 + FMA (x86-64-v3)", "baseline": "x86-64-v2 (SSE4.2)"}


class UnsupportedISAError(ImportError):
    """The build cannot exist or run here: the CPU lacks its instructions, the platform is not
    x86-64, or the installation was built native. Nothing is broken (the tests skip)."""


def _cpu():
    from . import _cpu  # ImportError if the extensions were not built

    return _cpu


def built():
    """The builds this installation has, best first."""
    names = _cpu().kernel_builds()
    return tuple(isa for isa in BUILDS if isa in names)


def cpu_runs(isa):
    """Whether this CPU (and its OS) runs the instructions of build ``isa``."""
    if BUILDS[isa] is None:
        return True
    level = _cpu().x86_64_level()
    if level == 0:  # not x86-64: there is one build, "baseline", for the default target
        return isa == "baseline"
    return level >= BUILDS[isa]


def supported():
    """The builds of this installation that this CPU runs, best first."""
    return tuple(isa for isa in built() if cpu_runs(isa))


def _requested():
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value != "auto" and value not in BUILDS:
        raise ValueError(f"{ENV_VAR}={value!r} is not a build of the Cython kernels; choose one "
                         f"of auto, {', '.join(reversed(BUILDS))}")
    return value


def choose():
    """The build to import: the one ``SOFTMAX_FAST_ISA`` names, else the best supported one.

    Raises
    ------
    ValueError
        If ``SOFTMAX_FAST_ISA`` is not a build name or ``auto``.
    ImportError
        If the build it names cannot run here, or no build can (the message says why).
    """
    requested = _requested()
    if requested == "auto":
        runnable = supported()
        if not runnable:
            raise UnsupportedISAError(
                f"this CPU runs none of the builds of the Cython kernels "
                f"({', '.join(built()) or 'none built'}); the least needs x86-64-v2 (SSE4.2)")
        return runnable[0]
    try:
        _check(requested)
    except UnsupportedISAError as exc:  # asked for by name: an error, never a silent skip
        raise ImportError(f"{ENV_VAR}={requested}: {exc}; builds this CPU runs: "
                          f"{', '.join(supported()) or 'none'}") from None
    return requested


def _check(isa):
    """Raise ImportError unless build ``isa`` exists here and the CPU runs it."""
    if isa not in BUILDS:
        raise ValueError(f"unknown build {isa!r}; one of {', '.join(BUILDS)}")
    names = built()
    if not cpu_runs(isa):
        level = _cpu().x86_64_level()
        cpu = f"x86-64-v{level}" if level else "not x86-64"
        raise UnsupportedISAError(f"this CPU cannot run the {_TITLES[isa]} build ({cpu})")
    if isa in names:
        return
    if "native" in names:
        raise UnsupportedISAError(f"this installation was built with SOFTMAX_FAST_NATIVE=1: "
                                  f"its one build is native, not {isa}")
    if isa == "native":
        raise UnsupportedISAError("native is only built with SOFTMAX_FAST_NATIVE=1")
    # an x86-64 build the compiler could not target: the build is incomplete, not the CPU
    raise ImportError(f"this installation has no {isa} build of the kernels (has: "
                      f"{', '.join(names)}); setup.py skips a build the C compiler cannot target")


def load(isa):
    """Import the extension module of build ``isa`` (ImportError if it cannot run here)."""
    _check(isa)
    return import_module(f"{__package__}._softmax_ce_{isa}")
