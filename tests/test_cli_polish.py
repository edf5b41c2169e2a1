"""The command line as people meet it: one test (or a few) per finding of the CLI issue.

Label columns of CSV files, plots and L-BFGS progress, models that remember their data,
``predict``'s output and inputs, one meaning of ``--json`` / ``-q`` / ``--names``, the grid
search's table and progress, one name per figure, the numba compile notice, and the
regularization path (``train --alphas``). Kept fast: small problems, a few epochs.
"""

import json
import re
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner

from softmax_fast import datasets, workflow
from softmax_fast.cli import cli
from softmax_fast.cli import common as cli_common
from softmax_fast.estimator import SoftmaxRegression

SPECIES = ("setosa", "versicolor", "virginica")


def run(*args, **kwargs):
    """Invoke the CLI in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="softmax-fast", **kwargs)


def assert_one_line_error(result, code, *words):
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    err = result.stderr
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("softmax-fast: error: ")
    for word in words:
        assert word in err, err


def ok(result):
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 3-class, 4-feature problem as CSV files with the label column in various places."""
    directory = tmp_path_factory.mktemp("polish")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    rows = [",".join(f"{v:.4f}" for v in x) for x in X]
    names = [SPECIES[k] for k in y]
    (directory / "iris.csv").write_text(
        "a,b,c,d,Species\n" + "".join(f"{r},{n}\n" for r, n in zip(rows, names, strict=True)))
    (directory / "last.csv").write_text(  # no header, the labels last: the rule must ask
        "".join(f"{r},{n}\n" for r, n in zip(rows, names, strict=True)))
    (directory / "target.csv").write_text(
        "TARGET,a,b,c,d\n" + "".join(f"{k},{r}\n" for r, k in zip(rows, y, strict=True)))
    (directory / "two.csv").write_text(  # two columns named like labels: which one?
        "label,a,b,c,class\n" + "".join(f"{k},{x[0]:.4f},{x[1]:.4f},{x[2]:.4f},{k}\n"
                                         for x, k in zip(X, y, strict=True)))
    np.savez(directory / "small.npz", X=X, y=y)
    (directory / "features.csv").write_text("a,b,c,d\n" + "".join(f"{r}\n" for r in rows[:5]))
    return directory, X, y


# ============================================================================================
# 3. CSV label column
# ============================================================================================
def test_csv_label_column_is_found_by_name_or_asked_for(files):
    directory, X, y = files
    X_read, labels = datasets.load_file(directory / "iris.csv")
    assert X_read.shape == (240, 4) and set(labels) == set(SPECIES)  # Species, any case
    X_read, labels = datasets.load_file(directory / "target.csv")
    np.testing.assert_allclose(X_read, X, atol=1e-4)
    assert labels.tolist() == y.tolist()
    with pytest.raises(ValueError, match=r"last\.csv: cannot tell which column holds the class "
                                         r"labels.*column 4 holds text.*--label-column"):
        datasets.load_file(directory / "last.csv")
    X_read, labels = datasets.load_file(directory / "last.csv", label_column=-1)
    assert X_read.shape == (240, 4) and labels[0] in SPECIES
    with pytest.raises(ValueError, match="several columns may hold the class labels"):
        datasets.load_file(directory / "two.csv")
    assert datasets.load_file(directory / "two.csv", label_column="CLASS")[0].shape[1] == 4


def test_cli_label_column_option(files, tmp_path):
    directory, _, _ = files
    data = json.loads(ok(run("train", "-d", directory / "iris.csv", "-e", "1", "--json")).stdout)
    assert data["n_features"] == 4
    assert_one_line_error(run("train", "-d", directory / "last.csv", "-e", "1"), 1,
                          "last.csv", "--label-column")
    model = tmp_path / "m.npz"
    data = json.loads(ok(run("train", "-d", directory / "last.csv", "-e", "1", "--label-column",
                             "4", "--json", "--out", model)).stdout)
    assert data["n_features"] == 4
    # predict leaves the label column out: by the recorded index, or as told.
    out = ok(run("predict", model, directory / "last.csv")).stdout.split()
    assert len(out) == 240 and set(out) <= set(SPECIES)
    assert ok(run("predict", model, directory / "iris.csv", "--label-column", "species")).stdout \
        .split() == out
    assert_one_line_error(run("train", "-d", directory / "small.npz", "--label-column", "0"), 2,
                          "--label-column", "CSV")


