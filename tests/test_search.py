"""Tests of the many-models-per-pass grid search and its multi-model kernel."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from softmax_fast import SoftmaxRegression
from softmax_fast.search import METRIC_KEYS, grid_search


def _blobs(n=600, d=20, c=4, seed=0, uint8=True):
    """Separable-ish class clusters; uint8 pixels like Fashion-MNIST or float32."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    centers = rng.uniform(0, 1, (c, d))
    X = centers[y] + 0.35 * rng.standard_normal((n, d))
    if uint8:
        return np.clip(X * 255, 0, 255).astype(np.uint8), y
    return X.astype(np.float32), y


# --------------------------------------------------------------------------------------
# grid_search against SoftmaxRegression trained alone
# --------------------------------------------------------------------------------------
def _alone(params, X_tr, y_tr, X_va, y_va, random_state):
    est = SoftmaxRegression(**{"learning_rate": "constant", **params}, solver="sgd",
                            random_state=random_state, input_scale=1 / 255,
                            backend="reference")
    return est.fit(X_tr, y_tr, eval_set=(X_va, y_va))


def _split_like_search(X, y, fraction, random_state):
    from sklearn.model_selection import train_test_split

    tr, va = train_test_split(np.arange(len(y)), test_size=fraction, stratify=y,
                              random_state=random_state)
    tr.sort()
    va.sort()
    return X[tr], y[tr], X[va], y[va]


def _check_row_against_alone(row, est, n_val):
    assert row["status"] == "ok"
    assert row["n_iter"] == est.n_iter_
    assert row["val_loss"] == pytest.approx(est.history_[-1]["val_loss"], rel=1e-4)
    # an argmax may flip on a near tie in float32: at most one validation sample
    assert abs(row["val_accuracy"] - est.history_[-1]["val_accuracy"]) <= 1.0 / n_val + 1e-12
    assert row["train_loss"] == pytest.approx(est.loss_curve_[-1], rel=1e-4)


def test_grid_equals_each_configuration_trained_alone():
    X, y = _blobs(n=500, d=16, c=3)
    grid = {"batch_size": [8, 50], "learning_rate_init": [0.05, 0.5], "alpha": [0.0, 1e-2],
            "max_iter": [1, 3]}
    result = grid_search(X, y, grid, random_state=4, validation_fraction=0.25, refit=False)
    assert len(result.results) == 16
    X_tr, y_tr, X_va, y_va = _split_like_search(X, y, 0.25, 4)
    for row in result.results:
        params = {k: row[k] for k in ("batch_size", "learning_rate_init", "alpha", "max_iter")}
        est = _alone(params, X_tr, y_tr, X_va, y_va, 4)
        _check_row_against_alone(row, est, len(y_va))


def test_schedules_momentum_and_stopping_rule_follow_the_estimator():
    X, y = _blobs(n=300, d=12, c=3, seed=5)
    X_va, y_va = _blobs(n=90, d=12, c=3, seed=6)
    # tol=0.05 with n_iter_no_change=2 stops some runs early: later checkpoints must then
    # report the stopped weights and the epochs actually run, as a lone fit does
    grid = [
        {"learning_rate": ["step", "invscaling", "adaptive"], "learning_rate_init": [0.3],
         "max_iter": [3, 8], "tol": [0.05], "n_iter_no_change": [2], "batch_size": [20]},
        {"momentum": [0.5, 0.9], "nesterovs_momentum": [False, True], "alpha": [1e-3],
         "max_iter": [2, 4], "batch_size": [20], "learning_rate_init": [0.05]},
        {"init": ["random"], "max_iter": [2], "batch_size": [20]},
    ]
    result = grid_search(X, y, grid, X_val=X_va, y_val=y_va, random_state=9, refit=False)
    assert len(result.results) == 6 + 8 + 1
    stopped = 0
    for row in result.results:
        params = {k: row[k] for k in row if k not in METRIC_KEYS}
        est = _alone(params, X, y, X_va, y_va, 9)
        _check_row_against_alone(row, est, len(y_va))
        stopped += row["n_iter"] < row["max_iter"]
    assert stopped > 0


