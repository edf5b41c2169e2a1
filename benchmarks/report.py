"""Add to a pytest-benchmark JSON file what pytest-benchmark's own table lacks.

    pytest benchmarks/ --benchmark-json=result.json
    python benchmarks/report.py result.json [more.json ...] [--group SUBSTRING]

pytest-benchmark already prints min/median/mean/IQR per benchmark, groups them
(``--benchmark-group-by``) and compares runs (``--benchmark-compare``). This script reads its
``--benchmark-json`` output (or a run saved with ``--benchmark-save``/``--benchmark-autosave``
under ``.benchmarks/``) and adds, per pytest-benchmark group, the figures that relate rows to
each other and to the machine:

``x base``
    The group's baseline median / this median (the baseline row has ``extra_info["baseline"]``;
    without one, the row whose ``impl`` is ``numpy``).
``x peer``
    For our rows (``extra_info["ours"]``): the fastest peer's median / ours (peers — PyTorch,
    scikit-learn, ... — have ``extra_info["peer"]``); one line per peer follows the table.
``GFLOP/s``, ``% sgemm``
    ``extra_info["flops"]`` / median, and that rate over the best float32 GEMM rate of the same
    run (the ``role == "sgemm"`` row, harness.test_sgemm: its ``min`` time).
``GB/s``, ``% copy``, ``% mem``
    ``extra_info["bytes"]`` / median; the group's ``role == "copy"`` row (an ``np.copyto`` of
    the same bytes) as a share; and the share of the memory copy bandwidth of the run (the
    ``role == "copy-bandwidth"`` row).

``numba / cython``
    For the interleaved groups of bench_kernels.py (``extra_info["numba_over_cython"]``): the
    median of the rounds' ratios, with each side's median.

A row's time is its median, unless ``extra_info["seconds"]`` says which seconds count (for
example the training time inside a fit that also evaluates). Nothing else is recomputed.

``--crossover`` prints, instead, the crossover sweep of bench_shapes.py as c x d tables (one
per backend, X dtype and n): the register-path median / the BLAS-path median (above 1: BLAS
is faster), ``*`` where ``kernels/_paths.py`` picks BLAS today.
"""

import argparse
import json
import sys

ROLE_SGEMM, ROLE_COPY, ROLE_BANDWIDTH = "sgemm", "copy", "copy-bandwidth"


def load(paths):
    """(benchmarks of every file, machine_info of the first)."""
    benches, machine = [], None
    for path in paths:
        with open(path) as fh:
            data = json.load(fh)
        benches += data.get("benchmarks", [])
        machine = machine or data.get("machine_info")
    return benches, machine or {}


def _info(bench):
    return bench.get("extra_info") or {}


def impl(bench):
    """The row label: ``extra_info["impl"]``, else the test's name."""
    return _info(bench).get("impl") or bench.get("name", "?")


def seconds(bench):
    """The seconds a row stands for: ``extra_info["seconds"]``, else the median."""
    return _info(bench).get("seconds") or bench["stats"]["median"]


def machine_rates(benches):
    """(best sgemm FLOP/s, best memory copy bytes/s) of the rows that measure them, or None."""
    def best(role, key):
        rates = [_info(b)[key] / b["stats"]["min"] for b in benches
                 if _info(b).get("role") == role and _info(b).get(key) and b.get("stats")]
        return max(rates, default=None)
    return best(ROLE_SGEMM, "flops"), best(ROLE_BANDWIDTH, "bytes")


def group_rows(rows, sgemm, bandwidth):
    """Each row of one group as {column: text}, and the lines comparing ours with each peer."""
    times = {id(b): seconds(b) for b in rows}
    base = next((b for b in rows if _info(b).get("baseline")), None) \
        or next((b for b in rows if impl(b) == "numpy"), None)
    copy = next((b for b in rows if _info(b).get("role") == ROLE_COPY), None)
    peers = [b for b in rows if _info(b).get("peer")]
    best_peer = min((times[id(b)] for b in peers), default=None)
    table = []
    for bench in sorted(rows, key=lambda b: -times[id(b)]):
        t, info = times[id(bench)], _info(bench)
        row = {"implementation": impl(bench), "time": _fmt_time(t)}
        if base is not None:
            row["x base"] = f"{times[id(base)] / t:.2f}x"
        if best_peer is not None and info.get("ours"):
            row["x peer"] = f"{best_peer / t:.2f}x"
        if info.get("flops"):
            row["GFLOP/s"] = f"{info['flops'] / t / 1e9:.1f}"
            if sgemm:
                row["% sgemm"] = f"{100 * info['flops'] / t / sgemm:.0f}%"
        if info.get("bytes"):
            row["GB/s"] = f"{info['bytes'] / t / 1e9:.1f}"
            if copy is not None:
                row["% copy"] = f"{100 * times[id(copy)] / t:.0f}%"
            if bandwidth:
                row["% mem"] = f"{100 * info['bytes'] / t / bandwidth:.0f}%"
        table.append(row)
    versus = [f"  {impl(ours)} over {impl(peer)}: speed-up "
              f"{times[id(peer)] / times[id(ours)]:.2f}x"
              for ours in rows if _info(ours).get("ours") for peer in peers]
    versus += [f"  numba / cython, median of {_info(b)['pairs']} interleaved pairs: "
               f"{_info(b)['numba_over_cython']:.2f}x (numba {_info(b)['numba_us']:.1f} us, "
               f"cython {_info(b)['cython_us']:.1f} us)"
               for b in rows if "numba_over_cython" in _info(b)]
    return table, versus