# ============================================================================================
# 4. Plots and L-BFGS
# ============================================================================================
def test_plot_without_matplotlib_fails_before_training(files, tmp_path, monkeypatch):
    directory, _, _ = files
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(workflow, "run_training",
                        lambda *a, **k: pytest.fail("trained before checking matplotlib"))
    plots = tmp_path / "plots"
    for command in (["train", "-d", directory / "small.npz"],
                    ["search", "--lr", "0.1,0.2", "--alpha", "0,1", "--plot", tmp_path / "h.png"]):
        args = command + (["--plot", plots] if command[0] == "train" else [])
        result = run(*args)
        assert_one_line_error(result, 1, "--plot needs matplotlib", "pip install")
        assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_lbfgs_shows_iterations_and_plots_its_curve(files, tmp_path):
    directory, _, _ = files
    result = ok(run("train", "-d", directory / "small.npz", "--solver", "lbfgs",
                    "--plot", tmp_path))
    assert "iteration  train_loss" in result.stdout
    assert re.search(r"^\s+10\s+\d", result.stdout, re.MULTILINE)  # every tenth iteration
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads(ok(run("train", "-d", directory / "small.npz", "--solver", "lbfgs",
                             "--json")).stdout)
    assert data["stop_reason"] == "converged"
    assert [r["iteration"] for r in data["iterations"]] == \
        list(range(1, data["epochs_run"] + 1))


def test_lbfgs_help_example_converges():
    help_text = ok(run("train", "--help")).stdout
    example = next(line for line in help_text.splitlines() if "--solver lbfgs --alpha " in line)
    args = example.split("#")[0].split()[2:]  # after "softmax-fast train"
    result = ok(run("train", *args, "--json"))
    assert json.loads(result.stdout)["stop_reason"] == "converged", example
    assert result.stderr == ""


def test_non_convergence_names_the_option(files):
    directory, _, _ = files
    result = ok(run("train", "-d", directory / "small.npz", "--solver", "lbfgs", "-e", "2",
                    "-q"))
    assert "raise --epochs" in result.stderr and "max_iter" not in result.stderr


# ============================================================================================
# 5. Models remember their data
# ============================================================================================
def test_evaluate_defaults_to_the_recorded_test_data(files, tmp_path):
    directory, _, _ = files
    model = tmp_path / "m.npz"
    trained = json.loads(ok(run("train", "-d", directory / "iris.csv", "-e", "3", "--seed", "4",
                                "--test-fraction", "0.25", "--out", model, "--json")).stdout)
    meta = SoftmaxRegression.load(model).file_metadata_
    assert meta["dataset"] == str(directory / "iris.csv") and meta["label_column"] == "Species"
    scored = json.loads(ok(run("evaluate", model, "--json")).stdout)
    assert scored["n_samples"] == trained["n_test"] == 60
    assert scored["accuracy"] == pytest.approx(trained["test_accuracy"])
    # with --test: that file
    ok(run("train", "-d", directory / "iris.csv", "--test", directory / "last.csv",
           "--label-column", "-1", "-e", "1", "--out", model, "-q"))
    assert json.loads(ok(run("evaluate", model, "--json")).stdout)["data"] == \
        str(directory / "last.csv")


