"""``facekit init [PATH]``: write a commented starter pipeline config.

The starter (``facekit/cli/starter.yaml``) reads ``photos/<identity>/<image>`` next to the
config (or the folder ``--source`` names), detects with MTCNN (no model file; the comments
say how to get and name an ONNX detector), aligns with ArcFace 112x112 and packs RecordIO
into ``facekit-out/rec``. It validates as written: without ``--source`` an empty
``photos/`` folder is made beside it when there is none. An existing file is never
overwritten.
"""

from __future__ import annotations

import json
import os
import sys
from importlib.resources import files
from pathlib import Path

import click

#: the config ``facekit init`` writes without PATH
DEFAULT_PATH = "facekit.yaml"
#: the source line of the starter that ``--source`` replaces
ROOT_LINE = "  root: photos "


def starter_text(root: str | None = None) -> str:
    """The starter config's text; ``root``: the source folder to write instead of ``photos``
    (written as a quoted YAML string)."""
    text = files("facekit.cli").joinpath("starter.yaml").read_text(encoding="utf-8")
    if root is not None:
        assert text.count(ROOT_LINE) == 1, "starter.yaml: the source root line changed"
        text = text.replace(ROOT_LINE, f"  root: {json.dumps(root, ensure_ascii=False)} ", 1)
    return text


def _root_for(config: Path, source: str) -> str:
    """``source`` as the config must say it: relative to the config's folder when inside it,
    else absolute."""
    src = Path(os.path.abspath(source))
    here = Path(os.path.abspath(config)).parent
    return os.path.relpath(src, here) if here in src.parents or src == here else str(src)


def write_starter(path: str | os.PathLike, source: str | None = None) -> list[str]:
    """Write the starter config at ``path`` (see the module doc).

    Returns:
        what was written (the config, and ``photos/`` where it was made).
    Raises:
        FileExistsError: ``path`` exists (a file, a folder or a link: nothing is replaced).
        OSError: the folder of ``path`` is missing or not writable (nothing is left).
    """
    path = Path(path)
    text = starter_text(_root_for(path, source) if source is not None else None)
    with open(path, "x", encoding="utf-8") as f:  # O_EXCL: never replaces anything
        try:
            f.write(text)
        except BaseException:
            f.close()
            path.unlink(missing_ok=True)
            raise
    made = [str(path)]
    photos = path.parent / "photos"
    if source is None and not os.path.lexists(photos):
        try:
            photos.mkdir()
        except OSError:
            path.unlink(missing_ok=True)
            raise
        made.append(f"{photos}{os.sep}")
    return made


@click.command("init")
@click.argument("path", default=DEFAULT_PATH, type=click.Path())
@click.option("--source", metavar="DIR", help="the photos' folder, DIR/<identity>/<image> (default: photos/ beside the "
              "config, made empty when missing)")
def init_command(path, source):
    """Write a commented starter pipeline config at PATH (default: facekit.yaml).

    Folders of photos -> MTCNN -> ArcFace 112x112 -> RecordIO in facekit-out/rec. Put the
    photos in photos/<identity>/<image> beside it (or give --source, or edit source.root),
    then 'facekit run PATH'. An existing PATH is never overwritten."""
    try:
        made = write_starter(path, source)
    except FileExistsError:
        click.echo(f"error: {path} exists; facekit init never overwrites a file (give another PATH)", err=True)
        sys.exit(1)
    except OSError as e:
        click.echo(f"error: {path}: cannot write it: {e.strerror or e}", err=True)
        sys.exit(1)
    click.echo(f"wrote {' and '.join(made)}")
    where = f"{made[1]}<identity>/<image>" if len(made) > 1 else "the folder source.root names"
    click.echo(f"next: put the photos in {where}, then: facekit validate {path} && facekit run {path}")
