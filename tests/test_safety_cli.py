"""Careless and hostile command lines: every error is one line, found before any work is done.

Usage errors (exit 2) and other errors (exit 1) are exactly one line on stderr; warnings never
come before an error; output paths are checked before data is loaded; the grid search refuses
an existing results file, oversized grids, and reports a failed cluster in one line.
"""

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_cli import SEARCH_ARGS, assert_one_line_error, run

from softmax_fast.cli.guard import EXIT_USAGE

# ============================================================================================
# 6. One line for every usage error
# ============================================================================================
USAGE_ERRORS = [
    (["train", "--lr", "x"], "--lr: 'x' is not a number (see softmax-fast train --help)"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--batch-size", "abc"], "--batch-size"),
    (["train", "--schedule", "nope"], "--schedule"),
    (["train", "--backend", "gpu"], "--backend"),
    (["train", "--nosuch"], "--nosuch"),
    (["trian"], "No such command 'trian'"),
    (["predict"], "Missing argument 'MODEL'"),
    (["predict", "m.npz"], "Missing argument 'INPUT...'"),
    (["evaluate"], "Missing argument 'MODEL'"),
    (["datasets", "download"], "Missing argument 'NAME'"),
    (["datasets", "download", "mnist"], "NAME"),
    (["search", "--lr", "1:2"], "--lr"),
    (["search", "--top", "-1"], "--top"),
    (["bench", "--repeats", "0"], "--repeats"),
    (["train", "--epochs", "9" * 5000], "--epochs"),  # beyond Python's int() digit limit
    (["train", "--epochs", "99999999999999999999"], "--epochs"),  # beyond int64: no overflow
]


@pytest.mark.parametrize("args, words", USAGE_ERRORS, ids=lambda a: " ".join(a)[:40])
def test_usage_errors_are_one_line(args, words):
    result = run(*args)
    assert_one_line_error(result, EXIT_USAGE, words)
    assert "Usage:" not in result.stderr and "Try " not in result.stderr


def test_help_and_a_bare_group_still_show_the_help():
    result = run("train", "--help")
    assert result.exit_code == 0 and result.stdout.startswith("Usage: softmax-fast train")
    bare = run()
    assert "Commands:" in bare.stdout + bare.stderr  # Click's help for a missing command


# ============================================================================================
# 7. Numeric options: seeds, NaN and infinity
# ============================================================================================
def test_a_negative_seed_blames_the_seed():
    assert_one_line_error(run("train", "--seed", "-1", "-e", "1"), 2, "--seed",
                          "0<=x<=4294967295")
    assert_one_line_error(run("search", "--seed", str(2**32)), 2, "--seed")
    assert "val-fraction" not in run("train", "--seed", "-1").stderr


NUMERIC_OPTIONS = {
    "train": ["--lr", "--alpha", "--momentum", "--val-fraction", "--test-fraction", "--epochs",
              "--batch-size", "--patience", "--seed", "--threads"],
    "search": ["--lr", "--alpha", "--momentum", "--batch-size", "--epochs", "--val-fraction",
               "--test-fraction", "--seed", "--threads", "--top", "--max-configurations"],
    "predict": ["--threads"],
    "evaluate": ["--threads"],
    "bench": ["--repeats", "--threads"],
}
#: What a command needs besides the option to get as far as checking it.
POSITIONAL = {"predict": ["m.npz", "x.npy"], "evaluate": ["m.npz"]}


@pytest.mark.parametrize("command, option", [(c, o) for c, options in NUMERIC_OPTIONS.items()
                                             for o in options])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_every_numeric_option_refuses_nan_and_infinity(command, option, value):
    result = run(command, *POSITIONAL.get(command, []), f"{option}={value}")
    assert_one_line_error(result, EXIT_USAGE, option)


# ============================================================================================
# 8. Warnings never come before an error
# ============================================================================================
@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """small.npz (3 classes, 5 features) and other_labels.npz (the same with classes 5-7)."""
    directory = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    np.savez(directory / "small.npz", X=X, y=y)
    np.savez(directory / "other_labels.npz", X=X, y=y + 5)
    return directory


def test_warnings_are_printed_after_a_success(small):
    result = run("train", "-d", small / "small.npz", "--solver", "lbfgs", "-e", "1")
    assert result.exit_code == 0, result.stderr
    assert "test accuracy" in result.stdout
    assert result.stderr.startswith("softmax-fast: warning: ")
    assert "converge" in result.stderr


def test_warnings_are_folded_into_the_one_error_line(small):
    # L-BFGS stops short (a warning), then the test data has labels it never saw (an error).
    result = run("train", "-d", small / "small.npz", "--test", small / "other_labels.npz",
                 "--solver", "lbfgs", "-e", "1")
    assert_one_line_error(result, 1, "never seen", "after warning", "converge")


def test_python_warnings_are_held_too(small, monkeypatch):
    from softmax_fast import workflow

    real = workflow.run_training

    def noisy(*args, **kwargs):
        warnings.warn("first thing", RuntimeWarning, stacklevel=1)
        warnings.warn("second thing", UserWarning, stacklevel=1)
        return real(*args, **kwargs)

    def failing(*args, **kwargs):
        warnings.warn("first thing", RuntimeWarning, stacklevel=1)
        raise ValueError("it broke")

    monkeypatch.setattr(workflow, "run_training", noisy)
    result = run("train", "-d", small / "small.npz", "-e", "1")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == ["softmax-fast: warning: RuntimeWarning: first thing",
                                          "softmax-fast: warning: UserWarning: second thing"]
    monkeypatch.setattr(workflow, "run_training", failing)
    assert_one_line_error(run("train", "-d", small / "small.npz", "-e", "1"), 1,
                          "it broke (after warning: RuntimeWarning: first thing)")


# ============================================================================================
# 9. Output paths are checked before anything is loaded or trained
# ============================================================================================
@pytest.fixture
def unwritable(tmp_path):
    """A folder nobody may write in, not even root (tests run as root in CI)."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    for folder in (Path("/sys"), Path("/proc")):  # read-only even for root
        try:
            fd, probe = tempfile.mkstemp(dir=folder)
        except OSError:
            yield folder
            return
        os.close(fd)
        os.unlink(probe)
    pytest.skip("no folder here is unwritable for root")


@pytest.fixture
def no_work(monkeypatch):
    """Make loading data, a model or benchmarking fail loudly: the checks must come first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the output paths were checked")

    monkeypatch.setattr("softmax_fast.datasets.load_dataset", forbidden)
    monkeypatch.setattr("softmax_fast.datasets.load_file", forbidden)
    monkeypatch.setattr("softmax_fast.cli.predict.load_model", forbidden)
    monkeypatch.setattr("softmax_fast.cli.evaluate.load_model", forbidden)
    monkeypatch.setattr("softmax_fast.bench.run_benchmark", forbidden)


@pytest.mark.parametrize("args, option, name", [
    (["train", "--out", "{}/m.npz"], "--out", "m.npz"),
    (["train", "--plot", "{}/plots"], "--plot", "plots"),
    (["search", "--results", "{}/r.csv"], "--results", "r.csv"),
    (["search", "--out", "{}/best.npz"], "--out", "best.npz"),
    (["search", "--lr", "0.1,0.2", "--alpha", "0,1e-4", "--plot", "{}/h.png"], "--plot",
     "h.png"),
    (["predict", "m.npz", "x.npy", "--out", "{}/p.csv"], "--out", "p.csv"),
    (["evaluate", "m.npz", "--plot", "{}/plots"], "--plot", "plots"),
])
def test_unwritable_outputs_fail_first_naming_the_users_path(unwritable, no_work, args, option,
                                                              name):
    result = run(*[a.format(unwritable) for a in args])
    assert_one_line_error(result, EXIT_USAGE, option, f"{unwritable}/{name}", "not writable")
    assert f".{name}." not in result.stderr  # never the hidden temporary file


def test_outputs_never_replace_inputs_or_special_files(small, tmp_path, no_work):
    data = small / "small.npz"
    before = data.read_bytes()
    assert_one_line_error(run("train", "-d", data, "--out", data), 2, "--out", "--dataset")
    assert_one_line_error(run("train", "--out", "/dev/null"), 2, "not a regular file")
    assert Path("/dev/null").is_char_device()
    np.save(tmp_path / "x.npy", np.zeros((1, 784)))
    assert_one_line_error(run("predict", "m.npz", tmp_path / "x.npy", "--out",
                              tmp_path / "x.npy"), 2, "--out", "INPUT")
    assert_one_line_error(run("search", "--out", tmp_path / "r.csv", "--results",
                              tmp_path / "r.csv"), 2, "same file")
    assert_one_line_error(run("train", "--out", tmp_path), 2, "--out")
    assert data.read_bytes() == before


def test_a_failed_run_leaves_no_plot_folder(small, tmp_path):
    plots = tmp_path / "new" / "plots"
    result = run("train", "-d", small / "small.npz", "--lr", "1e100", "-e", "3", "--plot", plots)
    assert_one_line_error(result, 1, "diverged")
    assert not (tmp_path / "new").exists()


def test_atomic_output_errors_name_the_users_file(tmp_path, monkeypatch):
    from softmax_fast._io import atomic_output

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".m.npz.x1y2"))

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(PermissionError) as caught, atomic_output(tmp_path / "m.npz"):
        pass
    assert str(caught.value) == f"{tmp_path / 'm.npz'}: cannot write it: Permission denied"


