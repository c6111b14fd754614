"""The ``facekit`` command: ``run``, ``validate``, ``plugins``; every other command is added
by a plugin's ``register_commands(cli)`` hook the first time the group looks a command up
or lists them (:func:`add_plugin_commands`), the built-in ones by
:mod:`facekit.cli.commands`. Importing this module loads no plugin: a pipeline that loads
the plugins (the engine, a worker process) imports it through the built-in commands plugin
and must not load them a second time from inside that import."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

import click

from facekit.errors import ConfigError, FacekitError, InterruptedAfterPublication, one_line

#: exit status of a command that SIGTERM ended (as a shell reports a process it killed)
TERMINATED = 128 + signal.SIGTERM


def unwind_on_sigterm() -> None:
    """Make SIGTERM raise ``SystemExit(143)`` in the main thread, so that a command unwinds
    as it does on Ctrl-C (its ``finally`` blocks run: staging files are removed) instead of
    being killed where it stands. Commands that write outputs call it first."""

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


class FacekitGroup(click.Group):
    """The ``facekit`` group. When the plugins could not be loaded (``plugin_error``), its
    help says so and a command a plugin would have added fails naming the reason."""

    plugin_error: str = ""
    _plugin_commands_added: bool = False

    def add_plugin_commands(self) -> None:
        """Add the plugins' commands (:func:`add_plugin_commands`), once."""
        if not self._plugin_commands_added:
            self._plugin_commands_added = True
            add_plugin_commands(self)

    def list_commands(self, ctx):
        self.add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx, cmd_name):
        self.add_plugin_commands()
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and self.plugin_error and not ctx.resilient_parsing:
            ctx.fail(f"No such command {cmd_name!r} (plugin commands were not loaded: {self.plugin_error})")
        return cmd

    def format_epilog(self, ctx, formatter):
        super().format_epilog(ctx, formatter)
        if self.plugin_error:
            formatter.write_paragraph()
            formatter.write_text(f"Plugin commands were not loaded: {self.plugin_error}")


@click.group(cls=FacekitGroup)
@click.version_option(package_name="facekit")
def main():
    """facekit: detect, align and pack faces into training and verification sets."""
    debug = bool(os.environ.get("FACEKIT_DEBUG"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


#: help of ``--set`` (``run``, ``validate``, ``align``)
SET_HELP = ("override a config key: KEY a dotted path (detector.threshold, sinks.0.path; N one past a list's end "
            "adds an entry), VALUE read as YAML (0.6, abc, [1, 2], {plugin: folders, path: f}); paths resolve as in "
            "the file; checked like the file, errors name the --set; repeatable, applied in order")


def set_option(f):
    """The ``--set KEY=VALUE`` option (repeatable) of the commands that load a config."""
    return click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=SET_HELP)(f)


def parse_sets(sets) -> list:
    """The :class:`facekit.pipeline.overrides.Override` of each ``--set``; a malformed one
    ends the command with a one-line error (exit status 2)."""
    from facekit.pipeline.overrides import parse_set

    try:
        return [parse_set(s) for s in sets]
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


def _load(config, output=None, sets=()):
    from facekit.pipeline.config import load_config

    overrides = parse_sets(sets)
    try:
        return load_config(config, output=output, overrides=overrides)
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@set_option
def validate(config, sets):
    """Check a pipeline config (plugins, parameters, paths) without running it."""
    spec = _load(config, sets=sets)
    stages = [*spec.sources, spec.detector, spec.aligner, spec.recognizer, spec.face_quality, spec.cleaner,
              *spec.augmenters, *spec.sinks, spec.executor]
    click.echo(f"{config}: OK")
    for sc in stages:
        if sc is not None:
            click.echo(f"  {sc.kind:<9} {sc.where}")
    click.echo(f"  output    {spec.output}")
    click.echo(f"  shards    {spec.shard_size or 'automatic size'}; resume {'on' if spec.resume else 'off'}")


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(file_okay=False), help="override the config's output folder")
@click.option("-w", "--workers", type=click.IntRange(0, 512), help="workers: of the executor the config names (threads, processes, ray), else worker processes (as "
              "'workers: N'); 0: in this process, one shard at a time")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@set_option
def run(config, output, workers, quiet, sets):
    """Run a pipeline: source -> detector -> aligner -> augmenters -> sinks."""
    run_spec(_load(config, output, sets), workers, quiet)


