"""Build script: compiles the Cython kernels in ``kernels/`` into ``softmax_fast.kernels``.

All compiler settings live here, once:

* Cython directives (``CYTHON_DIRECTIVES``) apply to every ``.pyx`` file.
* Instruction sets. The SIMD kernels (``kernels/_softmax_ce.pyx``) are compiled several times
  from the same sources, each build its own extension module ``_softmax_ce_<isa>``, and
  ``kernels/_isa.py`` imports the best one the CPU runs (NumPy's approach): one wheel is fast
  on every x86-64 CPU and never dies of SIGILL on an older one.

  ============  ==================================================  ====================
  build         flags (x86-64)                                      float32 lanes
  ============  ==================================================  ====================
  ``baseline``  ``-march=x86-64-v2`` (SSE4.2, POPCNT)               4
  ``avx2``      ``-march=x86-64-v3`` (AVX2, FMA, BMI2)              8
  ``avx512``    ``-march=x86-64-v4`` (AVX-512 F, BW, CD, DQ, VL)    16
  ============  ==================================================  ====================

  ``avx512`` adds ``-mprefer-vector-width=256``: the compiler's own loop vectorisation stays
  at 256 bits, as ``-march=native`` tunes it on Intel (the kernels' vectors are 512-bit
  anyway). A compiler without the level names (gcc < 11) gets the same features as ``-m``
  flags; a level the compiler cannot target at all is skipped, with a message. Other
  architectures (aarch64, ...) build ``baseline`` alone, for the compiler's default target.
  The modules compile in parallel, one per core. ``SOFTMAX_FAST_NATIVE=1`` builds one module,
  ``_softmax_ce_native``, with ``-march=native`` instead: the fastest code for the build
  machine, which may die of SIGILL on any other. ``SOFTMAX_FAST_PORTABLE=1`` (the old switch
  against ``-march=native``) asks for the default, the portable builds, even when
  ``SOFTMAX_FAST_NATIVE=1`` is set too.
* Every other ``kernels/*.pyx`` is built once, for the compiler's default target: the ``_cpu``
  helper that reports what the CPU runs and which builds this installation has (it is told
  the list of builds by the macro ``SF_KERNEL_BUILDS``).
* C flags of every module: ``-O3``; OpenMP when the compiler accepts ``-fopenmp`` (checked by
  compiling a tiny program; without it the extensions build serial and this script says so).
* ``SOFTMAX_FAST_SANITIZE=address``: AddressSanitizer and Cython's bounds checks, for the
  bounds-checked test run of CI (never for real use: several times slower).
"""

import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

CYTHON_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "nonecheck": False,
    "embedsignature": True,
    "cpow": True,
}

_HERE = os.path.dirname(os.path.abspath(__file__))
#: The SIMD kernels, compiled once per instruction set as softmax_fast.kernels._softmax_ce_<isa>.
KERNELS_SOURCE = os.path.join("kernels", "_softmax_ce.pyx")
#: Every other kernels/*.pyx becomes softmax_fast.kernels.<stem>, built once (the _cpu helper).
PLAIN_MODULES = [
    (os.path.splitext(name)[0], os.path.join("kernels", name))
    for name in sorted(os.listdir(os.path.join(_HERE, "kernels")))
    if name.endswith(".pyx") and os.path.join("kernels", name) != KERNELS_SOURCE
]

# The x86-64 builds, least first: ISA -> flag sets to try (the first the compiler accepts
# wins): the psABI level by name (gcc >= 11, clang >= 12), else the same features one by one.
_X86_64_V2 = ["-msse3", "-mssse3", "-msse4.1", "-msse4.2", "-mpopcnt", "-mcx16", "-msahf"]
_X86_64_V3 = _X86_64_V2 + ["-mavx", "-mavx2", "-mbmi", "-mbmi2", "-mf16c", "-mfma", "-mlzcnt",
                           "-mmovbe", "-mxsave"]
