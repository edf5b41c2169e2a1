"""``softmax-fast bench``: time our backends against NumPy, PyTorch and scikit-learn."""

import click

from softmax_fast.cli.common import CONTEXT, run_guarded, show_progress, write_json
from softmax_fast.cli.options import (
    BENCH_BACKENDS,
    POSITIVE_INT,
    json_flag_option,
    quiet_option,
    threads_option,
)

EXAMPLES = """
\b
Examples:
  softmax-fast bench --quick                 # a few seconds
  softmax-fast bench --json > bench.json     # 60,000 samples, the full report as JSON
  softmax-fast bench --backend cython --threads 1
"""


@click.command(epilog=EXAMPLES, context_settings=CONTEXT)
@click.option("--quick", is_flag=True,
              help="1,000 samples and few repeats: seconds instead of minutes.")
@click.option("--backend", "backends", type=click.Choice(BENCH_BACKENDS),
              multiple=True,
              help="Our backends to time (repeatable) [default: all available, but the "
                   "opt-in cython-<isa> builds].")
@threads_option
@click.option("--repeats", type=POSITIVE_INT, default=None,
              help="Timed runs per measurement [default: 3 quick, 5 full].")
@json_flag_option
@quiet_option
@click.pass_context
def bench(ctx, quick, backends, n_threads, repeats, as_json, quiet):
    """Time our backends against NumPy, PyTorch and scikit-learn on this machine.

    Tasks: the fused linear+softmax+cross-entropy kernel, one SGD epoch (batch 32) and
    L-BFGS iterations, each the median of several runs after a warm-up run, next to the
    machine's floor (measured GEMM rate and copy bandwidth). PyTorch and scikit-learn are
    included when installed; scikit-learn's SGDClassifier epoch (one-vs-rest, one sample
    per step: another algorithm) is a row of its own, without a speed-up.
    """
    run_guarded(ctx, _bench, quick, backends, n_threads, repeats, as_json, quiet or as_json)


def _bench(quick, backends, n_threads, repeats, as_json, quiet):
    from softmax_fast.bench import format_report, run_benchmark

    show = show_progress(quiet)

    def progress(label):
        if show:
            click.echo(f"\r\x1b[Ktiming {label}", nl=False, err=True)

    report = run_benchmark(quick=quick, backends=backends or None, n_threads=n_threads,
                           repeats=repeats, progress=progress)
    if show:
        click.echo("\r\x1b[K", nl=False, err=True)
    if as_json:
        write_json(report)
        return
    click.echo(format_report(report))
