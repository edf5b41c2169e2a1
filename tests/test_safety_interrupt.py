"""Ctrl-C and a closed pipe, with real processes and real signals.

SIGINT ends a command with exit status 130 and one line saying what was saved, no traceback,
and no partial output file. The tests wait for the command to be mid-run (a progress line, or
results in the results file) before they signal it, rather than sleeping a fixed time.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import SUBPROCESS_CWD

from softmax_fast.cli.guard import EXIT_INTERRUPTED
from softmax_fast.search import read_results

#: Longest a test waits for a command to get mid-run, or to stop after the signal.
WAIT_SECONDS = 120


@pytest.fixture(autouse=True)
def sigint_not_ignored():
    """Commands start as from a terminal, where Ctrl-C is not ignored.

    A shell without job control starts a background job (``pytest &`` in a script) with SIGINT
    ignored, children inherit that across exec, and Python then leaves it ignored: the
    commands would never see the signal these tests send. With a handler here the children
    start with SIGINT's default, as under an interactive shell.
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, previous)


def start(*args, unbuffered=True):
    """``python -m softmax_fast ARGS`` with pipes; unbuffered, so progress shows at once."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # a command that hangs shows where (see interrupt)
    return subprocess.Popen([sys.executable, "-m", "softmax_fast", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=SUBPROCESS_CWD, env=env)


def interrupt(proc):
    """Send SIGINT; (exit status, stdout rest, stderr)."""
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        # SIGABRT: the fault handler prints every thread's Python stack before the end
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        tail = out.splitlines()[-3:]
        pytest.fail(f"still running {WAIT_SECONDS} s after SIGINT; last output {tail}; "
                    f"stderr: {err}")
    return proc.returncode, out, err


def wait_for(predicate, proc, what):
    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the command ended ({proc.returncode}) before {what}: "
                        f"{proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {WAIT_SECONDS} s")
        time.sleep(0.05)


def test_ctrl_c_during_training_saves_nothing_and_says_so(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # --threads 1: the multi-threaded Cython SGD epoch can deadlock in its team barrier when a
    # signal lands mid-epoch (a kernel bug; the watchdog test below covers what the CLI does).
    proc = start("train", "-e", "100000", "--threads", "1", "--out", out / "m.npz",
                 "--plot", out / "plots")
    for line in proc.stdout:  # the epoch table: mid-run once a row is printed
        if line.strip().startswith("2 "):
            break
    else:
        pytest.fail(f"no epoch row: {proc.wait()} {proc.stderr.read()}")
    code, _, err = interrupt(proc)
    assert code == EXIT_INTERRUPTED
    assert err == "softmax-fast: interrupted; nothing was saved\n"
    assert list(out.iterdir()) == []  # no model, no hidden temporary file, no plot folder


#: A command stuck where Ctrl-C never surfaces in Python (as in a deadlocked compiled kernel:
#: here the Python-level handler does nothing, so no KeyboardInterrupt is ever raised) while
#: it writes an output file. argv: OUTPUT, then the CLI's arguments.
STUCK = """
import signal, sys, time
import softmax_fast.cli.guard as guard
from softmax_fast import _io, workflow
from softmax_fast.cli import main

guard.INTERRUPT_GRACE = 1.0

def stuck(*args, **kwargs):
    with _io.atomic_output(sys.argv[1]) as tmp:
        tmp.write_bytes(b"half a model")
        signal.signal(signal.SIGINT, lambda *args: None)
        print("stuck", flush=True)
        time.sleep(120)