def format_group(name, table, versus):
    """One group as an aligned text table."""
    columns = list(dict.fromkeys(key for row in table for key in row))
    widths = {c: max(len(c), *(len(row.get(c, "")) for row in table)) for c in columns}
    lines = ["", name,
             "  ".join(c.ljust(widths[c]) if i == 0 else c.rjust(widths[c])
                       for i, c in enumerate(columns))]
    lines.append("-" * len(lines[-1]))
    for row in table:
        lines.append("  ".join(row.get(c, "").ljust(widths[c]) if i == 0
                               else row.get(c, "").rjust(widths[c])
                               for i, c in enumerate(columns)))
    return lines + versus


def format_report(benches, machine=None, group_filter=None):
    """The whole report: a header with the machine's rates, then one table per group."""
    benches = [b for b in benches if b.get("stats")]  # a failed benchmark has no stats
    sgemm, bandwidth = machine_rates(benches)
    lines = [f"cpu: {(machine or {}).get('cpu', {}).get('brand_raw', '?')}; "
             f"{_describe_run((machine or {}).get('softmax_fast'))}",
             f"sgemm: {sgemm / 1e9:.1f} GFLOP/s" if sgemm else
             "sgemm: not measured in these files (run harness.test_sgemm, e.g. bench_shapes)",
             f"memory copy: {bandwidth / 1e9:.1f} GB/s" if bandwidth else
             "memory copy: not measured in these files (harness.test_copy_bandwidth)"]
    groups = {}
    for bench in benches:
        groups.setdefault(bench.get("group") or "(no group)", []).append(bench)
    for name in sorted(groups):
        if group_filter and group_filter not in name:
            continue
        lines += format_group(name, *group_rows(groups[name], sgemm, bandwidth))
    return "\n".join(lines)


def format_crossover(benches):
    """The crossover sweep (rows with ``extra_info["sweep"]``) as c x d speed-up tables."""
    cells = {}  # (backend, X dtype, n) -> (c, d) -> {path: seconds, "chosen": path}
    for bench in benches:
        info = _info(bench)
        if not info.get("sweep"):
            continue
        cell = cells.setdefault((info["backend"], info["xdtype"], info["n"]), {}) \
            .setdefault((info["c"], info["d"]), {})
        cell[info["path"]] = seconds(bench)
        if info.get("chosen"):
            cell["chosen"] = info["path"]
    if not cells:
        return "no crossover rows (run bench_shapes.py -k crossover with SOFTMAX_FAST_BENCH_LONG=1)"
    lines = ["register time / BLAS time (above 1: BLAS faster); * = the BLAS path is chosen"]
    for (backend, xdtype, n), table in sorted(cells.items()):
        classes = sorted({c for c, _ in table})
        features = sorted({d for _, d in table})
        lines += ["", f"{backend}, X {xdtype}, n = {n}",
                  "c \\ d " + "".join(f"{d:>9}" for d in features)]
        for c in classes:
            row = f"{c:<6}"
            for d in features:
                cell = table.get((c, d), {})
                if "register" in cell and "blas" in cell:
                    mark = "*" if cell.get("chosen") == "blas" else " "
                    row += f"{cell['register'] / cell['blas']:>8.2f}{mark}"
                else:
                    row += f"{'':>9}"
            lines.append(row)
    return "\n".join(lines)


def _describe_run(info):
    """The run's settings that conftest.py stored in ``machine_info["softmax_fast"]``."""
    if not info:
        return "softmax-fast settings not recorded"
    mode = "SMOKE run: tiny sizes, the timings mean nothing" if info.get("smoke") else "full run"
    return (f"cython build {info.get('cython_isa')}, {info.get('n_threads')} thread(s), "
            f"backends {', '.join(info.get('backends') or [])}; {mode}")


def _fmt_time(t):
    if t < 1e-3:
        return f"{t * 1e6:.1f} us"
    if t < 1:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="pytest-benchmark JSON files (merged)")
    parser.add_argument("--group", help="only the groups whose name contains this")
    parser.add_argument("--crossover", action="store_true",
                        help="the crossover sweep of bench_shapes.py as c x d tables")
    args = parser.parse_args(argv)
    benches, machine = load(args.files)
    if args.crossover:
        print(format_crossover([b for b in benches if b.get("stats")]))
    else:
        print(format_report(benches, machine, args.group))
    return 0


if __name__ == "__main__":
    sys.exit(main())