_X86_64_V4 = _X86_64_V3 + ["-mavx512f", "-mavx512bw", "-mavx512cd", "-mavx512dq", "-mavx512vl"]
# AVX-512: the kernels' own vectors are 512-bit whatever the flags; the compiler's own loop
# vectorisation stays at 256 bits, as -march=native tunes it for every Intel AVX-512 core
# (512-bit code in incidental loops can lower the clock for the code around it).
_AVX512_TUNING = ["-mprefer-vector-width=256"]
X86_64_BUILDS = {
    "baseline": (["-march=x86-64-v2"], _X86_64_V2),
    "avx2": (["-march=x86-64-v3"], _X86_64_V3),
    "avx512": (["-march=x86-64-v4", *_AVX512_TUNING], _X86_64_V4 + _AVX512_TUNING),
}

# Compiled with each build's flags: its widest vectors must compile and assemble.
_SIMD_PROBE = """
typedef float v16f __attribute__((vector_size(64)));
int main(int argc, char **argv) {
    v16f a = {0};
    (void)argv;
    a[0] = (float)argc;
    a = a * a + a;
    return a[0] == 2.0f ? 0 : 1;
}
"""
_X86_64_PROBE = "#ifndef __x86_64__\n#error not x86-64\n#endif\nint main(void){return 0;}\n"


