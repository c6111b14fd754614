"""The source image of a result row, for the report's thumbnails of rejected faces (they
have no crop in the sinks): a file path, or ``<file>.rec:<key>``, the path an ``mxrec``
source gives its records.

A record is found through its ``.idx`` by a binary search over the file's lines (the idx
writers, facekit's and ``im2rec``, list keys in increasing order), reading a few hundred
bytes a lookup: nothing per record is held, whatever the RecordIO's size. An idx whose keys
are not in order is read line by line instead (still nothing held).
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Optional

from facekit.errors import FacekitError, RecordIOError
from facekit.formats.recordio import RecordIOReader, unpack
from facekit.vision.images import read_file

_REC_KEY = re.compile(r"^(?P<rec>.+\.rec):(?P<key>-?\d{1,19})$")
_LINE = 64  # bytes read to find one idx line (a well-formed line has at most 41)


class _RecSource:
    """Records of one ``.rec`` by key, through its ``.idx`` (see the module docstring)."""

    def __init__(self, rec: Path):
        idx = rec.with_suffix(".idx")
        try:
            self.fd = os.open(idx, os.O_RDONLY)
        except OSError as e:
            raise FacekitError(f"{idx}: {e.strerror or e} (needed to find the source record)") from None
        self.idx, self.size = idx, os.fstat(self.fd).st_size
        try:
            self.reader = RecordIOReader(rec)
        except (RecordIOError, OSError) as e:
            os.close(self.fd)
            raise FacekitError(f"{rec}: {' '.join(str(e).split())}") from None

    def _line(self, pos: int) -> Optional[tuple[int, int]]:
        """``(key, offset)`` of the first line starting at or after byte ``pos``; None
        past the last line."""
        at = max(0, pos - 1)
        buf = os.pread(self.fd, 2 * _LINE, at)
        start = 0 if pos == 0 else buf.find(b"\n") + 1
        if pos and start == 0:
            return None
        end = buf.find(b"\n", start)
        line = buf[start:] if end < 0 else buf[start:end]
        if not line.strip():
            return None
        k, _, off = line.partition(b"\t")
        try:
            return int(k), int(off)
        except ValueError:
            raise FacekitError(f"{self.idx}: malformed line at byte {at + start}") from None

    def offset(self, key: int) -> int:
        """The byte offset of record ``key``. Raises FacekitError when it is not listed."""
        lo, hi = 0, self.size  # smallest position whose next line has a key >= key
        while lo < hi:
            mid = (lo + hi) // 2
            kv = self._line(mid)
            if kv is None or kv[0] >= key:
                hi = mid
            else:
                lo = mid + 1
        kv = self._line(lo)
        if kv is not None and kv[0] == key:
            return kv[1]
        with open(self.idx, "rb") as f:  # keys not in order: one pass, line by line
            for n, line in enumerate(f, 1):
                k, _, off = line.partition(b"\t")
                try:
                    if k.strip() and int(k) == key:
                        return int(off)
                except ValueError:
                    raise FacekitError(f"{self.idx}:{n}: malformed line") from None
        raise FacekitError(f"{self.idx}: no key {key}")

    def read(self, key: int) -> bytes:
        """The image bytes of record ``key``. Raises FacekitError naming the file and key."""
        try:
            _, img = unpack(self.reader.read_at(self.offset(key), key)[0])
        except (RecordIOError, OSError) as e:
            raise FacekitError(f"{self.reader.path}: key {key}: {' '.join(str(e).split())}") from None
        return img

    def close(self) -> None:
        os.close(self.fd)
        self.reader.close()


class SourceReader:
    """``read(path) -> bytes``: a source image's bytes, from a file or from an ``mxrec``
    source's record (``<file>.rec:<key>``). At most ``max_open`` RecordIO files are held
    open (the least recently used is closed)."""

    def __init__(self, max_open: int = 4):
        self.max_open = max_open
        self._recs: OrderedDict[str, _RecSource] = OrderedDict()

    def read(self, path: str) -> bytes:
        """The bytes of ``path``. Raises SampleRejected (a file: unreadable, too large) or
        FacekitError (a record: no such key, a damaged record)."""
        m = _REC_KEY.match(path)
        if m is None or os.path.lexists(path) or not os.path.isfile(m["rec"]):
            return read_file(path)
        rec = self._recs.pop(m["rec"], None)
        if rec is None:
            rec = _RecSource(Path(m["rec"]))
            while len(self._recs) >= self.max_open:
                self._recs.popitem(last=False)[1].close()
        self._recs[m["rec"]] = rec
        return rec.read(int(m["key"]))

    def close(self) -> None:
        """Close the RecordIO files held open."""
        while self._recs:
            self._recs.popitem()[1].close()
