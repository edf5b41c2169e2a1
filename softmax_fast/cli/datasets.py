"""``softmax-fast datasets``: list the named datasets, or download one.

The work is :mod:`softmax_fast.datasets` (where each dataset is looked for, the download and
its checksums); this module prints, and draws the download's progress bars.
"""

import click

from softmax_fast.cli.common import (
    CONTEXT,
    download_progress,
    run_guarded,
    show_progress,
    with_files,
    write_json,
)
from softmax_fast.cli.options import (
    DATASET_NAMES,
    json_files_option,
    json_flag_option,
    quiet_option,
)

EXAMPLES = """
\b
Examples:
  softmax-fast datasets                      # same as: softmax-fast datasets list
  softmax-fast datasets list --json
  softmax-fast datasets download fashion-mnist
  softmax-fast datasets download fashion-mnist --json -q
"""

#: How ``datasets list`` names the places a dataset is found in.
SOURCES = {"env": "$SOFTMAX_FAST_DATA", "cache": "user cache", "debian": "Debian package",
           "bundled": "bundled with softmax-fast"}


@click.group(invoke_without_command=True, epilog=EXAMPLES, context_settings=CONTEXT)
@click.pass_context
def datasets(ctx):
    """List the datasets (where each was found, its size) or download one.

    Without a subcommand: the same as ``list``.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(datasets_list, as_json=False)


@datasets.command("list", epilog=EXAMPLES, context_settings=CONTEXT)
@json_flag_option
@click.pass_context
def datasets_list(ctx, as_json):
    """What is available, where it was found (env var, cache, Debian package, bundled)."""
    run_guarded(ctx, _datasets_list, as_json)


def _datasets_list(as_json):
    from softmax_fast.datasets import DATA_DIR_ENV_VAR, cache_dir, list_datasets

    infos = list_datasets()
    if as_json:
        write_json({"datasets": [{"name": i.name, "description": i.description,
                                  "available": i.available,
                                  "location": str(i.location) if i.location else None,
                                  "source": i.source, "size_bytes": i.size_bytes}
                                 for i in infos],
                    "cache_dir": str(cache_dir())})
        return
    for info in infos:
        click.echo(f"{info.name}: {info.description}")
        if info.available:
            click.echo(f"  available: {info.location} ({SOURCES.get(info.source, info.source)}"
                       f", {info.size_bytes / 1e6:.1f} MB)")
        else:
            click.echo(f"  not found; get it with: softmax-fast datasets download {info.name}"
                       f" (or apt install dataset-fashion-mnist, or set {DATA_DIR_ENV_VAR})")
    click.echo(f"cache directory: {cache_dir()}")


@datasets.command("download", epilog=EXAMPLES, context_settings=CONTEXT)
@click.argument("name", metavar="NAME", type=click.Choice(DATASET_NAMES))
@click.option("--force", is_flag=True, help="Download even if it is already on disk.")
@json_files_option
@quiet_option
@click.pass_context
def datasets_download(ctx, name, force, as_json, quiet):
    """Download NAME into the user cache (checksums verified; atomic)."""
    run_guarded(ctx, _datasets_download, name, force, as_json, quiet or as_json)


def _datasets_download(name, force, as_json, quiet):
    from softmax_fast.datasets import dataset_info, download_dataset

    before = dataset_info(name)
    with download_progress(show_progress(quiet)) as progress:
        path = download_dataset(name, force=force, progress=progress)
    downloaded = force or not before.available
    if as_json:
        after = dataset_info(name)
        write_json(with_files({"name": name, "downloaded": downloaded, "location": str(path),
                               "source": after.source, "size_bytes": after.size_bytes},
                              path if downloaded else None))
        return
    if not downloaded:
        click.echo(f"{name} is already available in {path} "
                   f"({SOURCES.get(before.source, before.source)}); --force downloads it again")
    else:
        click.echo(f"{name} is in {path}")