def test_evaluate_named_dataset_and_models_without_a_record(files, tmp_path):
    directory, X, y = files
    model = tmp_path / "m.npz"
    ok(run("train", "-e", "1", "--out", model, "-q"))
    result = ok(run("evaluate", model))
    assert result.stdout.startswith("fashion-mnist-sample test split: 1000 samples")
    bare = tmp_path / "bare.npz"
    SoftmaxRegression(max_iter=1).fit(X, y).save(bare)
    assert_one_line_error(run("evaluate", bare), 2, "no record of its training data", "-d")
    moved = tmp_path / "moved.csv"
    moved.write_bytes((directory / "iris.csv").read_bytes())
    ok(run("train", "-d", moved, "-e", "1", "--out", model, "-q"))
    moved.unlink()
    assert_one_line_error(run("evaluate", model), 1, "moved.csv", "no such file")


# ============================================================================================
# 6. predict: names, svmlight, stdin, several files
# ============================================================================================
@pytest.fixture(scope="module")
def fashion_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("fashion") / "model.npz"
    ok(run("train", "-e", "2", "--out", path, "-q"))
    X_test = datasets.load_dataset("fashion-mnist-sample")[2][:4]
    return path, X_test, SoftmaxRegression.load(path).predict(X_test)


def test_predict_prints_class_names(fashion_model, tmp_path):
    from softmax_fast.plots import FASHION_MNIST_CLASSES

    model, X, labels = fashion_model
    np.save(tmp_path / "x.npy", X)
    out = ok(run("predict", model, tmp_path / "x.npy")).stdout.splitlines()
    assert out == [FASHION_MNIST_CLASSES[k] for k in labels]
    proba = ok(run("predict", model, tmp_path / "x.npy", "--proba")).stdout.splitlines()
    assert proba[0].split(",") == list(FASHION_MNIST_CLASSES)
    ok(run("predict", model, tmp_path / "x.npy", "--out", tmp_path / "p.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), labels)  # .npy: labels


def test_predict_reads_svmlight_stdin_and_names_files(fashion_model, tmp_path):
    from sklearn.datasets import dump_svmlight_file

    model, X, labels = fashion_model
    expected = ok(run("predict", model, *[], "-", input=_npy_bytes(X))).stdout.splitlines()
    assert len(expected) == 4
    dump_svmlight_file(X.astype(float), labels, str(tmp_path / "x.svm"))
    assert ok(run("predict", model, tmp_path / "x.svm")).stdout.splitlines() == expected
    csv_text = "\n".join(",".join(map(str, row)) for row in X) + "\n"
    assert ok(run("predict", model, "-", input=csv_text)).stdout.splitlines() == expected
    np.save(tmp_path / "two.npy", X[:2])
    lines = ok(run("predict", model, "-", tmp_path / "two.npy", input=_npy_bytes(X))) \
        .stdout.splitlines()
    assert lines[0] == "file,class"
    assert lines[1:] == [f"-,{e}" for e in expected] + \
        [f"{tmp_path / 'two.npy'},{e}" for e in expected[:2]]
    assert_one_line_error(run("predict", model, "-", "-", input=b""), 1, "once")
    assert_one_line_error(run("predict", model, "-", input=b""), 1, "standard input is empty")


def _npy_bytes(X):
    import io

    buffer = io.BytesIO()
    np.save(buffer, X)
    return buffer.getvalue()


def test_names_mean_the_same_in_every_command(files, tmp_path):
    directory, X, _ = files
    model = tmp_path / "m.npz"
    ok(run("train", "-d", directory / "small.npz", "-e", "2", "--names", "low,mid,high", "--out",
           model, "-q"))
    assert "high" in ok(run("evaluate", model)).stdout  # recorded in the model
    np.save(tmp_path / "x.npy", X[:5])
    assert set(ok(run("predict", model, tmp_path / "x.npy")).stdout.split()) <= \
        {"low", "mid", "high"}
    names_file = tmp_path / "names.txt"
    names_file.write_text("A\nB\nC\n")
    assert set(ok(run("predict", model, tmp_path / "x.npy", "--names", names_file)).stdout
               .split()) <= {"A", "B", "C"}
    assert_one_line_error(run("evaluate", model, "--names", "a,b"), 2, "--names",
                          "2 names for 3 classes")


# ============================================================================================
# 7. --json, -q
# ============================================================================================
JSON_COMMANDS = [["train"], ["evaluate"], ["search"], ["bench"], ["datasets", "list"],
                 ["datasets", "download"]]


@pytest.mark.parametrize("command", JSON_COMMANDS, ids=" ".join)
def test_json_is_one_flag_with_one_meaning(command):
    group = cli
    for name in command:
        group = group.commands[name]
    option = next(p for p in group.params if "--json" in p.opts)
    assert option.is_flag
    assert "Print one JSON object with the results on stdout and nothing else" in option.help
    quiet = next(p for p in group.params if "--quiet" in p.opts) \
        if command != ["datasets", "list"] else None
    assert quiet is None or quiet.opts == ["--quiet", "-q"]


def test_evaluate_and_predict_take_quiet(fashion_model, tmp_path):
    model, X, _ = fashion_model
    np.save(tmp_path / "x.npy", X)
    assert ok(run("predict", model, tmp_path / "x.npy", "-q")).stdout.count("\n") == 4
    assert "cost" in ok(run("evaluate", model, "-q")).stdout


def test_json_lists_the_files_written(files, tmp_path):
    directory, _, _ = files
    data = json.loads(ok(run("train", "-d", directory / "small.npz", "-e", "1", "--json",
                             "--out", tmp_path / "m.npz", "--plot", tmp_path / "p")).stdout)
    assert data["files"] == [str(tmp_path / "m.npz")] + data["plots"]
    assert data["model"] == str(tmp_path / "m.npz")
    data = json.loads(ok(run("datasets", "download", "fashion-mnist-sample", "--json")).stdout)
    assert data["downloaded"] is False and data["files"] == []


# ============================================================================================
# 8. search output and progress
# ============================================================================================
SEARCH = ["search", "--backend", "reference", "--epochs", "1", "--alpha", "0"]


def test_search_table_columns_fit_their_values_and_counts_are_words(files, tmp_path):
    directory, _, _ = files
    results = tmp_path / "grid.csv"
    out = ok(run(*SEARCH, "-d", directory / "small.npz", "--lr", "1e-3:1e-1:4log",
                 "--results", results)).stdout.splitlines()
    table = out[out.index(next(line for line in out if line.lstrip().startswith("batch"))):][:5]
    assert len({len(line) for line in table}) == 1, table  # every row as wide as the header
    assert "0.0215443" in "\n".join(table)
    one = ok(run(*SEARCH, "-d", directory / "small.npz", "--lr", "0.1")).stdout
    assert "1 configuration " in one and "1 configurations" not in one
    again = ok(run(*SEARCH, "-d", directory / "small.npz", "--lr", "1e-3:1e-1:4log",
                   "--results", results, "--resume")).stdout
    assert f"all 4 results reused from {results}; nothing to train" in again


def test_search_progress_moves_per_epoch(files, monkeypatch):
    from softmax_fast.cli.search_progress import SearchProgress, planned_epochs
    from softmax_fast.search import grid_search

    directory, X, y = files
    grid = {"batch_size": [32], "learning_rate_init": [0.01, 0.1], "max_iter": [2, 4],
            "alpha": [0.0], "momentum": [0.0]}
    assert planned_epochs(grid) == 4  # one group of two models, 4 epochs
    ticks = []
    monkeypatch.setattr(SearchProgress, "_tick", lambda self: ticks.append(1))
    with SearchProgress(grid, "reference", enabled=True) as progress:
        grid_search(X, y, grid, backend="reference", random_state=0, progress=progress,
                    refit=False, on_epoch=progress.on_epoch)
    assert len(ticks) == 4


# ============================================================================================
# 9. One name per figure
# ============================================================================================
def test_the_epoch_table_speaks_json(files):
    directory, _, _ = files
    out = ok(run("train", "-d", directory / "small.npz", "-e", "1")).stdout
    header = next(line for line in out.splitlines() if line.lstrip().startswith("epoch"))
    assert header.split()[:4] == ["epoch", "train_loss", "val_loss", "val_accuracy"]
    assert "objective" not in out


# ============================================================================================
# 10. The numba compile notice
# ============================================================================================
def test_numba_cold_cache_is_detected(tmp_path, monkeypatch):
    import numba  # noqa: F401  (a dependency / the test extra: never skipped)
    (tmp_path / "sf_cold_probe.py").write_text(
        "from numba import njit\n\n@njit(cache=True)\ndef twice(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli_common.numba_cache_is_cold("sf_cold_probe", "twice")
    assert sys.modules["sf_cold_probe"].twice(2) == 4
    assert not cli_common.numba_cache_is_cold("sf_cold_probe", "twice")
    assert not cli_common.numba_cache_is_cold("sf_cold_probe", "no_such_function")


def test_numba_notice_once_on_a_terminal_and_never_quiet(monkeypatch):
    monkeypatch.setattr(cli_common, "numba_cache_is_cold", lambda *a: True)
    monkeypatch.setattr(cli_common, "show_progress", lambda quiet: not quiet)

    @click.command()
    @click.option("-q", "quiet", is_flag=True)
    def probe(quiet):
        for _ in range(2):
            cli_common.note_numba_compile("dense", "numba", "sgd", quiet)
        cli_common.note_numba_compile("dense", "cython", "sgd", quiet)

    result = CliRunner().invoke(probe, [])
    assert result.stderr == "compiling the numba kernels (once, ~10 s)…\n"
    assert CliRunner().invoke(probe, ["-q"]).stderr == ""


# ============================================================================================
# The regularization path: train --alphas
# ============================================================================================
def test_train_alphas_runs_the_path_and_plots_it(files, tmp_path):
    directory, _, _ = files
    result = ok(run("train", "-d", directory / "small.npz", "--alphas", "1e-4:1e-1:4log",
                    "--plot", tmp_path / "p", "--out", tmp_path / "m.npz"))
    assert "regularization path" in result.stdout and "chosen alpha" in result.stdout
    assert (tmp_path / "p" / "path.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads(ok(run("train", "-d", directory / "small.npz", "--alphas",
                             "1e-4:1e-1:4log", "--json")).stdout)
    assert [r["alpha"] for r in data["path"]] == pytest.approx([1e-1, 1e-2, 1e-3, 1e-4])
    assert data["alpha"] in [r["alpha"] for r in data["path"]]
    best = max(data["path"], key=lambda r: r["val_accuracy"])
    assert data["validation_accuracy"] == pytest.approx(best["val_accuracy"])
    model = SoftmaxRegression.load(tmp_path / "m.npz")
    assert model.alpha == data["alpha"] and model.solver == "lbfgs"


def test_nearly_equal_strengths_still_iterate(files):
    # The second strength starts at the first's optimum, already inside the absolute
    # gradient tolerance; the path still asks each strength to reach its own optimum, so it
    # iterates instead of repeating the first model with "n_iter 0".
    directory, _, _ = files
    out = ok(run("train", "-d", directory / "small.npz", "--alphas", "1e-2,1.000001e-2",
                 "-e", "2000")).stdout
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("0.01")]
    assert len(rows) == 2 and all(int(row[3]) > 0 for row in rows), out


def test_alphas_is_for_lbfgs_alone(files):
    directory, _, _ = files
    assert_one_line_error(run("train", "--solver", "sgd", "--alphas", "1e-3,1e-2"), 2,
                          "--alphas", "--solver lbfgs")
    assert_one_line_error(run("train", "--alpha", "1e-3", "--alphas", "1e-3,1e-2"), 2,
                          "--alpha")
    assert_one_line_error(run("train", "--alphas", "0:1:3log"), 2, "--alphas")
