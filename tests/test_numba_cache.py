"""A Numba kernel gives the same bits in the process that compiles it and in every process
that loads it from Numba's cache.

They ran different machine code: a freshly compiled kernel calls its helpers' own compiled
copies, a kernel loaded from the cache the copies inside its cached object, which LLVM
optimised again in the kernel's module. A sum that LLVM may reassociate was vectorised
differently in the two, and the loss came out an ulp apart (``_numba_math._ce_sum``). The
README's "bitwise identical for any rerun" needs both kinds of process to agree, so this test
runs ``numba_cache_probe.py`` on an empty cache directory (everything compiled), then again on
the same directory (everything loaded), and compares every output bit for bit.
"""

import os
import pathlib
import subprocess
import sys

import numpy as np

PROBE = pathlib.Path(__file__).with_name("numba_cache_probe.py")


def _run_probe(out, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    proc = subprocess.run([sys.executable, str(PROBE), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr


def _cache_files(cache_dir):
    return sorted(p.name for p in pathlib.Path(cache_dir).rglob("*.nb[ic]"))


def test_compiled_and_cached_kernels_give_the_same_bits(tmp_path):
    cache_dir = tmp_path / "numba-cache"
    _run_probe(tmp_path / "compiled.npz", cache_dir)
    compiled_files = _cache_files(cache_dir)
    assert any("_softmax_ce_kernel" in f for f in compiled_files)
    assert any("_linear_kernel" in f for f in compiled_files)
    assert any("_sgd_kernel" in f for f in compiled_files)
    _run_probe(tmp_path / "cached.npz", cache_dir)
    # the second process compiled nothing: it loaded every kernel
    assert _cache_files(cache_dir) == compiled_files

    compiled = np.load(tmp_path / "compiled.npz")
    cached = np.load(tmp_path / "cached.npz")
    assert sorted(compiled.files) == sorted(cached.files)
    differ = [k for k in compiled.files if not np.array_equal(compiled[k], cached[k])]
    assert not differ, f"compiled and cached kernels differ in {differ}"
