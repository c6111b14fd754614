"""``facekit overlap``: training identities that are also in verification sets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from facekit.errors import FacekitError


@click.command("overlap")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option("--against", "bins", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="verification .bin (repeat: --against lfw.bin --against cfp_fp.bin)")
@click.option("--model", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="face-recognition ONNX model")
@click.option("--threshold", default=0.5, show_default=True, type=click.FloatRange(-1, 1), help="cosine similarity from which an identity counts as the same person")
@click.option("--per-identity", default=10, show_default=True, type=click.IntRange(1, 10_000), help="training images per identity used for its centre")
@click.option("--exclude", "exclude_file", type=click.Path(dir_okay=False, path_type=Path), help="write the overlapping identities, one per line: give it to a source's 'exclude:' to write the dataset without them")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def overlap_command(dataset, bins, model, threshold, per_identity, exclude_file, as_json):
    """List the identities of DATASET (a RecordIO set or identity folders of aligned crops)
    that match people of the verification bins."""
    from facekit.eval.overlap import find_overlap, write_exclude
    from facekit.eval.recognition import OnnxEmbedder

    try:
        matches, n = find_overlap(dataset, list(bins), OnnxEmbedder(model), threshold, per_identity)
        if exclude_file is not None:
            write_exclude(exclude_file, matches)
    except (FacekitError, OSError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps({"compared": n, "threshold": threshold, "overlap": [m.__dict__ for m in matches]}, indent=2))
        return
    click.echo(f"{len(matches)} of {n} identities match the verification sets (cosine >= {threshold:g})")
    for m in matches:
        imgs = ", ".join(f"{name} {s:.3f}" for name, s in m.images)
        click.echo(f"  {m.identity}\t{m.similarity:.3f}\t{imgs}")
    if exclude_file is not None:
        click.echo(f"exclude list       {exclude_file}")
