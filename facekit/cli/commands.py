"""facekit's built-in commands, a plugin like any other: ``align``, ``init``, ``eval``, ``pairs``,
``mask-sheet``, ``models``, ``overlap``, ``report``, ``show`` and the RecordIO tools ``inspect``, ``verify``, ``reindex``.

Found through the ``facekit`` entry-point group (``commands = "facekit.cli.commands"`` in
``pyproject.toml``) and added by the ``register_commands(cli)`` hook, exactly as a
third-party plugin adds its own. The command modules are imported when the hook runs (the
command line's start-up), not when the plugin is loaded for a pipeline.
"""

from __future__ import annotations

import facekit


@facekit.hookimpl
def register_commands(cli):
    """Add the built-in commands to ``cli`` (the ``facekit`` :class:`click.Group`)."""
    from facekit.cli import rec
    from facekit.cli.align import align_command
    from facekit.cli.eval import eval_command
    from facekit.cli.init import init_command
    from facekit.cli.masks import mask_sheet_command
    from facekit.cli.models import models_command
    from facekit.cli.overlap import overlap_command
    from facekit.cli.pairs import pairs_command
    from facekit.cli.report import report_command, show_command

    cli.add_command(align_command)
    cli.add_command(eval_command)
    cli.add_command(pairs_command)
    cli.add_command(mask_sheet_command)
    cli.add_command(models_command)
    cli.add_command(overlap_command)
    cli.add_command(report_command)
    cli.add_command(show_command)
    cli.add_command(init_command)
    for cmd in rec.main.commands.values():  # inspect, verify, reindex
        cli.add_command(cmd)
