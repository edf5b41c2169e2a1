"""Running the groups: threads in this process, or Dask tasks on a cluster."""

import concurrent.futures
import hashlib
import os
import threading

from .groups import run_group

__all__ = ["run_local", "run_dask", "SearchInterrupted"]


def run_local(tasks, data, n_threads, collect, on_epoch=None):
    """Run the groups in this process, ``min(n_threads, len(tasks))`` side by side.

    A group trains its models in parallel tasks, so the threads are shared among the groups
    that run at once (the compiled epoch releases the GIL; results do not depend on it).
    ``on_epoch`` is passed to :func:`run_group` (called from the groups' threads).
    """
    workers = max(1, min(n_threads, len(tasks)))
    per_group = max(1, n_threads // workers)
    if workers == 1:
        for task in tasks:
            collect(run_group(task, *data, n_threads=per_group, on_epoch=on_epoch))
        return
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                 thread_name_prefix="softmax-fast-search")
    stop = threading.Event()
    try:
        futures = [pool.submit(run_group, task, *data, n_threads=per_group, stop=stop,
                               on_epoch=on_epoch) for task in tasks]
        for future in concurrent.futures.as_completed(futures):
            collect(future.result())
    finally:
        # on an error or Ctrl-C queued groups never start and running ones quit after
        # their current epoch, so the interpreter is not kept alive by orphan threads
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)


class SearchInterrupted(RuntimeError):
    """The groups could not all run (the Dask cluster failed); the rows so far are kept."""


#: Seconds to connect to a scheduler (and for its handshake) before giving up.
DASK_CONNECT_TIMEOUT = 20
#: Seconds a search waits with no worker at all before giving up.
DASK_NO_WORKER_TIMEOUT = 60


def _dask_client(dask):
    """(client, things to close) for ``dask``: "local:N", an address or a Client."""
    try:
        import dask as dask_config
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ImportError(
            "grid_search(dask=...) needs Dask's distributed scheduler: "
            "pip install 'softmax-fast[dask]'"
        ) from exc
    if isinstance(dask, str) and dask.startswith("local:"):
        try:
            n_workers = int(dask.split(":", 1)[1])
        except ValueError:
            n_workers = 0
        if n_workers < 1:
            raise ValueError(f"dask='local:N' needs a positive worker count, got {dask!r}")
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)
        return client, [client, cluster]
    if isinstance(dask, str):
        timeouts = {"distributed.comm.timeouts.connect": f"{DASK_CONNECT_TIMEOUT}s",
                    "distributed.comm.timeouts.tcp": f"{DASK_CONNECT_TIMEOUT}s"}
        try:
            with dask_config.config.set(timeouts):
                client = Client(dask, timeout=DASK_CONNECT_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - whatever the peer did, one clear line
            raise ConnectionError(
                f"cannot connect to a Dask scheduler at {dask} within {DASK_CONNECT_TIMEOUT} s "
                f"({type(exc).__name__}: {exc}); check the address and that it is a Dask "
                "scheduler") from exc
        return client, [client]
    if hasattr(dask, "submit") and hasattr(dask, "scatter"):
        return dask, []
    raise TypeError(f"dask must be 'local:N', a scheduler address or a Client, got {dask!r}")


def run_dask(dask, tasks, data, collect, retries=3):
    """Run every group as a Dask task on data scattered once to all workers.

    A task whose worker dies is rescheduled by the scheduler; ``retries`` also re-runs tasks
    that raised (e.g. a worker's memory error), so a lost worker never loses a group. Each
    task trains on one thread: the worker runs as many tasks at once as it has threads.
    If the cluster fails (every worker gone for a minute, the scheduler lost), raises
    :class:`SearchInterrupted` after collecting whatever finished.
    """
    client, owned = _dask_client(dask)  # first: it explains a missing distributed
    from distributed import wait

    pending = set()
    try:
        scattered = client.scatter(list(data), broadcast=True)
        token = hashlib.sha256(os.urandom(8)).hexdigest()[:8]
        futures = [client.submit(run_group, task, *scattered, n_threads=1,
                                 retries=retries, pure=False,
                                 key=f"softmax-fast-group-{task['group']}-{token}")
                   for task in tasks]
        pending = set(futures)
        no_workers_since = None
        while pending:
            finished, pending = wait(pending, timeout=5, return_when="FIRST_COMPLETED")
            for future in finished:
                rows = future.result()
                future.release()  # collected: a later lost worker need not recompute it
                collect(rows)
            no_workers_since = _check_workers(client, no_workers_since)
    except SearchInterrupted:
        raise
    except (ImportError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - distributed's many failure types
        if not _is_cluster_failure(exc):
            raise
        raise SearchInterrupted(f"the Dask cluster failed ({type(exc).__name__}: {exc})") \
            from exc
    finally:
        for future in pending:
            future.cancel()
        for thing in owned:
            try:
                thing.close()
            except Exception:  # noqa: BLE001, S110 - closing a dead cluster may fail too
                pass


def _check_workers(client, since):
    """Return when the cluster first had no workers (None while it has some); give up late."""
    import time

    try:
        n_workers = len(client.scheduler_info().get("workers", {}))
    except Exception as exc:  # noqa: BLE001 - the scheduler is gone
        raise SearchInterrupted(f"lost the Dask scheduler ({type(exc).__name__}: {exc})") \
            from exc
    if n_workers:
        return None
    now = time.monotonic()
    if since is not None and now - since > DASK_NO_WORKER_TIMEOUT:
        raise SearchInterrupted(f"every Dask worker has been gone for "
                                f"{DASK_NO_WORKER_TIMEOUT} s")
    return since if since is not None else now


def _is_cluster_failure(exc):
    """Whether ``exc`` comes from the cluster (lost workers, scheduler, network)."""
    import asyncio
    import concurrent.futures as cf

    names = {"FutureCancelledError", "KilledWorker", "CommClosedError", "CancelledError"}
    return isinstance(exc, (OSError, TimeoutError, asyncio.TimeoutError, cf.CancelledError,
                            asyncio.CancelledError)) or type(exc).__name__ in names
