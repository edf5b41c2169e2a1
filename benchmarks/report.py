"""Summarise a pytest-benchmark JSON file of bench_kernels.py as a table.

    python benchmarks/report.py kernels.json

Per group and implementation: the median time, the speed-up over the float64 reference and
over plain NumPy (their median / this median), and for benchmarks that record the bytes they
read and write, the bandwidth as a % of the ``copy`` row of the same group (a np.copyto of the
same bytes, often cache-resident) and of the 256 MiB copy of the ``bandwidth`` group (memory).
The same table is printed at the end of a pytest run by benchmarks/conftest.py.
"""

import json
import sys


def _impl(bench):
    return bench.get("extra_info", {}).get("impl") or bench["name"]


def format_table(benchmarks):
    """The report for a list of pytest-benchmark entries (dicts as in the saved JSON)."""
    groups = {}
    for bench in benchmarks:
        groups.setdefault(bench.get("group") or "", []).append(bench)
    large_bw = None
    for bench in groups.get("bandwidth", []):
        large_bw = bench["extra_info"]["bytes"] / bench["stats"]["median"]
    lines = []
    header = (f"{'implementation':<16}{'median':>12}{'x ref':>9}{'x numpy':>9}"
              f"{'GB/s':>8}{'% copy':>8}{'% mem copy':>12}")
    for group in sorted(groups):
        rows = groups[group]
        med = {_impl(b): b["stats"]["median"] for b in rows}
        lines += ["", group, header, "-" * len(header)]
        for bench in sorted(rows, key=lambda b: -b["stats"]["median"]):
            impl, t = _impl(bench), bench["stats"]["median"]
            nbytes = bench.get("extra_info", {}).get("bytes")
            cols = [f"{impl:<16}", f"{_fmt_time(t):>12}"]
            cols.append(f"{med['reference'] / t:>8.1f}x" if "reference" in med else f"{'':>9}")
            cols.append(f"{med['numpy'] / t:>8.1f}x" if "numpy" in med else f"{'':>9}")
            if nbytes:
                cols.append(f"{nbytes / t / 1e9:>8.1f}")
                cols.append(f"{100 * med['copy'] / t:>7.0f}%" if "copy" in med else f"{'':>8}")
                cols.append(f"{100 * nbytes / t / large_bw:>11.0f}%" if large_bw else "")
            lines.append("".join(cols))
    return "\n".join(lines)


def _fmt_time(t):
    if t < 1e-3:
        return f"{t * 1e6:.1f} us"
    if t < 1:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        data = json.load(fh)
    print(format_table(data["benchmarks"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
