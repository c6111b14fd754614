"""Atomic publication of outputs: write under a temporary name, then rename.

A crash leaves the previous output or none, never a half-written file that looks whole.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

MARKER = ".facekit-output"


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; published files get normal modes
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


class AtomicFile:
    """A file opened for writing under ``.NAME.XXXX.partial``; ``commit()`` renames it."""

    def __init__(self, path: str | os.PathLike, mode: str = "w", **kw):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent)
        os.chmod(self.tmp, 0o666 & ~_umask())
        self.f = os.fdopen(fd, mode, **kw)

    def write(self, data):
        return self.f.write(data)

    def commit(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if not self.f.closed:
            self.f.close()
        _unlink(self.tmp)


class AtomicDir:
    """Build an output folder in a staging folder beside it, then swap it in.

    ``commit()`` moves an existing ``path`` aside, renames the staging folder to ``path``
    and deletes the old one, so readers see the old folder, briefly none, or the new one.
    An existing non-empty ``path`` that facekit did not write (no marker file) is refused
    rather than replaced.

    Raises:
        FileExistsError: ``path`` exists, is not empty and was not written by facekit.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.exists():
            if not self.path.is_dir():
                raise FileExistsError(f"{self.path}: exists and is not a folder")
            if any(self.path.iterdir()) and not (self.path / MARKER).exists():
                raise FileExistsError(
                    f"{self.path}: folder exists, is not empty and was not written by facekit; "
                    "refusing to replace it (choose another path or empty it)"
                )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent))
        os.chmod(self.staging, 0o777 & ~_umask())

    def commit(self) -> None:
        (self.staging / MARKER).write_text("written by facekit\n")
        old = None
        if self.path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".old", dir=self.path.parent))
            os.rmdir(old)
            os.replace(self.path, old)
        os.replace(self.staging, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
