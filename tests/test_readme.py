"""The README's command-line session runs as shown.

Every ``$ softmax-fast ...`` line of the README's "Command line" block is run, in order, in a
fresh process (``python -m softmax_fast``, the installed program) in one working directory, so
``model.npz`` from ``train`` is what ``evaluate`` and ``predict`` read. The output lines the
README shows must appear, in order, in the command's output, with

* ``...`` lines standing for any number of lines and ``...`` inside a line for any text,
* times (``1.4ms``, ``0.15s``) and absolute paths free,
* numbers equal to 2 % (a different SIMD build rounds differently; one prediction of the
  1,000-image sample test set moves an accuracy by 0.001),

and the exit status 0 — or, for a command the README shows failing, 1 or 2 with the error
line shown.
"""

import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
TIME = re.compile(r"^\d+(\.\d+)?(ms|s|us|µs)$")
NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _session():
    """[(argv, expected output lines)] of the README's command-line block."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Command line", 1)[1]
    block = section.split("```text", 1)[1].split("```", 1)[0]
    session = []
    for line in block.strip("\n").splitlines():
        if line.startswith("$ softmax-fast"):
            command = line[2:].split("  #", 1)[0]  # a trailing comment explains the command
            session.append((shlex.split(command)[1:], []))
        else:
            session[-1][1].append(line)
    return session


def _tokens_match(expected, actual):
    if "..." in expected:
        pattern = ".*".join(re.escape(part) for part in expected.split("..."))
        return re.fullmatch(pattern, actual) is not None
    if TIME.match(expected) and TIME.match(actual):
        return True
    if expected.startswith("/") and actual.startswith("/"):
        return True
    if NUMBER.match(expected.rstrip(",")) and NUMBER.match(actual.rstrip(",")):
        a, b = float(expected.rstrip(",")), float(actual.rstrip(","))
        return math.isclose(a, b, rel_tol=0.02, abs_tol=2e-3)
    return expected == actual


def _line_matches(expected, actual):
    if "..." in expected and " " not in expected.replace("...", ""):
        return True
    exp, act = expected.split(), actual.split()
    if len(exp) != len(act):
        if "..." in expected:
            pattern = ".*".join(re.escape(part) for part in expected.split("..."))
            return re.fullmatch(pattern, actual.strip()) is not None
        return False
    return all(_tokens_match(e, a) for e, a in zip(exp, act, strict=True))


def _assert_shown(expected_lines, output, argv):
    """Every shown line in order in ``output`` (a subsequence; ``...`` lines skip)."""
    actual = output.splitlines()
    position = 0
    for expected in expected_lines:
        if expected.strip() == "...":
            continue
        for index in range(position, len(actual)):
            if _line_matches(expected, actual[index]):
                position = index + 1
                break
        else:
            raise AssertionError(
                f"softmax-fast {shlex.join(argv)}: README line {expected!r} not in output:\n"
                + output)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory with ``shoe.png``: an ankle boot of the bundled sample's test split."""
    from PIL import Image

    from softmax_fast import load_dataset

    directory = tmp_path_factory.mktemp("readme")
    _, _, X_test, y_test = load_dataset("fashion-mnist-sample")
    boot = X_test[np.flatnonzero(y_test == 9)[0]].reshape(28, 28)
    Image.fromarray(boot, mode="L").save(directory / "shoe.png")
    return directory


def test_the_readme_session_is_parsed():
    session = _session()
    commands = [argv[0] for argv, _ in session]
    assert {"datasets", "train", "evaluate", "predict", "search", "bench"} <= set(commands)
    assert any(lines for _, lines in session)


@pytest.mark.slow
def test_readme_command_line_session_runs_as_shown(workdir):
    for argv, expected in _session():
        done = subprocess.run([sys.executable, "-m", "softmax_fast", *argv], cwd=workdir,
                              capture_output=True, text=True, timeout=600)
        output = done.stdout + done.stderr
        shows_error = any(line.startswith("softmax-fast: error:") for line in expected)
        if shows_error:
            assert done.returncode in (1, 2), (argv, output)
            assert "Traceback" not in output
        else:
            assert done.returncode == 0, (argv, output)
        _assert_shown(expected, output, argv)
