"""``facekit pairs``: a verification pairs list from your own identity folders."""

from __future__ import annotations

import sys

import click

from facekit.errors import FacekitError


@click.command("pairs")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="pairs list to write")
@click.option(
    "--seed", default=0, show_default=True,
    help="seed (random.Random) of the negative pairs and of the positives kept under the caps: "
    "the same seed and options give the same list",
)
@click.option("--folds", default=10, show_default=True, type=click.IntRange(1), help="evaluation folds")
@click.option(
    "--max-per-identity", type=click.IntRange(1), default=None,
    help="at most N positive pairs per identity (a seeded sample of a larger identity's pairs; default: all)",
)
@click.option(
    "--max-pairs", type=click.IntRange(2), default=None,
    help="at most N pairs in all: N/2 positives (a seeded sample of those left after --max-per-identity) "
    "and as many negatives (default: no limit)",
)
def pairs_command(root, output, seed, folds, max_per_identity, max_pairs):
    """Write a 'path1 path2 0|1' pairs list for ROOT/<identity>/<image>: the positive
    pairs and as many seeded negatives, ordered LFW style (each of the FOLDS contiguous
    blocks holds positives then negatives, so every evaluation fold has both kinds). Paths
    are relative to ROOT: use it as `pairs:` of the `pairs` source with `root: ROOT`.

    Every positive pair is listed unless capped: an identity of n images has n(n-1)/2 of
    them, so a large tree gives far more pairs than images; --max-per-identity and
    --max-pairs cap them (deterministic for a given --seed). Every fold needs a positive
    and a negative pair: fewer than 2 x FOLDS pairs is refused.
    """
    from facekit.formats.pairs import folder_pairs, write_pairs

    if max_pairs is not None and max_pairs // 2 < folds:  # a fold without a positive and a negative
        click.echo(f"error: --max-pairs {max_pairs} gives {max_pairs // 2} positive and {max_pairs // 2} negative "
                   f"pairs; {folds} folds need at least {2 * folds} pairs (a positive and a negative in each "
                   "fold): raise --max-pairs or lower --folds", err=True)
        sys.exit(2)
    try:
        pairs = folder_pairs(
            root, seed=seed, folds=folds, max_per_identity=max_per_identity, max_pairs=max_pairs
        )
        write_pairs(output, pairs)
    except (FacekitError, OSError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    pos = sum(p.issame for p in pairs)
    click.echo(f"{output}: {len(pairs)} pairs ({pos} positive, {len(pairs) - pos} negative) in {folds} folds")
