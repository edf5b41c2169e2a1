"""The ``softmax-fast`` command line: every command in-process (CliRunner) and as a subprocess.

Kept fast (well under a minute): the bundled sample, 1-2 epochs, tiny grids, ``bench --quick``
with the reference backend and one repeat.
"""

import json
import os
import subprocess
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SUBPROCESS_CWD

from softmax_fast._io import atomic_output, read_inputs
from softmax_fast.cli import cli
from softmax_fast.cli.options import GridValues
from softmax_fast.datasets import load_dataset
from softmax_fast.estimator import SoftmaxRegression

COMMANDS = [["train"], ["evaluate"], ["predict"], ["search"], ["bench"], ["datasets"],
            ["datasets", "list"], ["datasets", "download"], []]


def run(*args, **kwargs):
    """Invoke the CLI in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="softmax-fast", **kwargs)


def run_subprocess(*args, cwd=SUBPROCESS_CWD, timeout=120):
    return subprocess.run([sys.executable, "-m", "softmax_fast", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout)


def assert_one_line_error(result, code, *words):
    """Exit status ``code`` and exactly one line on stderr (usage errors too) with ``words``."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.endswith("\n"), err
    assert err.startswith("softmax-fast: error: ")
    if code == 2:
        assert err.rstrip().endswith("--help)"), err  # where the help is
    for word in words:
        assert word in err, err


@pytest.fixture(scope="module")
def sample():
    return load_dataset("fashion-mnist-sample")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, sample):
    X, y, _, _ = sample
    model = SoftmaxRegression(max_iter=2, input_scale=1 / 255, random_state=0).fit(X, y)
    path = tmp_path_factory.mktemp("model") / "model.npz"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    """A 3-class, 5-feature problem as .npz and .csv, plus a NaN copy and other labels."""
    directory = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    np.savez(directory / "small.npz", X=X, y=y)
    np.savez(directory / "other_labels.npz", X=X, y=y + 5)
    X_nan = X.copy()
    X_nan[3, 2] = np.nan
    np.savez(directory / "nan.npz", X=X_nan, y=y)
    lines = ["a,b,c,d,e,label"] + [",".join(map(str, row)) + f",{label}"
                                   for row, label in zip(X, y, strict=True)]
    (directory / "small.csv").write_text("\n".join(lines) + "\n")
    return directory


# ----------------------------------------------------------------------------------- help
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "main")
def test_every_help_has_examples(command):
    result = run(*command, "--help")
    assert result.exit_code == 0, result.stdout
    assert "Examples:" in result.stdout
    assert "softmax-fast" in result.stdout.split("Examples:")[1]


def test_help_mentions_shell_completion():
    assert "_SOFTMAX_FAST_COMPLETE=bash_source softmax-fast" in run("--help").stdout