def test_reference_backend_agrees_with_the_numba_kernel():
    X, y = _blobs(n=240, d=10, c=3)
    grid = {"batch_size": [16], "learning_rate_init": [0.1, 1.0], "alpha": [0.0, 0.05],
            "momentum": [0.0, 0.8], "max_iter": [2]}
    fast = grid_search(X, y, grid, random_state=0, backend="numba", refit=False)
    slow = grid_search(X, y, grid, random_state=0, backend="reference", refit=False)
    assert slow.backend == "reference" and fast.backend == "numba"
    for a, b in zip(fast.results, slow.results, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_a_backend_without_multi_model_kernels_uses_the_auto_choice():
    X, y = _blobs(n=200, d=10, c=3)
    grid = {"batch_size": [16], "learning_rate_init": [0.1, 1.0], "max_iter": [2]}
    auto = grid_search(X, y, grid, random_state=0, refit=False)
    other = grid_search(X, y, grid, random_state=0, backend="cython", refit=True)
    assert other.backend == auto.backend
    assert other.best_estimator_.backend == "cython"  # the refit uses the dense cython kernels
    for a, b in zip(auto.results, other.results, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == \
            {k: v for k, v in b.items() if k != "seconds"}


def _without_seconds(row):
    return {k: v for k, v in row.items() if k != "seconds"}


def test_rows_do_not_depend_on_their_group():
    """A chaotic and a stable configuration: alone, then inside a 64-model group, bitwise."""
    X, y = _blobs(n=400, d=24, c=5, seed=3)
    chaotic = {"batch_size": [4], "learning_rate_init": [1.0], "alpha": [1e-3],
               "max_iter": [1, 3]}
    stable = {"batch_size": [4], "learning_rate_init": [0.05], "alpha": [0.0],
              "max_iter": [1, 3]}
    alone = [grid_search(X, y, g, random_state=1, refit=False).results
             for g in (chaotic, stable)]
    crowd = {"batch_size": [4], "learning_rate_init": [1.0, 0.05, 0.3, 3.0, 0.01, 2.0, 0.7, 0.1],
             "alpha": [1e-3, 0.0, 1e-4, 0.1], "momentum": [0.0, 0.9], "max_iter": [1, 3]}
    grouped = grid_search(X, y, crowd, random_state=1, refit=False, max_group_size=64,
                          n_threads=2).results
    assert len(grouped) == 128
    index = {(r["learning_rate_init"], r["alpha"], r["momentum"], r["max_iter"]): r
             for r in grouped}
    for rows in alone:
        for row in rows:
            key = (row["learning_rate_init"], row["alpha"], row["momentum"], row["max_iter"])
            assert _without_seconds(index[key]) == _without_seconds(row)


def test_threads_do_not_change_results():
    X, y = _blobs(n=300, d=10, c=3)
    grid = {"batch_size": [8, 16, 64], "learning_rate_init": [0.1, 0.3], "max_iter": [1, 2]}
    one = grid_search(X, y, grid, random_state=2, n_threads=1, refit=False)
    two = grid_search(X, y, grid, random_state=2, n_threads=2, refit=False, max_group_size=1)
    for a, b in zip(one.results, two.results, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == \
            {k: v for k, v in b.items() if k != "seconds"}


# --------------------------------------------------------------------------------------
# divergence
# --------------------------------------------------------------------------------------
def test_diverged_configurations_are_recorded_and_do_not_disturb_others():
    X, y = _blobs(n=200, d=8, c=3, uint8=False)
    X = X * np.float32(1e18)  # big inputs: a large step overflows float32 within an epoch
    grid = {"batch_size": [10], "learning_rate_init": [1e-38, 1e-36, 1e4], "max_iter": [1, 3]}
    result = grid_search(X, y, grid, random_state=0, refit=False)
    by_lr = {}
    for row in result.results:
        by_lr.setdefault(row["learning_rate_init"], []).append(row)
    assert all(r["status"] == "diverged" for r in by_lr[1e4])
    assert all(r["val_loss"] is None and r["val_accuracy"] is None for r in by_lr[1e4])
    assert by_lr[1e4][0]["n_iter"] == 1
    assert all(r["status"] == "ok" for lr in (1e-38, 1e-36) for r in by_lr[lr])
    alone = grid_search(X, y, {**grid, "learning_rate_init": [1e-38, 1e-36]}, random_state=0,
                        refit=False)
    kept = [r for r in result.results if r["learning_rate_init"] != 1e4]
    for a, b in zip(kept, alone.results, strict=True):
        assert a["val_loss"] == b["val_loss"]
        assert a["val_accuracy"] == b["val_accuracy"]


def test_all_diverged_gives_no_best():
    X, y = _blobs(n=100, d=8, c=3, uint8=False)
    result = grid_search(X * np.float32(1e18), y, {"learning_rate_init": [1e4], "max_iter": [2]},
                         random_state=0)
    assert result.results[0]["status"] == "diverged"
    assert result.best_params_ is None and result.best_estimator_ is None


# --------------------------------------------------------------------------------------
# best estimator, scoring, validation data
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("scoring", ["accuracy", "loss"])
def test_best_params_refit_and_test_metrics(scoring):
    X, y = _blobs(n=400, d=12, c=3)
    X_te, y_te = _blobs(n=150, d=12, c=3, seed=11)
    labels = np.array(["cat", "dog", "emu"])
    grid = {"learning_rate_init": [0.01, 0.3], "alpha": [0.0, 0.3], "max_iter": [1, 4]}
    result = grid_search(X, labels[y], grid, X_test=X_te, y_test=labels[y_te],
                         scoring=scoring, random_state=3)
    key = "val_accuracy" if scoring == "accuracy" else "val_loss"
    values = [r[key] for r in result.results]
    best = max(values) if scoring == "accuracy" else min(values)
    assert result.best_score_ == best
    assert result.results[result.best_index_][key] == best
    est = result.best_estimator_
    for name, value in result.best_params_.items():
        assert est.get_params()[name] == value
    assert est.learning_rate == "constant" and est.random_state == 3
    assert est.n_features_in_ == 12 and len(est.coef_) == 3
    # refitted on train + validation = all 400 rows
    assert est.t_ == 400 * result.best_params_["max_iter"]
    assert result.test_accuracy == pytest.approx(est.score(X_te, labels[y_te]))
    assert result.test_loss == pytest.approx(-np.mean(
        np.log(est.predict_proba(X_te)[np.arange(150), y_te].astype(np.float64))), rel=1e-5)


def test_random_state_none_is_drawn_and_reported():
    X, y = _blobs(n=200, d=8, c=3)
    grid = {"max_iter": [1]}
    first = grid_search(X, y, grid, refit=False)
    again = grid_search(X, y, grid, random_state=first.random_state, refit=False)
    assert first.results[0]["val_loss"] == again.results[0]["val_loss"]


def test_float_input_uses_unit_scale_and_input_scale_is_honoured():
    X, y = _blobs(n=200, d=8, c=3)
    grid = {"max_iter": [2]}
    a = grid_search(X, y, grid, random_state=1, refit=False)
    b = grid_search(X.astype(np.float32) / 255, y, grid, random_state=1, refit=False)
    c = grid_search(X.astype(np.float64), y, grid, random_state=1, input_scale=1 / 255,
                    refit=False)
    assert a.results[0]["val_loss"] == pytest.approx(b.results[0]["val_loss"], rel=1e-5)
    assert a.results[0]["val_loss"] == pytest.approx(c.results[0]["val_loss"], rel=1e-5)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"param_grid": {"colour": [1]}}, ValueError, "unknown grid parameter"),
    ({"param_grid": {"batch_size": [0]}}, ValueError, "batch_size"),
    ({"param_grid": {"learning_rate_init": [-1.0]}}, ValueError, "learning_rate_init"),
    ({"scoring": "f1"}, ValueError, "scoring"),
    ({"backend": "fortran"}, ValueError, "backend"),
    ({"X_val": np.zeros((3, 8), np.uint8)}, ValueError, "y_val"),
    ({"X_val": np.zeros((3, 5), np.uint8), "y_val": [0, 1, 2]}, ValueError, "features"),
    ({"X_val": np.zeros((1, 8), np.uint8), "y_val": [7]}, ValueError, "labels not in y"),
    ({"validation_fraction": 1.5}, ValueError, "validation_fraction"),
    ({"results_path": "results.txt"}, ValueError, ".csv or .jsonl"),
    ({"dask": "local:0"}, ValueError, "worker count"),
    ({"input_scale": 0.0}, ValueError, "input_scale"),
])
def test_invalid_arguments(kwargs, error, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    X, y = _blobs(n=60, d=8, c=3)
    kwargs = {"param_grid": {"max_iter": [1]}, **kwargs}
    with pytest.raises(error, match=match):
        grid_search(X, y, **kwargs)


# --------------------------------------------------------------------------------------
# the results file: streaming, formats, resume
# --------------------------------------------------------------------------------------
GRID = {"batch_size": [8, 32], "learning_rate_init": [0.05, 0.2, 1e4],
        "alpha": [0.0, 1e-3], "max_iter": [1, 2]}


def _read_rows(path):
    from softmax_fast.search.results import read_results

    return read_results(path)


def _float_data():
    X, y = _blobs(n=240, d=8, c=3, uint8=False)
    return X * np.float32(1e18), y  # lr 1e4 diverges: None metrics round-trip too


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_results_file_holds_every_row(tmp_path, suffix):
    X, y = _float_data()
    path = tmp_path / f"results{suffix}"
    result = grid_search(X, y, GRID, random_state=0, results_path=path, refit=False)
    rows = _read_rows(path)
    assert len(rows) == 24
    key = lambda r: (r["batch_size"], r["learning_rate_init"], r["alpha"], r["max_iter"])  # noqa: E731
    assert sorted(rows, key=key) == sorted(result.results, key=key)
    assert any(r["status"] == "diverged" for r in rows)
    if suffix == ".jsonl":
        for line in path.read_text().splitlines():
            json.loads(line)
    else:
        assert path.read_text().splitlines()[0].split(",")[:5] == \
            ["batch_size", "learning_rate_init", "max_iter", "alpha", "momentum"]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_resume_after_a_torn_line_recomputes_only_the_missing(tmp_path, suffix):
    X, y = _float_data()
    path = tmp_path / f"results{suffix}"
    full = grid_search(X, y, GRID, random_state=0, results_path=path, refit=False)
    lines = path.read_text().splitlines(keepends=True)
    head = 1 if suffix == ".csv" else 0
    kept = lines[:head + 9]
    # a crash in the middle of the 10th row: half a line, no newline
    path.write_text("".join(kept) + lines[head + 9][:17])
    calls = []
    resumed = grid_search(X, y, GRID, random_state=0, results_path=path, resume=True,
                          refit=False, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (9, 24) and calls[-1] == (24, 24)
    # recomputed groups hold other models than before: columns never mix, so bitwise equal
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.results] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in full.results]
    rows = _read_rows(path)
    assert len(rows) == 24  # nothing lost, nothing twice, the fragment skipped
    text = path.read_text()
    assert text.endswith("\n")
    # repaired by appending: the bytes before the crash are all still there
    assert text.startswith("".join(kept) + lines[head + 9][:17])
    again = grid_search(X, y, GRID, random_state=0, results_path=path, resume=True,
                        refit=False, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (24, 24) and again.n_groups == 0


def test_resume_refuses_a_file_of_another_search(tmp_path):
    X, y = _blobs(n=120, d=8, c=3)
    path = tmp_path / "r.jsonl"
    grid_search(X, y, {"max_iter": [1]}, random_state=0, results_path=path, refit=False)
    with pytest.raises(ValueError, match="different search"):
        grid_search(X, y, {"max_iter": [1]}, random_state=1, results_path=path, resume=True)


def test_an_existing_file_needs_resume_or_overwrite(tmp_path):
    X, y = _blobs(n=120, d=8, c=3)
    path = tmp_path / "r.csv"
    grid_search(X, y, {"max_iter": [1, 2]}, random_state=0, results_path=path, refit=False)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="exists.*resume.*overwrite"):
        grid_search(X, y, {"max_iter": [1, 2]}, random_state=0, results_path=path,
                    refit=False)
    assert path.read_bytes() == before
    grid_search(X, y, {"max_iter": [1, 2]}, random_state=0, results_path=path, refit=False,
                overwrite=True)
    assert len(path.read_text().splitlines()) == 3


