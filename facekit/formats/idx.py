"""The ``.idx`` text of MXNet indexed RecordIO: ``f"{key}\\t{offset}\\n"`` lines.

Parsed in blocks of whole lines, so that memory stays flat: :func:`load_idx` fills two
int64 arrays (16 B a record: what random access needs), :func:`scan_idx` checks in one
pass, keeping nothing per record, whether an idx can be streamed, and :func:`idx_rows`
streams a range of its rows (a sequential pass over millions of records without holding
the idx). :func:`load_idx` parses a malformed idx again line by line to name the line.
Matches Apache MXNet 1.9.1 ``MXIndexedRecordIO`` (``python/mxnet/recordio.py``), which reads
each line as ``key<TAB>offset``; a key listed twice keeps its last offset there.
"""

from __future__ import annotations

import os
import re
from typing import Iterator, NamedTuple

import numpy as np

from facekit.errors import RecordIOError

_IDX_RE = re.compile(rb"(?:-?[0-9]{1,19}\t[0-9]{1,19}\n)*(?:-?[0-9]{1,19}\t[0-9]{1,19}\n?)?")

#: bytes of an idx parsed at once (about 4k lines: ~1.5 MB of transient tokens)
_IDX_BLOCK = 1 << 16

#: the longest well-formed line: a sign, two 19-digit numbers, a tab and a newline
_MAX_LINE = 41


class _NotFast(Exception):
    """A block the fast parser does not take: the line-by-line parser decides."""


