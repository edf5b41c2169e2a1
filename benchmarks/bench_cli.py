"""Wall time of the CLI in fresh processes: ``softmax-fast --help`` and a sample ``train``.

Targets from the issue: ``--help`` <= 0.3 s, ``train`` on the bundled sample (default
options and backend) <= 2 s. Every run is a new ``python -m softmax_fast`` process, so the
figures include interpreter start-up and all imports — what a user waits for.

Run either way (no asserts; the numbers are reported)::

    python benchmarks/bench_cli.py [--runs 7]
    pytest benchmarks/bench_cli.py --benchmark-json=cli.json
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import pytest
from harness import rounds

COMMANDS = {
    "help": ["--help"],
    "train-sample": ["train", "--quiet"],
}
TARGETS = {"help": 0.3, "train-sample": 2.0}


def run_once(args):
    """Seconds of wall time of one fresh ``python -m softmax_fast ARGS`` process."""
    return run_with_cpu(args)[0]


def run_with_cpu(args):
    """(wall seconds, CPU seconds) of one fresh ``python -m softmax_fast ARGS`` process.

    The CPU time (user + system of the child) is the steadier figure on a shared machine:
    wall time also counts the time other processes hold the cores.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as cwd:  # no stray output in the caller's directory
        tic = time.perf_counter()
        subprocess.run([sys.executable, "-m", "softmax_fast", *args], check=True, cwd=cwd,
                       stdout=subprocess.DEVNULL, env=dict(os.environ))
        wall = time.perf_counter() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(runs=7):
    """{name: (sorted wall times, sorted CPU times)}, after one untimed warm-up run each.

    The warm-up fills the OS page cache and Numba's on-disk cache, as on a user's second run.
    """
    times = {}
    for name, args in COMMANDS.items():
        run_with_cpu(args)
        walls, cpus = zip(*(run_with_cpu(args) for _ in range(runs)), strict=True)
        times[name] = (sorted(walls), sorted(cpus))
    return times


@pytest.mark.benchmark(group="cli: fresh process")
def test_cli_help(benchmark):
    benchmark.extra_info.update(impl="softmax-fast --help", target_seconds=TARGETS["help"])
    benchmark.pedantic(run_once, args=(COMMANDS["help"],), rounds=rounds(5), warmup_rounds=1)


@pytest.mark.benchmark(group="cli: fresh process")
def test_cli_train_sample(benchmark):
    benchmark.extra_info.update(impl="softmax-fast train (sample)",
                                target_seconds=TARGETS["train-sample"])
    benchmark.pedantic(run_once, args=(COMMANDS["train-sample"],), rounds=rounds(5),
                       warmup_rounds=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    print(f"fresh processes, {runs} runs each; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs")
    print(f"{'command':<14} {'wall median':>11} {'min':>7} {'max':>7} {'CPU median':>10} "
          f"{'target':>7}")
    for name, (walls, cpus) in measure(runs).items():
        print(f"{name:<14} {statistics.median(walls):10.3f}s {walls[0]:6.3f}s "
              f"{walls[-1]:6.3f}s {statistics.median(cpus):9.3f}s {TARGETS[name]:6.1f}s")


if __name__ == "__main__":
    main()
