"""``facekit models``: the detector and recognition models facekit knows (name, URL,
licence, sha256, size, whether cached); ``facekit models get NAME`` downloads one into the
cache (:mod:`facekit.model_download`); ``facekit models path NAME`` prints its cached file."""

from __future__ import annotations

import json
import sys

import click

from facekit.errors import FacekitError


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


@click.group("models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def models_command(ctx, as_json):
    """List the models facekit can download; 'facekit models get NAME' downloads one.

    A config names a downloaded model instead of a path: 'model: scrfd_500m'. The cache is
    $FACEKIT_MODELS, else $XDG_CACHE_HOME/facekit/models, else ~/.cache/facekit/models;
    $FACEKIT_MODELS_URL replaces the download URLs with a mirror holding the same files."""
    if ctx.invoked_subcommand is not None:
        return
    from facekit.models import CACHE_ENV, cache_dir, listing

    entries = listing()
    if as_json:
        click.echo(json.dumps({"cache": str(cache_dir()), "models": entries}, indent=2))
        return
    click.echo(f"cache: {cache_dir()}  (${CACHE_ENV} to change)")
    for m in entries:
        state = "cached" if m["cached"] else f"not downloaded: facekit models get {m['name']}"
        click.echo(f"{m['name']}  {m['kind']} (plugin {m['plugin']}), {_size(m['size'])}: {state}")
        click.echo(f"    {m['note']}")
        click.echo(f"    url      {m['url']}")
        click.echo(f"    licence  {m['licence']}")
        click.echo(f"    sha256   {m['sha256']} ({m['sha256_source']})")


@models_command.command("get")
@click.argument("name")
@click.option("--force", is_flag=True, help="download again even when the cached file is intact")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def get_command(name, force, quiet):
    """Download model NAME into the cache, checking its size and sha256 (nothing is kept
    unless both match)."""
    from facekit.cli.main import TERMINATED, unwind_on_sigterm
    from facekit.model_download import download

    unwind_on_sigterm()
    try:
        path = download(name, force=force, progress=False if quiet else None)
    except FacekitError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(f"error: interrupted; nothing was written to the model cache for {name}", err=True)
        sys.exit(130)
    except SystemExit as e:
        if e.code == TERMINATED:
            click.echo(f"error: terminated; nothing was written to the model cache for {name}", err=True)
        raise
    click.echo(f"{name}: {path}")


@models_command.command("path")
@click.argument("name")
def path_command(name):
    """Print the cached file of model NAME (for options such as 'facekit eval --model')."""
    from facekit.models import cached_model

    try:
        click.echo(str(cached_model(name)))
    except FacekitError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
