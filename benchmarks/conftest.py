"""pytest configuration of the benchmarks.

* ``bench_*.py`` files are collected when the directory is given (``pytest benchmarks``);
  pyproject's test paths only cover ``tests/``.
* After a run the kernel groups are summarised by :func:`report.format_table` (medians,
  speed-ups over the reference and NumPy, % of copy bandwidth).
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # baselines.py and report.py

from report import format_table  # noqa: E402


def pytest_collect_file(parent, file_path):
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):  # given files are collected anyway
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    benches = getattr(session, "benchmarks", None)
    if not benches:
        return
    try:  # pytest-benchmark internals: each entry serialises like the JSON file
        entries = [b.as_dict(include_data=False) for b in benches]
    except Exception as exc:  # a newer pytest-benchmark: the JSON + report.py still work
        terminalreporter.write_line(f"(no kernel summary: {exc!r})")
        return
    if any(e.get("extra_info", {}).get("impl") for e in entries):
        terminalreporter.section("kernel summary (benchmarks/report.py)")
        terminalreporter.write_line(format_table(entries))
