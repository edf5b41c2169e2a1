"""Side-by-side benchmark on this machine: our backends vs NumPy, PyTorch and scikit-learn.

Four tasks, each timed as the median of several runs after one warm-up run (which absorbs
Numba's JIT compilation and first-touch page faults):

``kernel``
    The fused linear + softmax + cross-entropy loss and gradient over ``n`` uint8 images
    (``linear_softmax_ce``; PyTorch: ``F.linear`` + ``F.cross_entropy`` forward and backward).
``epoch``
    One epoch of minibatch SGD, batch size 32 (ours: ``sgd_epoch``, one compiled call;
    PyTorch: ``nn.Linear`` + ``cross_entropy`` + ``optim.SGD`` in a Python loop).
``epoch-ovr``
    scikit-learn's ``SGDClassifier(loss="log_loss")`` for one epoch: what a scikit-learn user
    would reach for, but not the same algorithm — one binary model per class (one-vs-rest)
    and one sample per step — so it is its own row, with no speed-up against our epoch.
``lbfgs``
    Full-batch L-BFGS, 20 iterations, 5 with ``quick`` (ours:
    ``SoftmaxRegression(solver="lbfgs")``;
    scikit-learn: multinomial ``LogisticRegression``, the same objective).

The machine's floor puts the times in perspective: the best measured float32 GEMM rate (of
NumPy's BLAS) and memory copy bandwidth, and the FLOPs and bytes a task needs at least
(4*n*d*c FLOPs for the forward product and the weight gradient; the uint8 images read once —
the 31 KB weight matrix stays in cache). ``floor = max(FLOPs / GEMM rate, bytes / bandwidth)``.

PyTorch and scikit-learn are imported only here and only when present; a missing one is
reported as skipped.
"""

import os
import platform
import statistics
import time
import warnings

import numpy as np

from softmax_fast._training.sampling import default_input_scale, epoch_order

__all__ = ["format_report", "run_benchmark"]

N_CLASSES = 10
BATCH_SIZE = 32
LEARNING_RATE = 0.01
ALPHA = 1e-5
LBFGS_ITERATIONS = 20
QUICK_LBFGS_ITERATIONS = 5
#: The tasks, in report order (see the module docstring).
TASKS = ("kernel", "epoch", "epoch-ovr", "lbfgs")


def _median_seconds(func, repeats):
    func()  # warm-up: JIT compilation, page faults, thread pool start
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        func()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def _data(n_samples):
    """uint8 Fashion-MNIST sample images, tiled up to ``n_samples`` rows."""
    from softmax_fast.datasets import load_dataset

    X, y, _, _ = load_dataset("fashion-mnist-sample")
    reps = -(-n_samples // X.shape[0])
    X = np.ascontiguousarray(np.tile(X, (reps, 1))[:n_samples])
    y = np.tile(y, reps)[:n_samples].astype(np.intp)
    return X, y


def _best_seconds(func, repeats):
    func()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - tic)
    return best


