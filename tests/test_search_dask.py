"""grid_search on a real Dask LocalCluster of worker processes, including a lost worker."""

import os
import sys

import distributed  # in the test extra: a missing one is a broken install, never a skip
import numpy as np
import pytest

from softmax_fast.search import grid_search

GRID = {"batch_size": [4, 8, 16], "learning_rate_init": [0.02, 0.2], "alpha": [0.0, 1e-3],
        "max_iter": [1, 3]}


def _data(n=900):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    X = np.clip(rng.uniform(0, 1, (3, 30))[y] * 255 + 70 * rng.standard_normal((n, 30)),
                0, 255).astype(np.uint8)
    return X, y


def _without_seconds(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


@pytest.fixture(scope="module")
def local_result():
    X, y = _data()
    return grid_search(X, y, GRID, random_state=0, n_threads=1, refit=False, max_group_size=2)


def test_distributed_search_equals_local(client, local_result, tmp_path):
    X, y = _data()
    path = tmp_path / "dask.csv"
    remote = grid_search(X, y, GRID, random_state=0, refit=False, max_group_size=2,
                         dask=client, results_path=path)
    # the same compiled kernel with one BLAS thread on both sides: bitwise equal
    assert _without_seconds(remote.results) == _without_seconds(local_result.results)
    assert len(path.read_text().splitlines()) == 1 + 3 * 2 * 2 * 2


def test_killing_a_worker_mid_search_loses_nothing(client, tmp_path):
    X, y = _data(n=12000)  # each task runs ~0.15 s, so the kill lands while tasks run
    grid = {**GRID, "learning_rate_init": [0.02, 0.05, 0.2], "max_iter": [1, 10]}
    path = tmp_path / "dask.jsonl"
    victim = sorted(client.scheduler_info()["workers"])[0]
    killed = []

    def kill_one_worker(done, total):
        if done > 0 and not killed:
            killed.append(victim)
            try:
                client.run(os._exit, 1, workers=[victim])
            except Exception:  # the worker dies before it can reply
                pass

    result = grid_search(X, y, grid, random_state=0, refit=False, max_group_size=1,
                         dask=client, results_path=path, progress=kill_one_worker)
    assert killed
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the dead worker ...
    assert victim not in client.scheduler_info()["workers"]  # ... under a new address
    assert len(result.results) == len(path.read_text().splitlines()) == 3 * 3 * 2 * 2
    local = grid_search(X, y, grid, random_state=0, n_threads=1, refit=False,
                        max_group_size=1)
    assert _without_seconds(result.results) == _without_seconds(local.results)


def test_local_cluster_string_and_resume(tmp_path, local_result):
    X, y = _data()
    path = tmp_path / "r.jsonl"
    lines_local = grid_search(X, y, GRID, random_state=0, refit=False, max_group_size=2,
                              results_path=path)
    text = path.read_text().splitlines(keepends=True)
    path.write_text("".join(text[:5]))
    resumed = grid_search(X, y, GRID, random_state=0, refit=False, max_group_size=2,
                          results_path=path, resume=True, dask="local:2")
    assert _without_seconds(resumed.results) == _without_seconds(lines_local.results)
    assert len(path.read_text().splitlines()) == len(lines_local.results)


def test_missing_dask_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    X, y = _data()
    with pytest.raises(ImportError, match=r"softmax-fast\[dask\]"):
        grid_search(X, y, {"max_iter": [1]}, random_state=0, dask="local:1", refit=False)


# --------------------------------------------------------------------------------------
# a cluster that fails: one clear error, the rows kept, never a hang
# --------------------------------------------------------------------------------------
def _silent_server(reply=b""):
    """A TCP server on 127.0.0.1 that accepts connections and answers ``reply`` (or never)."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)
            if reply:
                try:
                    conn.sendall(reply)
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return server, f"tcp://127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize("reply", [b"", b"\xff" * 64 + b"garbage" * 100],
                         ids=["silent", "garbage"])
def test_an_address_that_is_not_a_scheduler_fails_quickly(monkeypatch, reply):
    import time

    from softmax_fast.search import runners

    monkeypatch.setattr(runners, "DASK_CONNECT_TIMEOUT", 3)
    server, address = _silent_server(reply)
    X, y = _data(n=120)
    tic = time.monotonic()
    try:
        with pytest.raises(ConnectionError, match=address.split("//")[1]):
            grid_search(X, y, {"max_iter": [1]}, random_state=0, dask=address, refit=False)
    finally:
        server.close()
    assert time.monotonic() - tic < 30


def test_losing_every_worker_keeps_the_rows_and_says_resume(monkeypatch, tmp_path):
    import time

    from softmax_fast.search import SearchInterrupted, runners

    monkeypatch.setattr(runners, "DASK_NO_WORKER_TIMEOUT", 3)
    X, y = _data(n=20000)  # groups of ~0.1 s: the cluster is gone long before the last one
    grid = {**GRID, "max_iter": [1, 20]}
    path = tmp_path / "r.jsonl"
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
    client = distributed.Client(cluster)
    stopped = []

    def stop_workers(done, total):
        if done > 0 and not stopped:
            stopped.append(True)
            cluster.scale(0)
            deadline = time.monotonic() + 30
            while client.scheduler_info()["workers"] and time.monotonic() < deadline:
                time.sleep(0.05)

    try:
        with pytest.raises(SearchInterrupted, match=r"saved in .*r\.jsonl.*resume"):
            grid_search(X, y, grid, random_state=0, refit=False, max_group_size=1,
                        dask=client, results_path=path, progress=stop_workers)
    finally:
        client.close()
        cluster.close()
    saved = len(path.read_text().splitlines())
    assert saved > 0
    resumed = grid_search(X, y, grid, random_state=0, refit=False, max_group_size=1,
                          results_path=path, resume=True)
    assert len(resumed.results) == 3 * 2 * 2 * 2