# ============================================================================================
# 10. search: an existing results file, oversized grids
# ============================================================================================
def test_an_existing_results_file_needs_resume_or_overwrite(tmp_path):
    results = tmp_path / "grid.csv"
    assert run(*SEARCH_ARGS, "--results", results).exit_code == 0
    before = results.read_bytes()
    assert_one_line_error(run(*SEARCH_ARGS, "--results", results), 2, "--results",
                          "exists: --resume continues it, --overwrite replaces it")
    assert_one_line_error(run(*SEARCH_ARGS, "--results", results, "--resume", "--overwrite"),
                          2, "--resume", "--overwrite")
    assert_one_line_error(run(*SEARCH_ARGS, "--overwrite"), 2, "--overwrite needs --results")
    assert results.read_bytes() == before
    result = run(*SEARCH_ARGS, "--results", results, "--overwrite", "--alpha", "0")
    assert result.exit_code == 0, result.stderr
    assert len(results.read_text().splitlines()) == 1 + 2  # replaced by the new grid's rows


def test_resuming_a_file_that_is_not_ours_is_one_line_and_touches_nothing(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("a,b,label\n1,2,0\n3,4,1\n")
    before = data.read_bytes()
    assert_one_line_error(run(*SEARCH_ARGS, "--results", data, "--resume"), 1, "data.csv",
                          "not a results file")
    assert data.read_bytes() == before


def test_oversized_grids_fail_before_anything_is_made(no_work):
    assert_one_line_error(run("search", "--lr", "0.1:1:100000000"), 2, "--lr",
                          "at most 10,000 points per range")
    assert_one_line_error(run("search", "--lr", "0.1:1:" + "9" * 5000), 2, "--lr")
    assert_one_line_error(run("search", "--lr", "0.1:1:6000,0.1:1:6000"), 2, "12,000 values")
    assert_one_line_error(run("search", "--lr", "0.01:0.1:1000", "--epochs", "1:1000:1000"), 2,
                          "1,000,000 configurations", "1,000 lr x 1,000 epochs",
                          "--max-configurations 100,000")
    assert_one_line_error(run("search", "--lr", "0.1,0.2", "--alpha", "0,1",
                              "--max-configurations", "3"), 2, "4 configurations")


def test_max_configurations_reaches_grid_search(tmp_path, monkeypatch):
    import softmax_fast.search as search

    seen = {}

    def fake(*args, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(search, "grid_search", fake)
    run("search", "--max-configurations", "7", "--results", tmp_path / "r.csv", "--overwrite")
    assert seen["max_configurations"] == 7 and seen["overwrite"] is True


# ============================================================================================
# 11. A failed Dask cluster or scheduler
# ============================================================================================
def test_a_failed_cluster_says_what_was_saved_in_one_line(tmp_path, monkeypatch):
    from softmax_fast.search import SearchInterrupted, read_results, runners
    from softmax_fast.search import api as search_api

    def first_group_then_fail(tasks, data, n_threads, collect, on_epoch=None):
        collect(runners.run_group(tasks[0], *data, n_threads=1))
        raise SearchInterrupted("the Dask cluster failed (CommClosedError: in <TCP>:\nclosed)")

    monkeypatch.setattr(search_api, "run_local", first_group_then_fail)
    results = tmp_path / "grid.csv"
    result = run(*SEARCH_ARGS, "--batch-size", "16,32", "--results", results)
    n_saved = len(read_results(results))
    assert 0 < n_saved < 8
    assert_one_line_error(result, 1, "the Dask cluster failed",
                          f"{n_saved} of 8 results are saved in {results}", "--resume continues")
    assert "resume=True" not in result.stderr


def test_an_unreachable_scheduler_is_one_line(monkeypatch):
    import distributed  # noqa: F401  (a dependency / the test extra: never skipped)

    from softmax_fast.search import runners

    monkeypatch.setattr(runners, "DASK_CONNECT_TIMEOUT", 1)
    result = run(*SEARCH_ARGS, "--dask", "tcp://127.0.0.1:9")  # discard port: refused
    assert_one_line_error(result, 1, "cannot connect to a Dask scheduler at tcp://127.0.0.1:9")


# ============================================================================================
# Whatever else goes wrong: one line, the traceback with --debug
# ============================================================================================
def test_an_unexpected_exception_is_one_line_and_debug_shows_it(small, monkeypatch):
    from softmax_fast import workflow

    def bug(*args, **kwargs):
        raise KeyError("history")

    monkeypatch.setattr(workflow, "run_training", bug)
    assert_one_line_error(run("train", "-d", small / "small.npz"), 1, "unexpected KeyError",
                          "--debug")
    result = run("--debug", "train", "-d", small / "small.npz")
    assert result.exit_code == 1 and isinstance(result.exception, KeyError)

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(workflow, "run_training", no_memory)
    assert_one_line_error(run("train", "-d", small / "small.npz"), 1, "out of memory")


def test_json_output_is_unchanged_by_held_warnings(small):
    result = run("train", "-d", small / "small.npz", "--solver", "lbfgs", "-e", "1", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["epochs_run"] >= 1
