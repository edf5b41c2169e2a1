"""Style gates wired into the test suite: ruff on Python, cython-lint on the Cython kernels."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tool, *args):
    exe = shutil.which(tool)
    if exe is None:  # both are in the `test` extra, so a missing one is a broken install
        pytest.fail(f"{tool} is not installed; install the test extra: pip install '.[test]'")
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree")
def test_ruff_is_clean():
    proc = _run("ruff", "check", "softmax_fast", "kernels", "tests", "benchmarks", "scripts",
                "setup.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree")
def test_cython_lint_is_clean():
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "kernels").glob("*.p[yx][xi]"))
    sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "kernels").glob("*.pxd"))
    assert sources, "no Cython sources found"
    proc = _run("cython-lint", *sources)
    assert proc.returncode == 0, proc.stdout + proc.stderr