@pytest.mark.parametrize("name,content", [
    ("data.csv", "a,b,label\n1,2,3\n4,5,6"),          # no trailing newline
    ("config.json", '{"learning_rate": 0.1}'),          # one line, no newline
    ("notes.jsonl", "hello\nworld\n"),
    ("binary.csv", "\x00\xff\xfe"),
])
def test_resume_refuses_a_foreign_file_and_leaves_it_untouched(tmp_path, name, content):
    X, y = _blobs(n=120, d=8, c=3)
    path = tmp_path / name
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ValueError, match="not a results file"):
        grid_search(X, y, {"max_iter": [1]}, random_state=0, results_path=path, resume=True,
                    refit=False)
    assert path.read_bytes() == content.encode("latin-1")


def test_a_second_search_on_the_same_file_is_refused(tmp_path):
    from softmax_fast.search.results import ResultsWriter

    X, y = _blobs(n=120, d=8, c=3)
    path = tmp_path / "r.jsonl"
    grid_search(X, y, {"max_iter": [1]}, random_state=0, results_path=path, refit=False)
    rows = _read_rows(path)
    holder = ResultsWriter(path, list(rows[0]), search_id=rows[0]["search_id"], resume=True)
    try:
        with pytest.raises(ValueError, match="another search"):
            grid_search(X, y, {"max_iter": [1, 2]}, random_state=0, results_path=path,
                        resume=True, refit=False)
    finally:
        holder.close()
    grid_search(X, y, {"max_iter": [1, 2]}, random_state=0, results_path=path, resume=True,
                refit=False)
    assert len(_read_rows(path)) == 2


