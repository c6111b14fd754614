"""Where a pipeline may write: checks ``validate`` runs on the output and sink paths.

A run owns its ``output`` folder (``rejects.tsv``, ``summary.json``, ``.facekit/``) and every
sink writes a file or folder inside it. Refused, each with the config line:

- ``output`` the filesystem root, a system folder (``/etc``, ``/usr``, ...), the home folder
  itself, or an existing non-empty folder that is not a facekit output;
- a sink path outside ``output`` (``../..``), equal to it, or on a name the run itself writes;
- two sinks on the same path, or one inside the other;
- ``output`` equal to or inside an input folder (the source would read the outputs), and any
  sink path that is, contains or lies inside an input (a source folder, a model file).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

#: folders that are never an output, nor anything inside them
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin", "/sys", "/usr")
#: folders that are never an output themselves (their sub-folders may be)
SYSTEM_FOLDERS = ("/", "/home", "/root", "/var", "/opt", "/srv", "/tmp", "/mnt", "/media", "/snap", "/Users", "/Volumes")
#: names the run writes in ``output`` itself
RUN_FILES = ("rejects.tsv", "summary.json", "results.parquet", "report", ".facekit")


def _real(p: Path) -> Path:
    """``p`` with every symbolic link and ``..`` resolved (where a folder really is)."""
    return Path(os.path.realpath(os.path.expanduser(str(p))))


def _real_parent(p: Path) -> Path:
    """``p`` with its parent folders resolved but a symlink in the last component kept: a
    sink replaces the link it names, never what the link points to."""
    p = Path(os.path.abspath(os.path.expanduser(str(p))))
    return Path(os.path.realpath(p.parent)) / p.name if p.name else p


def _inside(child: Path, parent: Path) -> bool:
    """``child`` is ``parent`` or below it (both already resolved)."""
    return child == parent or parent in child.parents


def is_facekit_output(folder: Path) -> bool:
    """A folder a facekit run wrote: it has ``.facekit/``, or (older runs) both
    ``summary.json`` and ``rejects.tsv``."""
    return (folder / ".facekit").is_dir() or ((folder / "summary.json").is_file() and (folder / "rejects.tsv").is_file())


def check_output(output: Path, add: Callable[[tuple, str], None]) -> None:
    """Refuse an ``output`` folder a run must not write into (see module doc)."""
    real = _real(output)
    home = _real(Path.home())
    for t in SYSTEM_TREES:
        if _inside(real, _real(Path(t))) and Path(t).exists():
            add(("output",), f"output {output} is a system folder (inside {t}); choose a folder of your own")
            return
    if str(real) in SYSTEM_FOLDERS or real == home or real.parent == real:
        add(("output",), f"output {output} is a system or home folder itself; choose a sub-folder for the run")
        return
    if real.is_dir():
        try:
            non_empty = any(real.iterdir())
        except OSError as e:
            add(("output",), f"output {output}: cannot list it: {e.strerror or e}")
            return
        if non_empty and not is_facekit_output(real):
            add(
                ("output",),
                f"output {output} exists, is not empty and is not a facekit output folder (no .facekit/ inside): "
                "choose a new or empty folder",
            )
    elif real.exists():
        add(("output",), f"output {output} exists and is not a folder")


def check_sinks(
    output: Path,
    sinks: Iterable[tuple[tuple, str, Path]],
    inputs: Iterable[tuple[str, Path]],
    add: Callable[[tuple, str], None],
) -> None:
    """Check sink output paths against ``output``, each other and the inputs.

    Args:
        sinks: ``(config location, label, path)`` of every Path-valued sink parameter.
        inputs: ``(label, path)`` of every Path-valued parameter of the other stages.
    """
    out = _real(output)
    ins = [(label, _real(p)) for label, p in inputs]
    out_named = _real_parent(output)  # where a link named as the output sits
    for (label, p), (_, given) in zip(ins, inputs):
        if p.is_dir() and (_inside(out, p) or _inside(out_named, p) or _inside(out_named, _real_parent(given))):
            add(("output",), f"output {output} is inside {label}'s input folder {p}: the run would read its own outputs")
    seen: list[tuple[tuple, str, Path]] = []
    for loc, label, path in sinks:
        real = _real_parent(path)
        if real == out or out not in real.parents:
            add(loc, f"{label}: path {path} must be inside output {output} (a sink writes only there)")
            continue
        if real.parent == out and real.name in RUN_FILES:
            add(loc, f"{label}: path {path} is a name the run itself writes in output")
            continue
        for oloc, olabel, other in seen:
            if _inside(real, other) or _inside(other, real):
                add(loc, f"{label}: path {path} overlaps {olabel}'s path {other}: one sink would destroy the other's output")
        for ilabel, p in ins:
            if _inside(real, p) or _inside(p, real):
                add(loc, f"{label}: path {path} overlaps {ilabel}'s input {p}: the sink would replace its own input")
        seen.append((loc, label, real))