workflow.run_training = stuck
main(sys.argv[2:])
"""


def test_ctrl_c_ends_a_command_stuck_in_compiled_code(tmp_path):
    out = tmp_path / "m.npz"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", STUCK, out, "train", "-e", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=SUBPROCESS_CWD, env=env)
    for line in proc.stdout:
        if line.strip() == "stuck":
            break
    started = time.monotonic()
    code, _, err = interrupt(proc)
    assert code == EXIT_INTERRUPTED
    assert err == ("softmax-fast: interrupted; nothing was saved (it did not stop within 1 s "
                   "and was ended)\n")
    assert time.monotonic() - started < 30
    assert list(tmp_path.iterdir()) == []  # the temporary file of the model is gone too


@pytest.fixture(scope="module")
def search_args():
    """A search of 30 equal groups (~0.5 s each): the first rows come long before the end."""
    return ["search", "--batch-size", "64:93:30", "--lr", "0.01,0.1", "--epochs", "60",
            "--threads", "1"]


def test_ctrl_c_during_a_search_keeps_the_results_and_resume_goes_on(tmp_path, search_args):
    results = tmp_path / "grid.csv"
    proc = start(*search_args, "--results", results, "--out", tmp_path / "best.npz")
    wait_for(lambda: results.exists() and len(results.read_text().splitlines()) >= 3, proc,
             "results in the results file")
    code, _, err = interrupt(proc)
    rows = read_results(results)
    assert code == EXIT_INTERRUPTED, err
    assert err == (f"softmax-fast: interrupted; {len(rows)} of 60 results are saved in "
                   f"{results}; --resume continues\n")
    assert 0 < len(rows) < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.csv"]  # no model, no temp
    # --resume takes them as they are: a grid of the finished batch sizes trains nothing.
    done = sorted({row["batch_size"] for row in rows
                   if sum(r["batch_size"] == row["batch_size"] for r in rows) == 2})
    before = results.read_bytes()
    resumed = subprocess.run(
        [sys.executable, "-m", "softmax_fast", *search_args[:2], ",".join(map(str, done)),
         *search_args[3:], "--results", results, "--resume", "--json"],
        capture_output=True, text=True, cwd=SUBPROCESS_CWD, timeout=WAIT_SECONDS)
    assert resumed.returncode == 0, resumed.stderr
    assert results.read_bytes() == before


def test_ctrl_c_during_a_search_without_results_file(search_args):
    proc = start(*search_args)
    for line in proc.stdout:  # "dataset ...: 60 configurations": the search has begun
        if "configurations" in line:
            break
    time.sleep(1.0)  # into the first groups (the line above already proves it started)
    code, _, err = interrupt(proc)
    assert code == EXIT_INTERRUPTED
    assert err == ("softmax-fast: interrupted; nothing was saved (--results FILE keeps the "
                   "results of an interrupted search)\n")


# ============================================================================================
# 13. A reader that goes away: softmax-fast predict ... | head -1
# ============================================================================================
@pytest.fixture(scope="module")
def many_samples(tmp_path_factory):
    """A model and 6,000 samples: --proba output (~600 KB) is far more than a pipe holds."""
    from softmax_fast.datasets import load_dataset
    from softmax_fast.estimator import SoftmaxRegression

    X, y, _, _ = load_dataset("fashion-mnist-sample")
    directory = tmp_path_factory.mktemp("pipe")
    SoftmaxRegression(max_iter=1, input_scale=1 / 255).fit(X, y).save(directory / "m.npz")
    np.save(directory / "x.npy", X)
    return directory


@pytest.mark.parametrize("copies, args", [(1, ["--proba"]), (6, [])], ids=["proba", "labels"])
def test_a_closed_pipe_ends_predict_quietly(many_samples, copies, args):
    # Buffered, as in a shell pipeline (PYTHONUNBUFFERED makes CPython drop the rest of a
    # partial write silently instead). Labels alone: 6 copies of the input (72 KB of output).
    proc = start("predict", many_samples / "m.npz", *[many_samples / "x.npy"] * copies, *args,
                 unbuffered=False)
    # `head -1`, reading as little as it can: what is left (over 64 KB) cannot fit the pipe.
    first = os.read(proc.stdout.fileno(), 16)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=WAIT_SECONDS) == 1
    assert first.strip() and err == ""  # no traceback, no "Exception ignored"


def test_a_pipe_closed_before_any_output(many_samples):
    proc = start("datasets", unbuffered=False)
    proc.stdout.close()  # `softmax-fast datasets | true`
    err = proc.stderr.read()
    assert proc.wait(timeout=WAIT_SECONDS) in (0, 1)
    assert err == ""