def measure_floor(quick=False):
    """Measured float32 GEMM rate (FLOP/s) and copy bandwidth (bytes/s) of this machine.

    These are capabilities, so the best run counts, not the median: on a shared machine a
    slow run measures the neighbours. The GEMM is square, of several sizes (the best rate
    wins: small ones run from cache, large ones amortise thread start-up); the copy moves
    16 or 128 MB, beyond the caches, counting the bytes read plus the bytes written.
    """
    rng = np.random.default_rng(0)
    best_rate, best_size = 0.0, None
    for size in (512, 1024) if quick else (512, 1024, 2048):
        a = rng.standard_normal((size, size), dtype=np.float32)
        b = rng.standard_normal((size, size), dtype=np.float32)
        out = np.empty_like(a)
        rate = 2.0 * size**3 / _best_seconds(lambda a=a, b=b, o=out: np.matmul(a, b, out=o), 5)
        if rate > best_rate:
            best_rate, best_size = rate, size
    n_bytes = (16 if quick else 128) << 20
    src = np.ones(n_bytes // 8)
    dst = np.empty_like(src)
    copy = _best_seconds(lambda: np.copyto(dst, src), 5)
    return {"gemm_flops": best_rate, "copy_bytes_per_s": 2.0 * n_bytes / copy,
            "gemm_size": best_size, "copy_mb": n_bytes >> 20}


def _ours_kernel(backend, X, y, n_threads):
    d = X.shape[1]
    coef = np.zeros((N_CLASSES, d), np.float32)
    intercept = np.zeros(N_CLASSES, np.float32)
    grad_coef, grad_intercept = np.empty_like(coef), np.empty_like(intercept)
    scale = default_input_scale(X)
    return lambda: backend.linear_softmax_ce(X, scale, coef, intercept, y, None, ALPHA,
                                             grad_coef, grad_intercept, n_threads)


def _ours_epoch(backend, X, y, n_threads):
    d = X.shape[1]
    coef = np.zeros((N_CLASSES, d), np.float32)
    intercept = np.zeros(N_CLASSES, np.float32)
    velocity_coef, velocity_intercept = np.zeros_like(coef), np.zeros_like(intercept)
    order = epoch_order(X.shape[0], 0, 0, True)
    return lambda: backend.sgd_epoch(X, default_input_scale(X), y, None, order, coef, intercept,
                                     velocity_coef, velocity_intercept, LEARNING_RATE, ALPHA,
                                     0.0, False, BATCH_SIZE, n_threads)


def _ours_lbfgs(backend_name, X, y, n_threads, iterations):
    from softmax_fast.estimator import SoftmaxRegression

    model = SoftmaxRegression(solver="lbfgs", max_iter=iterations, tol=0.0, alpha=ALPHA,
                              input_scale=default_input_scale(X), backend=backend_name,
                              n_threads=n_threads)

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "did not converge": we stop it on purpose
            model.fit(X, y)
    return run


def _torch_tasks(X, y, n_threads, iterations):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(n_threads)
    # PyTorch has no uint8 GEMM: the float32 copy is made once, outside the timing.
    Xt = torch.from_numpy(X.astype(np.float32) / 255.0)
    yt = torch.from_numpy(y.astype(np.int64))
    d = X.shape[1]

    def kernel():
        W = torch.zeros((N_CLASSES, d), requires_grad=True)
        b = torch.zeros(N_CLASSES, requires_grad=True)
        loss = F.cross_entropy(F.linear(Xt, W, b), yt) + 0.5 * ALPHA * (W * W).sum()
        loss.backward()

    layer = torch.nn.Linear(d, N_CLASSES)
    optimizer = torch.optim.SGD(layer.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(0)

    def epoch():
        order = torch.randperm(Xt.shape[0], generator=generator)
        for start in range(0, Xt.shape[0], BATCH_SIZE):
            idx = order[start:start + BATCH_SIZE]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(layer(Xt[idx]), yt[idx])
            loss = loss + 0.5 * ALPHA * (layer.weight * layer.weight).sum()
            loss.backward()
            optimizer.step()

    return {"kernel": kernel, "epoch": epoch}, f"torch {torch.__version__}"


def _sklearn_tasks(X, y, n_threads, iterations):
    import sklearn
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    Xf = X.astype(np.float32) / 255.0
    n = X.shape[0]

    def epoch_ovr():
        # alpha is per-sample in sklearn's SGD objective, as here; one pass over the data.
        model = SGDClassifier(loss="log_loss", alpha=ALPHA, learning_rate="constant",
                              eta0=LEARNING_RATE, max_iter=1, tol=None, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(Xf, y)

    def lbfgs():
        # The same objective as ours: C = 1 / (n * alpha).
        model = LogisticRegression(C=1.0 / (n * ALPHA), max_iter=iterations, tol=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(Xf, y)

    return {"epoch-ovr": epoch_ovr, "lbfgs": lbfgs}, f"scikit-learn {sklearn.__version__}"


def _cython_isa():
    """The build of the Cython kernels ``cython`` runs here ("avx512", ...), None without one."""
    try:
        from softmax_fast.kernels import cython_backend
    except ImportError:
        return None
    return cython_backend.ISA


def run_benchmark(*, quick=False, backends=None, n_threads=None, repeats=None, progress=None):
    """Time every available implementation of every task; return a JSON-able report.

    Parameters
    ----------
    quick : bool, default=False
        1,000 samples, 3 repeats and 5 L-BFGS iterations (a few seconds, for tests) instead
        of 60,000 samples (the size of Fashion-MNIST's training set), 5 repeats and 20
        iterations.
    backends : sequence of str, optional
        Our backends to time (default: every importable one but the opt-in builds
        ``cython-<isa>``; the oracle is always added, since the ratios are relative to it).
    n_threads : int, optional
        Threads for our kernels and PyTorch (default: all cores).
    repeats : int, optional
        Timed runs per measurement (the median is reported).
    progress : callable(str), optional
        Called with the name of each measurement before it runs.

    Returns
    -------
    dict
        ``machine``, ``floor``, ``config``, ``skipped`` (library -> reason) and ``results``: a
        list of ``{"task", "implementation", "seconds", "vs_reference", "vs_floor"}``;
        ``vs_reference`` is None for a task our oracle does not run (``epoch-ovr``).
    """
    from softmax_fast.backends import (
        available_backends,
        get_backend,
        registered,
        resolve_n_threads,
    )

    n_threads = resolve_n_threads(n_threads)
    n_samples = 1000 if quick else 60000
    iterations = QUICK_LBFGS_ITERATIONS if quick else LBFGS_ITERATIONS
    repeats = repeats or (3 if quick else 5)
    # by default the backends ``auto`` may pick, not the opt-in ones (cython-avx2, ...)
    auto_ranked = {info.name for info in registered("dense") if info.auto_rank is not None}
    names = list(backends) if backends else [n for n in available_backends() if n in auto_ranked]
    oracle = next(info.name for info in registered("dense") if info.oracle)
    if oracle not in names:
        names.append(oracle)
    X, y = _data(n_samples)
    d = X.shape[1]
    floor = measure_floor(quick)
    flops = 4.0 * n_samples * d * N_CLASSES
    bytes_moved = float(X.nbytes + y.nbytes)
    floor_seconds = max(flops / floor["gemm_flops"], bytes_moved / floor["copy_bytes_per_s"])
    # one-vs-rest: c binary models of d weights make the same 4 n d c FLOPs per pass
    task_floor = {"kernel": floor_seconds, "epoch": floor_seconds,
                  "epoch-ovr": floor_seconds, "lbfgs": iterations * floor_seconds}
    floor.update(task_flops=flops, task_bytes=bytes_moved, task_floor_seconds=floor_seconds)

    jobs = []  # (task, implementation, callable factory)
    for name in names:
        backend = get_backend(name)
        label = f"softmax-fast {name}"
        jobs.append(("kernel", label, lambda b=backend: _ours_kernel(b, X, y, n_threads)))
        jobs.append(("epoch", label, lambda b=backend: _ours_epoch(b, X, y, n_threads)))
        jobs.append(("lbfgs", label, lambda n=name: _ours_lbfgs(n, X, y, n_threads, iterations)))
    skipped = {}
    for library, factory in (("torch", _torch_tasks), ("scikit-learn", _sklearn_tasks)):
        try:
            tasks, label = factory(X, y, n_threads, iterations)
        except ImportError as exc:
            skipped[library] = f"not installed ({exc})"
            continue
        for task, func in tasks.items():
            jobs.append((task, label, lambda f=func: f))

    results = []
    for task, label, factory in sorted(jobs, key=lambda job: TASKS.index(job[0])):
        if progress is not None:
            progress(f"{task}: {label}")
        seconds = _median_seconds(factory(), repeats)
        results.append({"task": task, "implementation": label, "seconds": seconds})
    reference = {r["task"]: r["seconds"] for r in results
                 if r["implementation"] == f"softmax-fast {oracle}"}
    for r in results:
        r["vs_reference"] = reference[r["task"]] / r["seconds"] if r["task"] in reference \
            else None
        r["vs_floor"] = r["seconds"] / task_floor[r["task"]]
    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "numpy": np.__version__,
                    "cython_isa": _cython_isa()},
        "config": {"n_samples": n_samples, "n_features": d, "n_classes": N_CLASSES,
                   "batch_size": BATCH_SIZE, "n_threads": n_threads, "repeats": repeats,
                   "lbfgs_iterations": iterations, "quick": quick},
        "floor": floor,
        "skipped": skipped,
        "results": results,
    }


_TASK_TITLES = {
    "kernel": "fused linear+softmax+CE loss and gradient",
    "epoch": f"one SGD epoch, batch {BATCH_SIZE}",
    "epoch-ovr": "scikit-learn SGDClassifier epoch (one-vs-rest, 1 sample/step)",
    "lbfgs": "L-BFGS, {iterations} iterations",
}


def format_report(report):
    """The report of :func:`run_benchmark` as a plain-text table."""
    cfg, floor = report["config"], report["floor"]
    isa = report["machine"].get("cython_isa")
    lines = [
        f"{cfg['n_samples']} samples x {cfg['n_features']} uint8 features, {cfg['n_classes']} "
        f"classes, {cfg['n_threads']} thread(s), median of {cfg['repeats']} runs",
        f"machine floor: float32 GEMM {floor['gemm_flops'] / 1e9:.1f} GFLOP/s "
        f"({floor['gemm_size']}^3), copy {floor['copy_bytes_per_s'] / 1e9:.1f} GB/s; "
        f"a pass needs {floor['task_flops'] / 1e9:.3f} GFLOP and "
        f"{floor['task_bytes'] / 1e6:.1f} MB -> floor {floor['task_floor_seconds'] * 1e3:.2f} ms",
        f"cython kernels: {isa} build" if isa else "cython kernels: not available",
    ]
    titles = [_TASK_TITLES[r["task"]].format(iterations=cfg["lbfgs_iterations"])
              for r in report["results"]]
    width = max([len("task"), *map(len, titles)])
    lines += ["", f"{'task':<{width}} {'implementation':<26} {'median':>10} {'speedup':>9} "
                  f"{'x floor':>8}"]
    for title, r in zip(titles, report["results"], strict=True):
        speedup = "n/a" if r["vs_reference"] is None else f"{r['vs_reference']:.2f}x"
        lines.append(f"{title:<{width}} {r['implementation']:<26} "
                     f"{r['seconds'] * 1e3:8.2f}ms {speedup:>9} {r['vs_floor']:8.1f}")
    lines.append("speedup: reference time / time (higher is faster; n/a: a different "
                 "algorithm, no reference); x floor: time / floor (below 1: faster than "
                 "NumPy's best measured GEMM rate).")
    for library, reason in report["skipped"].items():
        lines.append(f"skipped {library}: {reason}")
    return "\n".join(lines)
