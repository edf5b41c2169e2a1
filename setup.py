"""Build script: compiles the Cython kernels in ``kernels/`` into ``softmax_fast.kernels``.

All compiler settings live here, once:

* Cython directives (``CYTHON_DIRECTIVES``) apply to every ``.pyx`` file.
* C flags: ``-O3`` and, unless ``SOFTMAX_FAST_PORTABLE=1`` is set, ``-march=native`` so the
  inner loops use the machine's widest vectors (AVX2/FMA on x86-64). Set the variable when
  building a wheel that must run on other CPUs.
* OpenMP: used when the compiler accepts ``-fopenmp`` (checked by compiling a tiny program).
  Without it the extensions build serial and this script says so once.
"""

import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

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

# Every kernels/*.pyx becomes softmax_fast.kernels.<stem>.
_HERE = os.path.dirname(os.path.abspath(__file__))
CYTHON_MODULES = [
    (os.path.splitext(name)[0], os.path.join("kernels", name))
    for name in sorted(os.listdir(os.path.join(_HERE, "kernels")))
    if name.endswith(".pyx")
]


def _compiler_accepts(flags, source="int main(void){return 0;}\n"):
    """Return True if the C compiler compiles and links ``source`` with ``flags``."""
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as fh:
            fh.write(source)
        try:
            proc = subprocess.run(
                [cc, src, "-o", os.path.join(tmp, "probe"), *flags],
                capture_output=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError):
            return False
        return proc.returncode == 0


def _build_flags():
    compile_args = ["-O3", "-fno-math-errno", "-Wno-unreachable-code"]
    link_args = []
    if os.environ.get("SOFTMAX_FAST_PORTABLE", "0") != "1" and _compiler_accepts(["-march=native"]):
        compile_args.append("-march=native")
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


def _extensions():
    compile_args, link_args = _build_flags()
    exts = [
        Extension(
            f"softmax_fast.kernels.{name}",
            [source],
            include_dirs=[np.get_include(), "kernels"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            depends=sorted(glob.glob(os.path.join("kernels", "*.h"))),
        )
        for name, source in CYTHON_MODULES
    ]
    return cythonize(exts, compiler_directives=CYTHON_DIRECTIVES, quiet=True)


setup(
    packages=["softmax_fast", "softmax_fast.kernels", "softmax_fast.data"],
    package_dir={"softmax_fast": "softmax_fast", "softmax_fast.kernels": "kernels"},
    package_data={"softmax_fast.data": ["*.npz"], "softmax_fast.kernels": ["*.pxd", "*.pyx", "*.h"]},
    ext_modules=_extensions(),
    zip_safe=False,
)
