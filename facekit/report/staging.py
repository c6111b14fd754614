"""The staging folder a report is written to before it replaces its place, and the removal
of the staging a killed report left.

A report to ``DIR/NAME`` is written to ``DIR/.NAME.TOKEN.partial`` (``TOKEN``: 12 hex
digits) while its writer holds an exclusive ``flock`` on ``DIR/.NAME.TOKEN.lock``; the
kernel releases the lock when the writer dies, however it dies. A ``.partial`` (or the
``.NAME.TOKEN.old`` copy of the report it replaces) whose lock file is gone or can be locked
belongs to a dead report: :func:`remove_dead_staging` (run by the next report into the same
place, and by the next ``facekit run`` into the output holding ``report/``) deletes it and
leaves those of live reports alone. The writer creates its lock file before its staging
folder and deletes it after, so a staging folder without one is always dead.

The names do not match the staging names of a run's outputs (8 hex digits), which a
``facekit run`` removes unconditionally.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: reports are not locked, dead staging stays
    fcntl = None


def _names(dest: Path) -> re.Pattern:
    """``.NAME.<token>.{partial,old,lock}`` of ``dest``, and the ``.NAME.old-<pid>`` and
    ``.NAME.<8 characters>.partial`` that reports before these names left (not 8 hex digits:
    those are a run's)."""
    n = re.escape(dest.name)
    ours = r"(?P<token>[0-9a-f]{12})\.(?P<kind>partial|old|lock)"
    before = r"old-\d+|(?![0-9a-f]{8}\.)[a-z0-9_]{8}\.partial"  # tempfile.mkdtemp's 8 characters
    return re.compile(rf"^\.{n}\.(?:{ours}|{before})$")


def _lock(fd: int, wait: bool) -> bool:
    """Whether the exclusive flock on ``fd`` was taken; False when another process holds it
    (or, ``wait`` false, would have to wait). A file system without locks counts as held."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        return True
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.ENOLCK, errno.EINVAL, errno.EBADF):
            raise
        return False


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def remove_dead_staging(dest: str | os.PathLike) -> list[Path]:
    """Delete the staging folders and old copies that dead reports into ``dest`` left
    beside it (see the module's docstring); those of live reports stay. Returns what was
    removed."""
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    pattern = _names(dest)
    entries = {}
    with os.scandir(dest.parent) as it:
        for e in it:
            m = pattern.match(e.name)
            if m:
                entries[e.name] = m
    removed = []
    dead_tokens = set()
    for name, m in entries.items():  # the lock of each token: dead when it can be taken
        if m["kind"] != "lock":
            continue
        lock = dest.parent / name
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue  # gone meanwhile (its report finished) or not ours to open
        try:
            if _lock(fd, wait=False) and _same_file(fd, lock):
                for kind in ("partial", "old"):
                    p = dest.parent / f".{dest.name}.{m['token']}.{kind}"
                    if p.exists():
                        _remove(p)
                        removed.append(p)
                _remove(lock)
                dead_tokens.add(m["token"])
        finally:
            os.close(fd)
    for name, m in entries.items():  # staging without a lock file: its writer is gone
        if m["kind"] == "lock" or m["token"] in dead_tokens:
            continue
        if m["token"] is not None and f".{dest.name}.{m['token']}.lock" in entries:
            continue  # locked by a live report
        p = dest.parent / name
        if m["token"] is not None and (dest.parent / f".{dest.name}.{m['token']}.lock").exists():
            continue  # its report started after the listing
        if p.exists() or p.is_symlink():
            _remove(p)
            removed.append(p)
    return removed


class ReportStaging:
    """Context manager: a locked staging folder for a report to ``dest`` (``.path``).

    :meth:`publish` moves it to ``dest`` (an existing ``dest`` is moved aside, then
    deleted); leaving the block without publishing (an error, Ctrl-C, SIGTERM) deletes it.
    The lock file goes last, so the staging is never seen without it while it exists.
    """

    def __init__(self, dest: str | os.PathLike):
        self.dest = Path(dest)
        self.fd: int | None = None
        self.lock = self.path = self.old = None

    def __enter__(self) -> "ReportStaging":
        parent, name = self.dest.parent, self.dest.name
        while True:
            token = secrets.token_hex(6)
            lock = parent / f".{name}.{token}.lock"
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            # waits only for a cleaner that opened the new file before it was locked; that one
            # then removed it: try another name (a file system without locks: not locked)
            _lock(fd, wait=True)
            if _same_file(fd, lock):
                break
            os.close(fd)
        self.fd, self.lock = fd, lock
        self.path = parent / f".{name}.{token}.partial"
        self.old = parent / f".{name}.{token}.old"
        try:
            self.path.mkdir(mode=0o700)
        except BaseException:
            self._release()
            raise
        return self

    def publish(self) -> None:
        """Move the staging folder to ``dest``, replacing what is there (when another report
        publishes to ``dest`` at the same moment, the last one to move stays).

        The report it replaces is moved aside first and deleted only once the new one is in
        place: when the second move fails, or an exception (Ctrl-C, SIGTERM) lands between
        the two, it is moved back, so a failed publish leaves the previous report as it was.
        """
        os.chmod(self.path, 0o755)
        for attempt in range(10):
            try:
                if self.dest.exists():
                    self.dest.rename(self.old)  # ENOENT: another report moved it meanwhile
                self.path.rename(self.dest)  # ENOTEMPTY / EEXIST: another report's is there now
            except BaseException as e:
                self._restore_old()
                if not isinstance(e, OSError) or e.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST) \
                        or attempt == 9:
                    raise
                continue
            shutil.rmtree(self.old, ignore_errors=True)
            return

    def _restore_old(self) -> None:
        """Move the report set aside by :meth:`publish` back to ``dest`` (known by its name:
        an exception may land after the rename, before any flag could record it). When
        another report took ``dest`` meanwhile, that newer one stays and the old is deleted;
        when the move back fails otherwise, the old copy stays where it is."""
        if not os.path.lexists(self.old):
            return
        try:
            self.old.rename(self.dest)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                shutil.rmtree(self.old, ignore_errors=True)

    def _release(self) -> None:
        if self.fd is not None:
            _remove(self.lock)
            os.close(self.fd)
            self.fd = None

    def __exit__(self, *exc) -> None:
        try:
            if self.path.exists():
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            self._release()