def _parse_idx_slow(path: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    keys, offs = [], []
    for lineno, line in enumerate(data.split(b"\n"), 1):
        line = line.strip()
        if not line:
            continue
        fields = line.split(b"\t")
        try:
            if len(fields) != 2:
                raise ValueError
            key, off = int(fields[0]), int(fields[1])
            if off < 0:
                raise ValueError
        except ValueError:
            raise RecordIOError(
                f"{path}:{lineno}: bad idx line {line[:80]!r} (expected 'key<TAB>offset')"
            ) from None
        if not (-(1 << 63) <= key < (1 << 63) and off < (1 << 63)):
            raise RecordIOError(f"{path}:{lineno}: idx line {line[:80]!r}: number out of range")
        keys.append(key)
        offs.append(off)
    return np.asarray(keys, dtype=np.int64), np.asarray(offs, dtype=np.int64)


def _blocks(f) -> Iterator[np.ndarray]:
    """``(m, 2)`` int64 rows ``[key, offset]`` of each block of whole lines of ``f``, from
    its current position. Raises :class:`_NotFast` at the first block that is not made of
    well-formed lines (or a line longer than any well-formed one)."""
    carry = b""
    while True:
        block = f.read(_IDX_BLOCK)
        data = carry + block
        if block:
            end = data.rfind(b"\n") + 1
            data, carry = data[:end], data[end:]
            if len(carry) > _MAX_LINE:
                raise _NotFast
        if data:
            if not _IDX_RE.fullmatch(data):
                raise _NotFast
            try:
                rows = np.array(data.split(), dtype=object).astype(np.int64).reshape(-1, 2)
            except (ValueError, OverflowError):
                raise _NotFast from None
            yield rows
        if not block:
            return


def _slow(path: str, f) -> tuple[np.ndarray, np.ndarray]:
    f.seek(0)
    return _parse_idx_slow(path, f.read())


def load_idx(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Parse an ``.idx`` file (mxnet ``MXIndexedRecordIO``: ``f"{key}\\t{offset}\\n"`` lines).

    Returns:
        ``(keys, offsets)``: two int64 arrays of the same length, in file order (an idx need
        not be sorted; a key listed twice keeps both rows here, readers use the last, as
        mxnet's dict does). Offsets are byte positions of a record's first magic.
    Raises:
        RecordIOError: a line that is not ``key<TAB>offset`` with integers and a
            non-negative offset; the message names the file, line number and line.
    """
    path = os.fspath(path)
    # lines counted first, then each block checked by one C-level match and converted at
    # once into its rows: the arrays plus one block's tokens
    with open(path, "rb") as f:
        n = 0
        last = b"\n"
        while block := f.read(_IDX_BLOCK):
            n += block.count(b"\n")
            last = block[-1:]
        n += last != b"\n"  # a last line without its newline
        keys = np.empty(n, np.int64)
        offs = np.empty(n, np.int64)
        f.seek(0)
        i = 0
        try:
            for rows in _blocks(f):
                if i + len(rows) > n:  # the file changed under us: the slow path decides
                    raise _NotFast
                keys[i : i + len(rows)] = rows[:, 0]
                offs[i : i + len(rows)] = rows[:, 1]
                i += len(rows)
        except _NotFast:
            return _slow(path, f)
        if i != n:
            return _slow(path, f)
        return keys, offs


def read_idx(path: str | os.PathLike) -> list[tuple[int, int]]:
    """Parse an ``.idx`` file into ``[(key, offset), ...]`` in file order.

    Raises:
        RecordIOError: a line that is not ``key<TAB>offset`` (names file and line).
    """
    keys, offs = load_idx(path)
    return list(zip(keys.tolist(), offs.tolist()))


class IdxScan(NamedTuple):
    """What one pass over an idx tells, with nothing kept per record (:func:`scan_idx`).

    ``streamable``: every line is ``key<TAB>offset\n`` (what :func:`idx_rows` reads), the
    keys are ``first_key, first_key + 1, ...`` in file order and every offset is larger
    than the one before (so no two rows share a record). The scan stops at the first row
    that is not so: then the other fields cover the rows read up to it, and the idx is for
    :func:`load_idx`. ``rows``: lines; ``first_key`` / ``first_offset``: the first row (0
    when empty); ``past_end``: ``(key, offset)`` of the first row whose offset is not below
    the ``limit`` given, or None; ``stat``: ``(size, mtime_ns, inode)`` of the file scanned.
    """

    streamable: bool
    rows: int
    first_key: int
    first_offset: int
    past_end: tuple[int, int] | None
    stat: tuple[int, int, int]


def idx_changed(path: str) -> RecordIOError:
    """The error of an idx that is not what it was when it was opened."""
    return RecordIOError(f"{path}: the idx changed while it was being read (rows, keys or offsets differ)")


def _stat(f) -> tuple[int, int, int]:
    """``(size, mtime_ns, inode)`` of open file ``f``: what tells a rewritten idx."""
    st = os.fstat(f.fileno())
    return st.st_size, st.st_mtime_ns, st.st_ino


def check_scanned(path: str, scan: IdxScan, keys: np.ndarray, offs: np.ndarray) -> None:
    """Check that ``keys`` / ``offs`` (int64, from :func:`load_idx` after a streamed open)
    are the idx ``scan`` saw: the same file (size, mtime, inode), rows, first row, dense keys
    and increasing offsets.

    Raises:
        RecordIOError: :func:`idx_changed` (names the file).
    """
    n = len(keys)
    try:
        with open(path, "rb") as f:
            same_file = _stat(f) == scan.stat
    except OSError as e:
        raise RecordIOError(f"{path}: the idx cannot be read any more: {e.strerror or e}") from None
    if not (
        same_file and n == scan.rows and n
        and int(keys[0]) == scan.first_key and int(offs[0]) == scan.first_offset
        and int(keys[-1]) == scan.first_key + n - 1 and bool((keys[1:] > keys[:-1]).all())
        and bool((offs[1:] > offs[:-1]).all())
    ):
        raise idx_changed(path)


def _check(rows: np.ndarray, at: int, first_key: int, prev_off: int, limit: int):
    """``(dense and increasing, past_end)`` of one block starting at row ``at``."""
    k, o = rows[:, 0], rows[:, 1]
    ok = (
        bool((k == np.arange(first_key + at, first_key + at + len(k), dtype=np.int64)).all())
        and bool(o[0] > prev_off)
        and bool((o[1:] > o[:-1]).all())
    )
    bad = np.flatnonzero(o >= limit)
    return ok, ((int(k[bad[0]]), int(o[bad[0]])) if len(bad) else None)


def scan_idx(path: str | os.PathLike, limit: int) -> IdxScan:
    """Check in one pass, in blocks (memory: one block, not the idx), whether an ``.idx``
    can be streamed by :func:`idx_rows`; stops at the first row that says it cannot.

    Args:
        path: the ``.idx`` file.
        limit: offsets must be below it (the ``.rec`` size; ``past_end`` names the first
            row that is not).
    Raises:
        OSError: the file cannot be opened or read.
    """
    path = os.fspath(path)
    n, first_key, first_off, past, prev = 0, 0, 0, None, -1
    with open(path, "rb") as f:
        stat = _stat(f)
        try:
            for rows in _blocks(f):
                if not n:
                    first_key, first_off = int(rows[0, 0]), int(rows[0, 1])
                ok, p = _check(rows, n, first_key, prev, limit)
                if not ok:
                    return IdxScan(False, n, first_key, first_off, past, stat)
                past = past or p
                prev = int(rows[-1, 1])
                n += len(rows)
        except _NotFast:
            return IdxScan(False, n, first_key, first_off, past, stat)
    return IdxScan(True, n, first_key, first_off, past, stat)


def idx_rows(
    path: str | os.PathLike, start: int, stop: int, expect: IdxScan, limit: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Rows ``start .. stop - 1`` of an idx that :func:`scan_idx` found streamable, as
    ``(keys, offsets)`` int64 blocks (views of one block each; memory: one block).

    The file must be the one scanned (size, modification time and inode), and every block
    is checked again (dense keys, increasing offsets below ``limit``).

    Raises:
        RecordIOError: the idx changed since the scan, or cannot be read any more (names
            the file).
    """
    path = os.fspath(path)
    if start >= stop:
        return
    at, prev = 0, -1
    try:
        f = open(path, "rb")
    except OSError as e:
        raise RecordIOError(f"{path}: the idx cannot be read any more: {e.strerror or e}") from None
    with f:
        try:
            for rows in _blocks(f):
                if _stat(f) != expect.stat:  # rewritten while read
                    raise idx_changed(path)
                if at == 0 and (int(rows[0, 0]) != expect.first_key or int(rows[0, 1]) != expect.first_offset):
                    raise idx_changed(path)
                ok, past = _check(rows, at, expect.first_key, prev, limit)
                if not ok or past is not None or at + len(rows) > expect.rows:
                    raise idx_changed(path)
                lo, hi = max(start - at, 0), min(stop - at, len(rows))
                if lo < hi:
                    yield rows[lo:hi, 0], rows[lo:hi, 1]
                prev = int(rows[-1, 1])
                at += len(rows)
                if at >= stop:
                    return
        except _NotFast:
            raise idx_changed(path) from None
        except OSError as e:
            raise RecordIOError(f"{path}: the idx cannot be read any more: {e.strerror or e}") from None
    if at != expect.rows:
        raise idx_changed(path)
