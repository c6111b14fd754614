"""One run at a time per output folder: an exclusive lock on ``<output>/.facekit/lock``.

The lock is an ``fcntl.flock`` on an open file, so the kernel releases it when the process
dies, however it dies (no stale lock after ``kill -9``). The file holds the owner's pid and
start time, for the message a second run prints. Where ``fcntl`` does not exist (Windows)
the lock is not taken.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from facekit.errors import FacekitError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = "lock"


class OutputLockedError(FacekitError):
    """Another facekit run holds the output folder."""


class OutputLock:
    """Context manager: hold ``<output>/.facekit/lock`` for the duration of a run.

    Raises:
        OutputLockedError: another live process holds it (message names the folder and pid).
    """

    def __init__(self, output: str | os.PathLike, state_dir: str = ".facekit"):
        self.path = Path(output) / state_dir / LOCK_NAME
        self.fd: int | None = None

    def __enter__(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    owner = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
                finally:
                    os.close(fd)
                raise OutputLockedError(
                    f"{self.path.parent.parent}: another facekit run is writing this output ({owner}); "
                    "wait for it to finish or choose another output"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None
