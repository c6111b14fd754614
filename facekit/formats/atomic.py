"""Atomic files: write under a temporary name, then rename.

A crash leaves the previous file or none, never a half-written file that looks whole. A
run's outputs as a whole are published by :mod:`facekit.pipeline.publish`.
"""

from __future__ import annotations

import os
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


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new entry in ``folder`` durable (``fsync`` of the folder), where
    the system allows opening a folder; any error is ignored (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