def _compiler_accepts(flags, source="int main(void){return 0;}\n", run=False):
    """Return True if the C compiler compiles and links ``source`` with ``flags`` (and, with
    ``run``, the program exits with 0 on this machine).

    With ``run``, a program that did not build gives None rather than False, so a caller
    can tell "the compiler cannot" from "this CPU cannot" with one compilation.
    """
    cc = os.environ.get("CC", "cc")
    not_built = None if run else False
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = os.path.join(tmp, "probe.c"), os.path.join(tmp, "probe")
        with open(src, "w") as fh:
            fh.write(source)
        try:
            proc = subprocess.run([cc, src, "-o", exe, *flags], capture_output=True,
                                  timeout=60)
        except (OSError, subprocess.SubprocessError):
            return not_built
        if proc.returncode != 0:
            return not_built
        if not run:
            return True
        try:
            return subprocess.run([exe], capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False


def _cpu_runs_level(level):
    """Whether this machine's CPU runs x86-64-v``level`` code (None: the probe did not build).

    Asked only for the sanitized build: it is tested on the machine that builds it, and a
    build this CPU cannot run is only skipped by the tests.
    """
    probe = ("int main(void){__builtin_cpu_init();"
             f"return __builtin_cpu_supports(\"x86-64-v{level}\") ? 0 : 1;}}\n")
    return _compiler_accepts([], probe, run=True)


def _build_flags():
    """Compile and link flags of every module (the instruction set aside)."""
    compile_args = ["-O3", "-fno-math-errno", "-Wno-unreachable-code"]
    link_args = []
    if os.environ.get("SOFTMAX_FAST_SANITIZE") == "address":
        # The bounds-checked build CI runs the contract suite on (see .ci/run): every
        # out-of-bounds access of the kernels aborts with a report instead of passing.
        compile_args += ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"]
        link_args += ["-fsanitize=address"]
    else:
        # A lean wheel: no debug information (Python's own CFLAGS ask for -g), ~3x smaller.
        compile_args.append("-g0")
        if _compiler_accepts(["-Wl,-S"]):
            link_args.append("-Wl,-S")
    omp_probe = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    if _compiler_accepts(["-fopenmp"], omp_probe):
        compile_args.append("-fopenmp")
        link_args.append("-fopenmp")
    else:
        print(
            "softmax-fast: the C compiler has no OpenMP; building the Cython kernels serial "
            "(n_threads is then ignored by the cython backend).",
            file=sys.stderr,
        )
    return compile_args, link_args


def _kernel_builds():
    """[(isa, flags)]: the builds of the SIMD kernels to compile (see the module doc)."""
    portable = os.environ.get("SOFTMAX_FAST_PORTABLE", "0") == "1"  # the default; wins
    if os.environ.get("SOFTMAX_FAST_NATIVE", "0") == "1" and not portable:
        if _compiler_accepts(["-march=native"], _SIMD_PROBE):
            return [("native", ["-march=native"])]
        print("softmax-fast: the C compiler does not accept -march=native; building the "
              "portable modules instead.", file=sys.stderr)
    if not _compiler_accepts([], _X86_64_PROBE):
        return [("baseline", [])]  # aarch64 & co: the compiler's default target
    builds = []
    for isa, alternatives in X86_64_BUILDS.items():
        flags = next((f for f in alternatives if _compiler_accepts(f, _SIMD_PROBE)), None)
        if flags is None:
            print(f"softmax-fast: the C compiler cannot target {alternatives[0][0]}; the "
                  f"{isa} build of the kernels is skipped.", file=sys.stderr)
        else:
            builds.append((isa, flags))
    if os.environ.get("SOFTMAX_FAST_SANITIZE"):
        # AddressSanitizer builds compile slowly (the avx512 one ~70 s) and exist to be tested
        # here: leave out those this CPU cannot run, whose tests would only skip
        levels = {"baseline": 2, "avx2": 3, "avx512": 4}
        builds = [(isa, flags) for isa, flags in builds
                  if _cpu_runs_level(levels[isa]) is not False]
    return builds or [("baseline", [])]


def _directives():
    """Cython directives; ``SOFTMAX_FAST_SANITIZE`` turns Cython's own bounds checks on too."""
    if os.environ.get("SOFTMAX_FAST_SANITIZE"):
        return dict(CYTHON_DIRECTIVES, boundscheck=True, wraparound=True, initializedcheck=True)
    return CYTHON_DIRECTIVES


def _extensions():
    compile_args, link_args = _build_flags()
    builds = _kernel_builds()
    common = dict(
        include_dirs=[np.get_include(), "kernels"],
        extra_link_args=link_args,
        depends=sorted(glob.glob(os.path.join("kernels", "*.h"))
                       + glob.glob(os.path.join("kernels", "*.pxi"))),
    )
    numpy_api = ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")
    exts = []
    for isa, flags in builds:
        # One source, several modules: each build gets its own C file in its own build_dir
        # (Cython writes _softmax_ce.c next to the .pyx otherwise).
        build_dir = os.path.join("build", f"cython-{isa}")
        ext = Extension(f"softmax_fast.kernels._softmax_ce_{isa}", [KERNELS_SOURCE],
                        define_macros=[numpy_api], extra_compile_args=compile_args + flags,
                        **common)
        exts += cythonize([ext], compiler_directives=_directives(), quiet=True, force=True,
                          build_dir=build_dir)
        # Cython also copies the .pxi and .h files next to that C file (only when newer), and
        # the C compiler would read a copy before kernels/: remove them, never a stale header.
        c_dir = os.path.join(build_dir, "kernels")
        for name in os.listdir(c_dir):
            if not name.endswith(".c"):
                os.remove(os.path.join(c_dir, name))
    # What the _cpu helper tells the dispatch: the builds that exist (not stale files).
    built = ("SF_KERNEL_BUILDS", '"' + " ".join(isa for isa, _ in builds) + '"')
    exts += cythonize(
        [Extension(f"softmax_fast.kernels.{name}", [source], define_macros=[numpy_api, built],
                   extra_compile_args=compile_args, **common)
         for name, source in PLAIN_MODULES],
        compiler_directives=_directives(), quiet=True, force=True)
    return exts


def _jobs():
    """Extensions compiled at once: one per core this process may use (the builds are alike)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


setup(
    # every package under softmax_fast/, plus kernels/ installed as softmax_fast.kernels
    packages=find_packages(include=["softmax_fast", "softmax_fast.*"]) + ["softmax_fast.kernels"],
    package_dir={"softmax_fast": "softmax_fast", "softmax_fast.kernels": "kernels"},
    package_data={"softmax_fast.data": ["*.npz"]},
    # the wheel holds the compiled modules, not their sources (those are in the sdist)
    exclude_package_data={"softmax_fast.kernels": ["*.pyx", "*.pxi", "*.pxd", "*.h", "*.c",
                                                   "*.md"]},
    ext_modules=_extensions(),
    options={"build_ext": {"parallel": _jobs()}},
    zip_safe=False,
)