def run_spec(spec, workers: int | None = None, quiet: bool = False) -> None:
    """Run a validated pipeline as ``facekit run`` does (``facekit align`` too): ``workers``
    as ``-w``, the summary printed; any error ends the command with one line and its exit
    status (1, 130 on Ctrl-C, 143 on SIGTERM)."""
    from facekit.pipeline.engine import run as run_pipeline

    if workers is not None:
        spec.set_workers(workers)

    unwind_on_sigterm()
    try:
        summary = run_pipeline(spec, progress=False if quiet else None)
    except (FacekitError, OSError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except InterruptedAfterPublication as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.code)
    except KeyboardInterrupt:
        click.echo("error: interrupted; nothing was published, previous outputs are unchanged", err=True)
        sys.exit(130)
    except SystemExit as e:
        if e.code == TERMINATED:
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
    click.echo(f"shards             {sh.get('count')} (size {sh.get('size')}; {sh.get('reused')} reused{again}; executor {s.executor.get('plugin')})")
    for where, st in s.sinks.items():
        click.echo(f"sink {where}: {json.dumps(st)}")
    click.echo(f"rejects file       {spec.output / 'rejects.tsv'}")
    click.echo(f"results table      {s.results}")
    lines = s.decisions.get("lines", {})
    if lines:  # a clean stage or a merge step: what to review
        told = ", ".join(f"{k} {n}" for k, n in lines.items())
        click.echo(f"decisions          {sum(lines.values())} in {spec.output / 'decisions.tsv'} ({told})")
    if s.report:
        click.echo(f"QA report          {s.report}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def plugins(as_json):
    """List installed plugins: their stages and executors (with parameters), the commands
    they add, and each one's error in one line."""
    from facekit.plugins import plugin_listing

    try:
        listing = plugin_listing()
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    for p in listing:
        head = f"{p['name']} {p['version']}".strip()
        click.echo(f"{head}  ({p['module']})")
        if p["error"]:
            click.echo(f"  ERROR: {p['error']}")
        for st in [*p["stages"], *p["executors"]]:
            click.echo(f"  {st['kind']} {st['name']}: {st['description']}")
            for prm in st["params"]:
                req = "required" if prm["required"] else f"default {prm['default']!r}"
                click.echo(f"      {prm['name']}: {prm['type']} ({req}) {prm['description']}")
        for cmd in p["commands"]:
            click.echo(f"  command {cmd['name']}: {cmd['description']}")


def add_plugin_commands(cli: "FacekitGroup") -> None:
    """Call every plugin's ``register_commands(cli)`` hook, as simonw's ``llm`` does when its
    command line loads (here: when ``cli`` first looks a command up or lists them): the
    built-in commands (:mod:`facekit.cli.commands`) and those of third-party plugins are
    added the same way.

    The hooks run one plugin at a time on ``cli`` itself: facekit's own plugins first, then
    the others in plugin-name order. A plugin whose hook raises, or that replaces or removes
    a command already there (``run``, ``validate``, ``plugins`` or an earlier plugin's),
    cannot break the command line: the commands are put back as they were before its hook
    (those it added anew are kept unless its hook raised) and its error is recorded on its
    :class:`facekit.plugins.PluginInfo` (one line in ``facekit plugins``), as are the
    commands it added. If the plugins cannot be loaded at all (two plugins registering the
    same stage name, say), only facekit's own commands are there and ``cli.plugin_error``
    says why (in ``--help`` and for an unknown command).
    """
    from facekit.plugins import get_registry

    try:
        reg = get_registry()
    except Exception as e:  # noqa: BLE001 - `facekit run` reports it; --help must still work
        cli.plugin_error = one_line(e)
        return
    owner = {name: "facekit" for name in cli.commands}
    impls = [i for i in reg.manager.hook.register_commands.get_hookimpls() if not (i.hookwrapper or i.wrapper)]
    # facekit's own plugins first (a third-party plugin cannot take a built-in command's name)
    for impl in sorted(impls, key=lambda i: (_distribution(reg, i.plugin_name) != "facekit", i.plugin_name)):
        info = reg.plugins.get(impl.plugin_name)
        before = dict(cli.commands)
        problems = []
        try:
            impl.function(**{arg: cli for arg in impl.argnames})
            failed = False
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the others
            problems.append(f"register_commands failed: {type(e).__name__}: {one_line(e)}")
            failed = True
        added = {n: c for n, c in cli.commands.items() if n not in before}
        taken = sorted(n for n in before if cli.commands.get(n) is not before[n])
        problems += [f"command {n!r} not replaced: it is {owner[n]}'s" for n in taken]
        cli.commands.clear()
        cli.commands.update(before)
        if not failed:
            cli.commands.update(added)
            for name, cmd in added.items():
                owner[name] = impl.plugin_name
                if info is not None:
                    info.commands.append(cmd)
        if problems and info is not None:
            info.error = "; ".join([*filter(None, [info.error]), *problems])


def _distribution(reg, plugin: str) -> str:
    info = reg.plugins.get(plugin)
    return info.distribution if info is not None else ""


if __name__ == "__main__":
    # python -m facekit.cli.main: the package has imported this module as facekit.cli.main
    # already; run that group (the one the commands plugin adds to) rather than this copy.
    from facekit.cli.main import main as _facekit

    _facekit()