def test_cli_module_imports_nothing_heavy():
    code = ("import sys, softmax_fast.cli; "
            "print([m for m in ('numpy', 'sklearn', 'scipy', 'softmax_fast.estimator', "
            "'matplotlib') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=SUBPROCESS_CWD)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_shell_completion_completes_commands():
    env = dict(os.environ, _SOFTMAX_FAST_COMPLETE="bash_complete",
               COMP_WORDS="softmax-fast tr", COMP_CWORD="1")
    proc = subprocess.run([sys.executable, "-m", "softmax_fast"], env=env, capture_output=True,
                          text=True, timeout=60, cwd=SUBPROCESS_CWD)
    assert proc.stdout.split() == ["plain,train"]


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and "softmax-fast" in result.stdout


def test_backend_choices_come_from_the_registry():
    from softmax_fast.backends import backend_names
    from softmax_fast.cli.options import BACKENDS, BENCH_BACKENDS

    assert BACKENDS == ("auto", *backend_names())
    assert BENCH_BACKENDS == backend_names("dense")
    assert "auto|cython|numba|reference" in run("train", "--help").stdout.replace(" ", "")


def test_download_bars_draw_one_bar_per_file(capsys):
    from softmax_fast.cli.common import DownloadBars

    with DownloadBars() as progress:
        for name in ("a.gz", "b.gz"):
            for done in (0, 50, 100):
                progress(done, 100, name)
        progress(10, None, "c.gz")  # no length: no bar
    err = capsys.readouterr().err
    assert "Downloading a.gz" in err and "Downloading b.gz" in err and "c.gz" not in err


# ----------------------------------------------------------------------------------- grids
@pytest.mark.parametrize("text, kind, expected", [
    ("1e-3,1e-2,1e-1", float, [1e-3, 1e-2, 1e-1]),
    ("1e-3:1e-1:3log", float, [1e-3, 1e-2, 1e-1]),
    ("5:40:8", int, [5, 10, 15, 20, 25, 30, 35, 40]),
    ("0:1:3", float, [0.0, 0.5, 1.0]),
    ("16,32,16", int, [16, 32]),
    ("0.1", float, [0.1]),
    ("0,1e-4:1e-2:3log", float, [0.0, 1e-4, 1e-3, 1e-2]),
])
def test_grid_values(text, kind, expected):
    assert GridValues(kind, minimum=0).convert(text, None, None) == pytest.approx(expected)


@pytest.mark.parametrize("text, kind", [
    ("a,b", float), ("1:2", float), ("0:1:3log", float), ("1:2:0", float), ("1.5", int),
    ("-1", float), ("1,,2", float), ("nan", float),
])
def test_grid_values_rejects(text, kind):
    with pytest.raises(click.BadParameter):
        GridValues(kind, minimum=0).convert(text, None, None)


# ----------------------------------------------------------------------------------- train
def test_train_sample_prints_table_and_test_result(tmp_path):
    result = run("train", "-e", "2", "--out", tmp_path / "m.npz", "--plot", tmp_path / "plots")
    assert result.exit_code == 0, result.stdout + result.stderr
    out = result.stdout
    assert "epoch" in out and "val_loss" in out and "val_acc" in out
    assert "    1 " in out and "    2 " in out
    assert "test cost" in out and "test accuracy" in out
    # Not a terminal: no progress bar (stderr holds at most the warnings after success).
    assert all(line.startswith("softmax-fast: warning: ")
               for line in result.stderr.splitlines()), result.stderr
    model = SoftmaxRegression.load(tmp_path / "m.npz")
    assert model.input_scale == pytest.approx(1 / 255) and model.n_iter_ == 2
    for name in ("curves.png", "weights.png", "confusion.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_train_json_is_the_only_stdout(sample):
    result = run("train", "-e", "2", "--json", "--seed", "3")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["n_train"] + data["n_validation"] == len(sample[1])
    assert data["n_test"] == len(sample[3])
    assert len(data["history"]) == 2 and 0 < data["test_accuracy"] <= 1
    assert data["params"]["input_scale"] == pytest.approx(1 / 255)
    # The test cost is the unregularised cross-entropy of the saved-equivalent model.
    assert data["test_cost"] > 0


def test_train_retrain_on_full_and_early_stopping():
    result = run("train", "-e", "4", "--early-stopping", "--patience", "1", "--retrain-on-full",
                 "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    best_epoch = min(data["history"], key=lambda r: r["val_loss"])["epoch"]
    assert data["retrained"]["epochs"] == best_epoch
    assert data["retrained"]["n_samples"] == data["n_train"] + data["n_validation"]


def test_train_lbfgs_schedule_momentum(small_files):
    result = run("train", "-d", small_files / "small.npz", "--solver", "lbfgs", "-e", "50")
    assert result.exit_code == 0, result.stdout
    assert "L-BFGS" in result.stdout and "test accuracy" in result.stdout
    result = run("train", "-d", small_files / "small.npz", "--schedule", "constant",
                 "--momentum", "0.9", "-e", "2", "--json")
    data = json.loads(result.stdout)
    assert data["params"]["learning_rate"] == "constant" and data["params"]["momentum"] == 0.9
    assert [r["learning_rate"] for r in data["history"]] == [0.1, 0.1]


def test_train_on_files_holds_out_or_takes_test_file(small_files):
    data = json.loads(run("train", "-d", small_files / "small.csv", "-e", "2", "--json",
                          "--test-fraction", "0.25").stdout)
    assert data["n_test"] == 75 and data["n_features"] == 5
    data = json.loads(run("train", "-d", small_files / "small.npz", "--test",
                          small_files / "small.csv", "-e", "2", "--json").stdout)
    assert data["n_test"] == 300 and data["n_train"] + data["n_validation"] == 300


@pytest.mark.parametrize("args, code, words", [
    (["-d", "nosuch"], 2, ["unknown dataset", "fashion-mnist"]),
    (["-d", "nosuch.npz"], 1, ["nosuch.npz", "no such file"]),
    (["--lr", "-1"], 2, ["--lr"]),
    (["--val-fraction", "1.5"], 2, ["--val-fraction"]),
    (["--solver", "lbfgs", "--early-stopping"], 2, ["--early-stopping"]),
    (["--test", "x.npz"], 2, ["--test"]),
    (["--out", "no/such/dir/m.npz"], 2, ["--out", "does not exist"]),
    (["--backend", "gpu"], 2, ["--backend"]),
])
def test_train_usage_and_file_errors(args, code, words):
    assert_one_line_error(run("train", "-e", "1", *args), code, *words)


def test_train_nan_data_and_divergence(small_files):
    assert_one_line_error(run("train", "-d", small_files / "nan.npz"), 1, "NaN", "nan.npz")
    assert_one_line_error(run("train", "-d", small_files / "small.npz", "--lr", "1e100", "-e",
                              "3"), 1, "diverged", "--lr")


def test_debug_shows_the_exception(small_files):
    result = run("--debug", "train", "-d", small_files / "small.npz", "--lr", "1e100", "-e", "3")
    assert result.exit_code == 1
    assert isinstance(result.exception, FloatingPointError)


def test_failed_train_leaves_no_model_file(small_files, tmp_path):
    out = tmp_path / "m.npz"
    run("train", "-d", small_files / "small.npz", "--lr", "1e100", "-e", "3", "--out", out)
    assert list(tmp_path.iterdir()) == []


def test_train_subprocess(tmp_path):
    proc = run_subprocess("train", "-e", "2", "--json", "--out", tmp_path / "m.npz")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == str(tmp_path / "m.npz")
    proc = run_subprocess("train", "-d", "nosuch.npz")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


# ----------------------------------------------------------------------------------- evaluate
def test_evaluate_reports_metrics(model_path, sample, tmp_path):
    # model_path was saved without a record of its data: -d is needed (test_cli_polish.py).
    result = run("evaluate", model_path, "-d", "fashion-mnist-sample", "--plot", tmp_path)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "precision" in result.stdout and "recall" in result.stdout
    assert "Ankle boot" in result.stdout and "confusion matrix" in result.stdout
    assert (tmp_path / "confusion.png").exists() and (tmp_path / "weights.png").exists()
    data = json.loads(run("evaluate", model_path, "-d", "fashion-mnist-sample", "--json").stdout)
    model = SoftmaxRegression.load(model_path)
    X_test, y_test = sample[2], sample[3]
    assert data["accuracy"] == pytest.approx(model.score(X_test, y_test))
    log_p = model.predict_log_proba(X_test)
    assert data["cost"] == pytest.approx(-log_p[np.arange(len(y_test)), y_test].mean(),
                                         rel=1e-5)
    matrix = np.array(data["confusion_matrix"])
    assert matrix.sum() == len(y_test) and np.trace(matrix) == round(data["accuracy"] * 1000)
    assert sum(r["support"] for r in data["per_class"]) == len(y_test)


def test_evaluate_errors(model_path, small_files, tmp_path):
    assert_one_line_error(run("evaluate", model_path, "-d", small_files / "small.npz"), 1,
                          "5 features", "784")
    assert_one_line_error(run("evaluate", tmp_path / "none.npz"), 1, "no such model file")
    assert_one_line_error(run("evaluate", small_files / "small.npz"), 1, "small.npz")
    assert_one_line_error(run("evaluate", model_path, "-d", "nosuch"), 2, "unknown dataset")
    three = tmp_path / "three.npz"
    assert run("train", "-d", small_files / "small.npz", "-e", "1", "--out", three).exit_code \
        == 0
    assert_one_line_error(run("evaluate", three, "-d", small_files / "other_labels.npz"), 1,
                          "never seen", "5, 6, 7")


def test_evaluate_subprocess(model_path):
    proc = run_subprocess("evaluate", model_path, "-d", "fashion-mnist-sample", "--json")
    assert proc.returncode == 0, proc.stderr
    assert 0 < json.loads(proc.stdout)["accuracy"] <= 1


# ----------------------------------------------------------------------------------- predict
@pytest.fixture(scope="module")
def images(tmp_path_factory, sample):
    from PIL import Image

    directory = tmp_path_factory.mktemp("images")
    X_test = sample[2]
    paths = []
    for i in range(3):
        paths.append(directory / f"img{i}.png")
        Image.fromarray(X_test[i].reshape(28, 28)).save(paths[-1])
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(directory / "big.png")
    Image.fromarray(np.stack([X_test[0].reshape(28, 28)] * 3, axis=-1)).save(
        directory / "rgb.png")
    return directory, paths


def test_predict_images_match_the_model(model_path, sample, images):
    directory, paths = images
    result = run("predict", model_path, *paths)
    assert result.exit_code == 0, result.stderr
    model = SoftmaxRegression.load(model_path)
    expected = model.predict(sample[2][:3])
    # Several inputs: a header, then each row names its file.
    lines = result.stdout.splitlines()
    assert lines[0] == "file,class"
    assert lines[1:] == [f"{path},{v}" for path, v in zip(paths, expected, strict=True)]
    rgb = run("predict", model_path, directory / "rgb.png").stdout.split()
    assert rgb == [str(expected[0])]


def test_predict_proba_and_formats(model_path, sample, tmp_path):
    X = sample[2][:4]
    np.save(tmp_path / "x.npy", X)
    np.savez(tmp_path / "x.npz", X=X)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",", fmt="%d")
    idx = tmp_path / "x-idx3-ubyte"
    idx.write_bytes(b"\x00\x00\x08\x03" + np.array([4, 28, 28], ">i4").tobytes() + X.tobytes())
    model = SoftmaxRegression.load(model_path)
    result = run("predict", model_path, tmp_path / "x.npy", "--proba")
    lines = result.stdout.strip().splitlines()
    assert lines[0] == ",".join(str(c) for c in model.classes_)
    proba = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-4)
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("\n".join([",".join(["label"] + [f"p{i}" for i in range(784)])]
                                  + [",".join(map(str, [9, *row])) for row in X]) + "\n")
    for name in ("x.npz", "x.csv", idx.name, labelled.name):
        out = run("predict", model_path, tmp_path / name)
        assert out.stdout.split() == [str(v) for v in model.predict(X)], name
    assert run("predict", model_path, tmp_path / "x.npy", "--out", tmp_path / "p.npy") \
        .exit_code == 0
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), model.predict(X))
    run("predict", model_path, tmp_path / "x.npy", "--out", tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().split() == [str(v) for v in model.predict(X)]


def test_predict_errors_leave_no_output(model_path, images, tmp_path):
    directory, _ = images
    out = tmp_path / "out.csv"
    assert_one_line_error(run("predict", model_path, directory / "big.png", "--out", out), 1,
                          "32x32", "784")
    bad = np.zeros((2, 784))
    bad[1, 5] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert_one_line_error(run("predict", model_path, tmp_path / "nan.npy", "--out", out), 1,
                          "NaN")
    assert_one_line_error(run("predict", model_path, tmp_path / "none.npy"), 1, "no such file")
    np.save(tmp_path / "narrow.npy", np.zeros((2, 5)))
    assert_one_line_error(run("predict", model_path, tmp_path / "narrow.npy"), 1,
                          "5 features", "784")
    assert_one_line_error(run("predict", model_path, tmp_path / "nan.npy", "--out", "p.xyz"),
                          2, "--out")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.npy", "narrow.npy"]


def test_predict_images_without_pillow(model_path, images, monkeypatch):
    _, paths = images
    monkeypatch.setitem(sys.modules, "PIL", None)
    assert_one_line_error(run("predict", model_path, paths[0]), 1, "Pillow", "pip install")


def test_predict_subprocess(model_path, images):
    _, paths = images
    proc = run_subprocess("predict", model_path, paths[0])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(SoftmaxRegression.load(model_path)
                                      .predict(read_inputs([paths[0]], 784))[0])


# ----------------------------------------------------------------------------------- search
SEARCH_ARGS = ["search", "--backend", "reference", "--lr", "0.01,0.1", "--alpha", "0,1e-4",
               "--epochs", "1"]


def test_search_results_resume_plot(tmp_path):
    # Fails (does not skip) when softmax_fast.search is missing: the command must work.
    results = tmp_path / "grid.csv"
    heat = tmp_path / "heat.png"
    result = run(*SEARCH_ARGS, "--results", results, "--plot", heat, "--out", tmp_path / "b.npz")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "best:" in result.stdout and "test accuracy" in result.stdout
    assert len(results.read_text().strip().splitlines()) == 1 + 4
    assert heat.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SoftmaxRegression.load(tmp_path / "b.npz").n_features_in_ == 784
    first = json.loads(run(*SEARCH_ARGS, "--results", results, "--resume", "--json").stdout)
    assert len(first["results"]) == 4
    assert len(results.read_text().strip().splitlines()) == 1 + 4  # nothing re-run
    assert first["best_params"]["learning_rate_init"] in (0.01, 0.1)
    assert first["test_accuracy"] is not None


def test_search_usage_errors(tmp_path):
    assert_one_line_error(run("search", "--resume"), 2, "--results")
    assert_one_line_error(run("search", "--lr", "1e-3:1e-1"), 2, "--lr")
    assert_one_line_error(run("search", "--epochs", "1.5"), 2, "--epochs")
    assert_one_line_error(run("search", "--plot", tmp_path / "h.png"), 2, "two hyperparameters")
    assert_one_line_error(run("search", "--plot-axes", "lr,lr"), 2, "--plot-axes")
    assert_one_line_error(run("search", "--results", tmp_path / "r.txt"), 2, "--results")


def test_search_subprocess():
    proc = run_subprocess(*SEARCH_ARGS, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["n_configurations"] == 4
    assert {r["status"] for r in data["results"]} == {"ok"}


# ----------------------------------------------------------------------------------- bench
def test_bench_quick(tmp_path):
    # --json is a flag on every command: the report on stdout, and nothing else.
    result = run("bench", "--quick", "--backend", "reference", "--repeats", "1", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    tasks = {(r["task"], r["implementation"]) for r in report["results"]}
    assert {("kernel", "softmax-fast reference"), ("epoch", "softmax-fast reference"),
            ("lbfgs", "softmax-fast reference")} <= tasks
    assert any(i.startswith("scikit-learn") for _, i in tasks)
    assert report["floor"]["gemm_flops"] > 1e8 and report["floor"]["copy_bytes_per_s"] > 1e8
    for r in report["results"]:
        assert r["seconds"] > 0
        if r["implementation"] == "softmax-fast reference":
            assert r["vs_reference"] == 1.0
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "torch" in report["skipped"]


def test_bench_subprocess():
    proc = run_subprocess("bench", "--quick", "--backend", "reference", "--repeats", "1")
    assert proc.returncode == 0, proc.stderr
    assert "one SGD epoch" in proc.stdout and "speedup" in proc.stdout


# ----------------------------------------------------------------------------------- datasets
def test_datasets_list_and_json():
    result = run("datasets")
    assert result.exit_code == 0
    assert "fashion-mnist-sample" in result.stdout and "bundled" in result.stdout
    data = json.loads(run("datasets", "list", "--json").stdout)
    by_name = {d["name"]: d for d in data["datasets"]}
    assert by_name["fashion-mnist-sample"]["available"] is True
    assert by_name["fashion-mnist-sample"]["size_bytes"] > 0


def test_datasets_download_bundled_needs_no_network():
    result = run("datasets", "download", "fashion-mnist-sample")
    assert result.exit_code == 0 and "already available" in result.stdout
    assert_one_line_error(run("datasets", "download", "mnist"), 2, "NAME", "fashion-mnist")


def test_datasets_download_failure_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("SOFTMAX_FAST_MIRROR", "http://127.0.0.1:9/")  # discard port: refused
    monkeypatch.delenv("SOFTMAX_FAST_DATA", raising=False)
    result = run("datasets", "download", "fashion-mnist", "--force", "-q")
    assert_one_line_error(result, 1, "Could not download")
    assert not list((tmp_path / "softmax-fast").glob("*.gz"))


def test_datasets_subprocess():
    proc = run_subprocess("datasets")
    assert proc.returncode == 0 and "fashion-mnist-sample" in proc.stdout


# ----------------------------------------------------------------------------------- helpers
def test_atomic_output_removes_the_temporary_file_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done" and list(tmp_path.iterdir()) == [target]


def test_atomic_output_honours_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o640
