"""``facekit pairs``: a verification pairs list from your own identity folders."""

from __future__ import annotations

import sys

import click

from facekit.errors import FacekitError


@click.command("pairs")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="pairs list to write")
@click.option("--seed", default=0, show_default=True, help="seed of the negative pairs (random.Random)")
@click.option("--folds", default=10, show_default=True, type=click.IntRange(1), help="evaluation folds")
def pairs_command(root, output, seed, folds):
    """Write a 'path1 path2 0|1' pairs list for ROOT/<identity>/<image>: every positive
    pair and as many seeded negatives, ordered LFW style (each of the FOLDS contiguous
    blocks holds positives then negatives, so every evaluation fold has both kinds). Paths
    are relative to ROOT: use it as `pairs:` of the `pairs` source with `root: ROOT`.
    """
    from facekit.formats.pairs import folder_pairs, write_pairs

    try:
        pairs = folder_pairs(root, seed=seed, folds=folds)
        write_pairs(output, pairs)
    except (FacekitError, OSError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    pos = sum(p.issame for p in pairs)
    click.echo(f"{output}: {len(pairs)} pairs ({pos} positive, {len(pairs) - pos} negative) in {folds} folds")
