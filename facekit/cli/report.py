"""``facekit report OUTPUT``: a static HTML QA report of a run; ``facekit show PATH``: a
contact sheet PNG of a RecordIO or identity-folder dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from facekit.errors import FacekitError


@click.command("report")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("-o", "--report", "report_dir", type=click.Path(file_okay=False), help="report folder (default OUTPUT/report)")
@click.option("--per-page", type=click.IntRange(1, 100000), default=100, show_default=True, help="identities per page")
@click.option("--max-per-identity", type=click.IntRange(1, 10000), default=30, show_default=True,
              help="crops shown per identity (spread over its kept faces)")
@click.option("--rejects-per-page", type=click.IntRange(1, 100000), default=200, show_default=True)
def report_command(output, report_dir, per_page, max_per_identity, rejects_per_page):
    """Write an HTML report of the run in OUTPUT: summary, per-identity contact sheets,
    rejected images by reason, flagged faces, histograms, the name -> label map."""
    from facekit.cli.main import TERMINATED, unwind_on_sigterm
    from facekit.params import normalized
    from facekit.report.build import build_report

    unwind_on_sigterm()
    # printed as `facekit run` prints its paths: configs/../o2 -> o2 where that is the same place
    output = normalized(Path(output))
    report_dir = None if report_dir is None else normalized(Path(report_dir))
    unchanged = "the report was not written, any previous report is unchanged"
    try:
        r = build_report(output, report_dir, per_page=per_page, max_per_identity=max_per_identity,
                         rejects_per_page=rejects_per_page)
    except FacekitError as e:
        click.echo(f"error: {' '.join(str(e).split())}", err=True)
        sys.exit(1)
    except OSError as e:  # writing the report (disk full, permissions)
        click.echo(f"error: {e.filename or report_dir or output}: {e.strerror or e}; {unchanged}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(f"error: interrupted; {unchanged}", err=True)
        sys.exit(130)
    except SystemExit as e:
        if e.code == TERMINATED:
            click.echo(f"error: terminated; {unchanged}", err=True)
        raise
    click.echo(f"{r['index']}: {r['identities']} identities, {r['rejected_images']} rejected images, "
               f"{r['flagged']} flagged, {r['pages']} pages, {r['thumbnails']} thumbnails, {r['seconds']} s")


@click.command("show")
@click.argument("path", type=click.Path())
@click.option("--identity", help="only this identity: a label (RecordIO) or an identity folder name")
@click.option("-o", "--output", default="sheet.png", show_default=True, type=click.Path(dir_okay=False), help="PNG to write")
@click.option("-n", "--count", type=click.IntRange(1, 10000), default=64, show_default=True, help="most images shown")
@click.option("--cols", type=click.IntRange(1, 100), default=8, show_default=True)
def show_command(path, identity, output, count, cols):
    """Render a contact sheet PNG of a dataset: a RecordIO folder (train.rec/.idx) or
    identity folders, optionally of one identity."""
    import cv2

    from facekit.report.sheet import contact_sheet

    try:
        sheet = contact_sheet(path, identity=identity, count=count, cols=cols)
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(output), sheet):
            raise FacekitError(f"{output}: could not write the PNG")
    except FacekitError as e:
        click.echo(f"error: {' '.join(str(e).split())}", err=True)
        sys.exit(1)
    click.echo(f"{output}: {sheet.shape[1]}x{sheet.shape[0]}")
