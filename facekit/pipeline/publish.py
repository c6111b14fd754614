"""Publishing a run's outputs as one unit, and recovering from a run that died.

Every output of a run (each sink's folder or file, ``rejects.tsv``, ``summary.json``) is
first written under a staging name beside its final place (``.NAME.TOKEN.partial``). When
the whole run has succeeded, :meth:`Publication.commit` writes a journal
(``<output>/.facekit/publish.json``: every ``staging -> final`` rename of the run, paths
relative to ``output``), then performs the renames (an existing output is first moved to
``.NAME.TOKEN.old``), then deletes the old outputs and the journal.

- Killed before the journal exists: nothing was renamed; the previous outputs are intact and
  the stale staging files are removed by the next run (:func:`clean_stale`).
- Killed after: the journal names every rename; :func:`recover` (run by the next
  ``facekit run`` into the same output, before anything else) completes them, so the output
  becomes the whole new run, never a mix of two runs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from facekit.errors import FacekitError
from facekit.formats.atomic import MARKER, atomic_write_bytes, fsync_dir

#: facekit's own folder inside a run's output: lock file, publish journal, (later) work files
STATE_DIR = ".facekit"
JOURNAL = "publish.json"
#: staging and old copies: ``.NAME.<8 hex>.partial`` / ``.NAME.<8 hex>.old``
_STAGED = re.compile(r"^\..+\.[0-9a-f]{8}\.(partial|old)$")
_TOKEN = re.compile(r"^[0-9a-f]{8}$")


def _staging_name(final: Path, token: str, kind: str) -> Path:
    return final.parent / f".{final.name}.{token}.{kind}"


def _remove(p: Path) -> None:
    """Delete a file, link or folder tree; a missing path is fine."""
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    except FileNotFoundError:
        pass


@dataclass
class StagedDir:
    """A folder being built for a sink: fill ``staging``; the run publishes it as ``path``."""

    path: Path
    staging: Path


class Publication:
    """The outputs of one run, staged, published together by :meth:`commit`.

    Sinks receive this object in :meth:`facekit.Sink.open` and ask it for staging places:
    :meth:`dir` for an output folder, :meth:`file` for an output file. Nothing a sink writes
    is visible under the final names until every sink has closed successfully.

    Args:
        output: the run's output folder (every final path must be inside it).
    """

    def __init__(self, output: str | os.PathLike):
        self.output = Path(output)
        self.token = secrets.token_hex(4)
        self.entries: list[tuple[Path, Path]] = []  # (staging, final)
        #: the journal is written: from then on only :func:`recover` may touch the staging
        self.journaled = False

    def _inside(self, final: Path) -> None:
        """Refuse a final path that is not inside the run's output folder (a relative sink
        path would otherwise land in the working directory)."""
        out = os.path.abspath(self.output)
        if not os.path.abspath(final).startswith(out.rstrip(os.sep) + os.sep):
            raise FacekitError(f"{final}: not inside the run's output folder {self.output}; refusing to write it")

    def _claim(self, final: Path) -> Path:
        final = Path(final)
        for _, f in self.entries:
            if f == final:
                raise FacekitError(f"{final}: two outputs of this run want the same path")
        final.parent.mkdir(parents=True, exist_ok=True)
        return _staging_name(final, self.token, "partial")

    def dir(self, path: str | os.PathLike) -> StagedDir:
        """A new empty staging folder that the run publishes as ``path``.

        Raises:
            FacekitError: ``path`` is not inside the output folder; it exists and is a
                file, or a non-empty folder facekit did not write (no ``.facekit-output``
                marker): it is never replaced.
        """
        final = Path(path)
        self._inside(final)
        if final.exists() or final.is_symlink():
            if not final.is_dir() or final.is_symlink():
                raise FacekitError(f"{final}: exists and is not a folder; refusing to replace it")
            if any(final.iterdir()) and not (final / MARKER).exists():
                raise FacekitError(
                    f"{final}: folder exists, is not empty and was not written by facekit; "
                    "refusing to replace it (choose another path or empty it)"
                )
        staging = self._claim(final)
        staging.mkdir()
        self.entries.append((staging, final))
        return StagedDir(final, staging)

    def file(self, path: str | os.PathLike) -> Path:
        """The staging path of a file that the run publishes as ``path`` (not created: the
        caller writes it, e.g. with :func:`facekit.formats.atomic.atomic_write_bytes`).

        Raises:
            FacekitError: ``path`` is not inside the output folder, or exists and is a folder.
        """
        final = Path(path)
        self._inside(final)
        if final.is_dir() and not final.is_symlink():
            raise FacekitError(f"{final}: exists and is a folder; refusing to replace it with a file")
        staging = self._claim(final)
        self.entries.append((staging, final))
        return staging

    def commit(self) -> None:
        """Publish every staged output: journal first, then the renames (see module doc).

        Raises:
            FacekitError: a staged output is missing (a sink did not write what it claimed).
            OSError: a rename failed; the journal stays and the next run completes it.
        """
        for staging, final in self.entries:
            if not staging.exists():
                raise FacekitError(f"{final}: nothing was written to its staging place {staging.name}")
            if staging.is_dir():
                (staging / MARKER).write_text("written by facekit\n")
        state = self.output / STATE_DIR
        state.mkdir(parents=True, exist_ok=True)
        journal = {
            "version": 1,
            "token": self.token,
            "entries": [
                {"staging": os.path.relpath(s, self.output), "final": os.path.relpath(f, self.output)}
                for s, f in self.entries
            ],
        }
        atomic_write_bytes(state / JOURNAL, (json.dumps(journal, indent=1) + "\n").encode())
        self.journaled = True
        _apply(self.output, journal)

    def abort(self) -> None:
        """Remove every staging place of this run; the previous outputs stay as they were.
        Once the journal is written (a commit that failed or was interrupted half way) the
        staging places are left for :func:`recover`, which the next run calls first.

        Raises:
            OSError: a staging place could not be removed (the first one, naming it), after
                every other was removed; :func:`clean_stale` removes it in the next run.
        """
        if self.journaled:
            return
        first = None
        for staging, _ in self.entries:
            try:
                _remove(staging)
            except OSError as e:
                first = first or e
        if first is not None:
            raise first


def _apply(output: Path, journal: dict) -> None:
    """Perform (or complete) the renames of a journal, then delete old outputs and it."""
    token = journal["token"]
    olds = []
    parents = set()
    for e in journal["entries"]:
        staging, final = output / e["staging"], output / e["final"]
        old = _staging_name(final, token, "old")
        olds.append(old)
        parents.add(final.parent)
        if not (staging.exists() or staging.is_symlink()):
            continue  # already renamed into place
        if final.exists() or final.is_symlink():
            if old.exists():  # cannot happen in order; never lose the staged output
                _remove(final)
            else:
                os.replace(final, old)
        os.replace(staging, final)
    for d in parents:
        fsync_dir(d)
    for e, old in zip(journal["entries"], olds):
        if (output / e["final"]).exists():  # never delete the only copy of an output
            _remove(old)
        elif old.exists():
            os.replace(old, output / e["final"])
    (output / STATE_DIR / JOURNAL).unlink(missing_ok=True)


def recover(output: str | os.PathLike) -> bool:
    """Complete a publication that a killed run left half done (its journal exists).

    Call with the output locked (:class:`facekit.pipeline.runlock.OutputLock`). Returns True when a
    journal was found and completed.

    Raises:
        FacekitError: the journal is unreadable or names a path outside ``output``.
    """
    output = Path(output)
    path = output / STATE_DIR / JOURNAL
    if not path.exists():
        return False
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FacekitError(f"{path}: unreadable publish journal ({e}); remove it to start afresh") from None
    _check_journal(path, output, journal)
    _apply(output, journal)
    return True


def _check_journal(path: Path, output: Path, journal) -> None:
    """Refuse a journal that is not exactly what :meth:`Publication.commit` writes: a token
    of 8 hex digits, entries of relative paths strictly inside ``output`` (no ``..``), each
    staging name derived from its final name and the token."""

    def bad(why: str) -> FacekitError:
        return FacekitError(f"{path}: not a facekit publish journal ({why}); remove it to start afresh")

    if not isinstance(journal, dict) or not _TOKEN.match(str(journal.get("token", ""))):
        raise bad("no valid token")
    entries = journal.get("entries")
    if not isinstance(entries, list):
        raise bad("no list of entries")
    for e in entries:
        if not (isinstance(e, dict) and isinstance(e.get("staging"), str) and isinstance(e.get("final"), str)):
            raise bad("an entry is not {staging, final}")
        final = Path(e["final"])
        if final.is_absolute() or ".." in final.parts or final.name in ("", "."):
            raise bad(f"entry {e['final']!r} is not a path inside the output")
        if Path(e["staging"]) != _staging_name(final, journal["token"], "partial"):
            raise bad(f"entry {e['staging']!r} is not the staging name of {e['final']!r}")


def clean_stale(finals: list[Path]) -> list[Path]:
    """Remove staging and old copies that dead runs left in the folders of ``finals``:
    ``.NAME.*.partial`` / ``.NAME.*.old`` of these outputs, and any ``.NAME.<token>.partial``
    / ``.old`` a run with other output names left there (a token is 8 hex digits). Call with
    the output locked. Returns what was removed."""
    removed = []
    prefixes: dict[Path, list[str]] = {}
    for final in finals:
        prefixes.setdefault(Path(final).parent, []).append(f".{Path(final).name}.")
    for parent, pre in prefixes.items():
        if not parent.is_dir():
            continue
        with os.scandir(parent) as it:
            for entry in it:
                n = entry.name
                ours = any(n.startswith(p) for p in pre) and (n.endswith(".partial") or n.endswith(".old"))
                if ours or _STAGED.match(n):
                    _remove(Path(entry.path))
                    removed.append(Path(entry.path))
    return removed
