"""The ``facekit`` command: run, validate, plugins."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

import click

from facekit.errors import ConfigError, FacekitError


@click.group()
@click.version_option(package_name="facekit")
def main():
    """facekit: detect, align and pack faces into training and verification sets."""
    debug = bool(os.environ.get("FACEKIT_DEBUG"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _load(config, output=None):
    from facekit.pipeline.config import load_config

    try:
        return load_config(config, output=output)
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
def validate(config):
    """Check a pipeline config (plugins, parameters, paths) without running it."""
    spec = _load(config)
    stages = [spec.source, spec.detector, spec.aligner, *spec.augmenters, *spec.sinks]
    click.echo(f"{config}: OK")
    for sc in stages:
        if sc is not None:
            click.echo(f"  {sc.kind:<9} {sc.where}")
    click.echo(f"  output    {spec.output}")


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(file_okay=False), help="override the config's output folder")
@click.option("-w", "--workers", type=click.IntRange(0, 512), help="worker processes (the processes executor; 0: in this process)")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
def run(config, output, workers, quiet):
    """Run a pipeline: source -> detector -> aligner -> augmenters -> sinks."""
    from facekit.pipeline.engine import run as run_pipeline

    spec = _load(config, output)
    if workers is not None:
        spec.set_workers(workers)

    def terminate(signum, frame):  # SIGTERM: unwind like Ctrl-C, so staging files are removed
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        summary = run_pipeline(spec, progress=False if quiet else None)
    except (FacekitError, OSError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("error: interrupted; nothing was published, previous outputs are unchanged", err=True)
        sys.exit(130)
    except SystemExit as e:
        if e.code == 128 + signal.SIGTERM:
            click.echo("error: terminated; nothing was published, previous outputs are unchanged", err=True)
        raise
    except Exception as e:  # a bug: one line, the traceback with FACEKIT_DEBUG=1
        if os.environ.get("FACEKIT_DEBUG"):
            raise
        click.echo(f"error: internal error: {type(e).__name__}: {e} (FACEKIT_DEBUG=1 shows the traceback)", err=True)
        sys.exit(1)
    s = summary
    click.echo(f"images read        {s.images_read}")
    click.echo(f"faces kept         {s.faces_kept}")
    click.echo(f"identities written {s.identities_written} (dropped: {s.identities_dropped})")
    click.echo(f"rejected           {sum(s.rejects.values())}")
    for reason, n in s.rejects.items():
        click.echo(f"  {reason:<20} {n}")
    click.echo(f"seconds            {s.seconds:.1f}")
    sh = s.shards
    again = f", {sh['run_again']} run again" if sh.get("run_again") else ""
    click.echo(f"shards             {sh.get('count')} of ~{sh.get('size')} items ({sh.get('reused')} reused{again}; executor {s.executor.get('plugin')})")
    for where, st in s.sinks.items():
        click.echo(f"sink {where}: {json.dumps(st)}")
    click.echo(f"rejects file       {spec.output / 'rejects.tsv'}")
    click.echo(f"results table      {s.results}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def plugins(as_json):
    """List installed plugins, their stages and parameters."""
    from facekit.plugins import plugin_listing

    listing = plugin_listing()
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    for p in listing:
        head = f"{p['name']} {p['version']}".strip()
        click.echo(f"{head}  ({p['module']})")
        if p["error"]:
            click.echo(f"  FAILED TO LOAD: {p['error']}")
        for st in p["stages"]:
            click.echo(f"  {st['kind']} {st['name']}: {st['description']}")
            for prm in st["params"]:
                req = "required" if prm["required"] else f"default {prm['default']!r}"
                click.echo(f"      {prm['name']}: {prm['type']} ({req}) {prm['description']}")


from facekit.cli import rec as cli_rec  # noqa: E402  (inspect, verify, reindex)
from facekit.cli.eval import eval_command  # noqa: E402
from facekit.cli.masks import mask_sheet_command  # noqa: E402
from facekit.cli.pairs import pairs_command  # noqa: E402

main.add_command(eval_command)
main.add_command(pairs_command)
main.add_command(mask_sheet_command)
from facekit.cli.overlap import overlap_command  # noqa: E402

main.add_command(overlap_command)
for _cmd in cli_rec.main.commands.values():
    main.add_command(_cmd)


if __name__ == "__main__":
    main()
