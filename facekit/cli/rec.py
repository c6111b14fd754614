"""``facekit inspect``, ``facekit verify`` and ``facekit reindex``: RecordIO tools.

The built-in commands plugin (:mod:`facekit.cli.commands`) adds the commands collected in
this module's ``main`` to the ``facekit`` group.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from facekit.errors import RecordIOError


#: Collects this module's commands; :mod:`facekit.cli.commands` adds them to the ``facekit``
#: group (this module never imports :mod:`facekit.cli.main`, so it works under ``python -m``
#: and in spawned worker processes alike).
main = click.Group("rec-tools")
_layout = click.option(
    "--layout", type=click.Choice(["auto", "insightface", "plain"]), default="auto", show_default=True,
    help="force the layout instead of detecting it",
)
_prefix = click.option("--prefix", default="train", show_default=True, help="file stem inside a folder")


def _fail(e: Exception, code: int = 1):
    click.echo(f"error: {e}", err=True)
    sys.exit(code)


@main.command()
@click.argument("path", type=click.Path(exists=True))
@_prefix
@_layout
@click.option("--sample", default=500, show_default=True, help="images whose encoding/size are read (seeded)")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def inspect(path, prefix, layout, sample, seed, as_json):
    """Describe a RecordIO face dataset: layout, records, images, identities,
    images per identity, label kinds, property, image encodings and sizes (sampled).

    PATH: a .rec, a .idx, or a folder with train.rec or train-*-of-*.rec shards.
    """
    from facekit.formats.rec_inspect import format_report
    from facekit.formats.rec_inspect import inspect as run_inspect

    try:
        info = run_inspect(path, prefix=prefix, layout=layout, sample=sample, seed=seed)
    except (RecordIOError, OSError, ValueError) as e:
        _fail(e)
    click.echo(json.dumps(info, indent=2) if as_json else format_report(info))


@main.command()
@click.argument("path", type=click.Path(exists=True))
@_prefix
@_layout
@click.option("--decode/--no-decode", default=True, show_default=True, help="decode every image")
@click.option("-j", "--jobs", default=1, show_default=True, help="processes for decoding")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def verify(path, prefix, layout, decode, jobs, as_json):
    """Check every record: magic, lengths, idx offsets, header and identity records,
    each record's header id against its key (insightface layout, where the writer records
    ids), labels contiguous per identity, property, every image decodable. Exits 1 and
    names each bad record (file, key, offset) when anything is wrong.
    """
    from facekit.formats.rec_verify import verify as run_verify

    try:
        rep = run_verify(path, prefix=prefix, layout=layout, decode=decode, jobs=jobs)
    except (RecordIOError, OSError, ValueError) as e:
        _fail(e)
    if as_json:
        click.echo(json.dumps(rep, indent=2))
    else:
        for p in rep["problems"]:
            click.echo(p)
        for n in rep["notes"]:
            click.echo(f"note: {n}")
        status = "OK" if rep["ok"] else f"{rep['problem_count']} PROBLEM(S)"
        layouts = ",".join(sorted({f["layout"] for f in rep["files"]}))
        click.echo(
            f"{rep['path']}: {status} ({len(rep['files'])} file(s), layout {layouts}, "
            f"{rep['images']} images, {rep['identities']} identities"
            f"{', decoded' if decode else ', not decoded'})"
        )
    sys.exit(0 if rep["ok"] else 1)


@main.command()
@click.argument("rec", type=click.Path(exists=True, dir_okay=False))
@click.option("--idx", "idx_path", type=click.Path(dir_okay=False), help="output (default: REC with .idx)")
@click.option(
    "--keys", type=click.Choice(["auto", "ordinal", "id"]), default="auto", show_default=True,
    help="ordinal: record number; id: IRHeader id (im2rec); auto: ordinal for the insightface layout, else id when unique",
)
@click.option("--force", is_flag=True, help="replace an existing idx")
@click.option("--partial", is_flag=True, help="on a damaged record, index the records before it")
def reindex(rec, idx_path, keys, force, partial):
    """Rebuild the .idx of a .rec by scanning it sequentially (written atomically)."""
    from facekit.formats.atomic import atomic_write_bytes
    from facekit.formats.recordio import build_index, format_idx

    out = Path(idx_path) if idx_path else Path(rec).with_suffix(".idx")
    if out.exists() and not force:
        _fail(f"{out} exists; use --force to replace it")
    try:
        k, offs, info = build_index(rec, keys=keys, partial=partial)
    except (RecordIOError, OSError) as e:
        _fail(e)
    atomic_write_bytes(out, format_idx(k, offs))
    click.echo(f"{out}: {info['records']} records, keys by {info['keys']}")
    if info["error"]:
        click.echo(f"warning: stopped at a damaged record: {info['error']}", err=True)
