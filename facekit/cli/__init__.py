"""The ``facekit`` command line: ``run``, ``validate``, ``plugins`` and the commands that
plugins register through the ``register_commands(cli)`` hook."""

from facekit.cli.main import main

__all__ = ["main"]