def test_duplicated_rows_count_once(tmp_path):
    X, y = _blobs(n=120, d=8, c=3)
    path = tmp_path / "r.jsonl"
    grid_search(X, y, {"max_iter": [1, 2]}, random_state=0, results_path=path, refit=False)
    path.write_text(path.read_text() * 2)
    again = grid_search(X, y, {"max_iter": [1, 2]}, random_state=0, results_path=path,
                        resume=True, refit=False)
    assert again.n_groups == 0 and len(again.results) == 2


def test_a_torn_csv_header_is_completed(tmp_path):
    X, y = _blobs(n=120, d=8, c=3)
    path = tmp_path / "r.csv"
    full = grid_search(X, y, {"max_iter": [1]}, random_state=0, results_path=path,
                       refit=False)
    header = path.read_text().splitlines()[0]
    path.write_text(header[:9])
    again = grid_search(X, y, {"max_iter": [1]}, random_state=0, results_path=path,
                        resume=True, refit=False)
    assert path.read_text().splitlines()[0] == header
    assert _read_rows(path)[0]["val_loss"] == full.results[0]["val_loss"] == \
        again.results[0]["val_loss"]


def test_killed_process_leaves_a_valid_file_and_resume_completes(tmp_path):
    """SIGKILL at an arbitrary moment of a real search, then resume: all rows, once each."""
    script = tmp_path / "run.py"
    path = tmp_path / "results.jsonl"
    script.write_text(textwrap.dedent(f"""
        import time
        import numpy as np
        from softmax_fast.search import grid_search
        rng = np.random.default_rng(0)
        y = rng.integers(0, 3, 3000)
        X = np.clip(rng.uniform(0, 1, (3, 50))[y] * 255
                    + 60 * rng.standard_normal((3000, 50)), 0, 255).astype(np.uint8)
        grid = {{"batch_size": [1, 2, 3, 4, 5, 6], "learning_rate_init": [0.01, 0.1],
                 "max_iter": [1, 2, 3]}}
        # pace the run (0.1 s after each group) so the kill lands mid-search on any machine
        grid_search(X, y, grid, random_state=0, results_path={str(path)!r},
                    resume=True, refit=False, n_threads=1, max_group_size=1,
                    progress=lambda done, total: time.sleep(0.1))
    """))
    proc = subprocess.Popen([sys.executable, str(script)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not path.exists() or path.stat().st_size < 400):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = path.read_text()
    assert 0 < partial.count("\n") < 36
    for line in partial.splitlines(keepends=True):
        if line.endswith("\n"):
            json.loads(line)
    subprocess.run([sys.executable, str(script)], check=True, timeout=300)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    keys = {(r["batch_size"], r["learning_rate_init"], r["max_iter"]) for r in rows}
    assert len(rows) == len(keys) == 36


def test_an_error_in_the_caller_stops_running_groups(tmp_path):
    """A progress callback that raises (as Ctrl-C would) ends the search promptly: the other
    thread's long group quits between epochs instead of training to the end."""
    import threading

    X, y = _blobs(n=3000, d=40, c=3)
    grid = [{"batch_size": [64], "max_iter": [1]},
            {"batch_size": [1], "max_iter": [100000],  # minutes if it ran to the end
             "n_iter_no_change": [10**6]}]
    path = tmp_path / "r.jsonl"

    def fail(done, total):
        if done:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        grid_search(X, y, grid, random_state=0, n_threads=2, refit=False, progress=fail,
                    results_path=path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(
            t.name.startswith("softmax-fast-search") for t in threading.enumerate()):
        time.sleep(0.05)
    assert not any(t.name.startswith("softmax-fast-search") for t in threading.enumerate())
    assert [json.loads(line)["batch_size"] for line in path.read_text().splitlines()] == [64]


def test_result_names_follow_scikit_learn():
    import pandas  # in the test extra
    X, y = _blobs(n=200, d=8, c=3)
    grid = {"learning_rate_init": [0.05, 0.5, 1e6], "max_iter": [1, 2]}
    result = grid_search(X, y, grid, random_state=0, refit=False)
    frame = pandas.DataFrame(result.cv_results_)
    assert len(frame) == 6
    assert {"params", "param_learning_rate_init", "val_accuracy", "rank_val_accuracy"} <= \
        set(frame.columns)
    best = frame.loc[frame["rank_val_accuracy"] == 1].iloc[0]
    assert best["params"] == {k: v for k, v in result.best_params_.items()}
    with pytest.warns(DeprecationWarning, match="best_params_"):
        assert result.best_params == result.best_params_
