"""MXNet RecordIO, written and read without mxnet.

Matches dmlc-core ``recordio.h``/``recordio.cc`` (record framing, magic splitting) and
Apache MXNet 1.9.1 ``python/mxnet/recordio.py`` (``IRHeader``, ``pack``, ``unpack``,
the ``.idx`` text format). See ``shared/docs/FORMATS.md`` section 1.

A record on disk is ``uint32 magic, uint32 lrec, payload, zero padding to 4 bytes``
(little-endian), ``lrec = cflag << 29 | length``. A payload containing the magic bytes at
a 4-byte-aligned offset is split there into parts (cflag 1, 2..., 3); the reader puts the
magic back between parts.
"""

from __future__ import annotations

import os
import struct
from collections import namedtuple
from typing import BinaryIO, Iterator, Sequence

import numpy as np

from facekit.errors import RecordIOError

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
_LEN_MASK = (1 << 29) - 1
MAX_LENGTH = 1 << 29

IRHeader = namedtuple("IRHeader", ["flag", "label", "id", "id2"])
IRHeader.__doc__ = """Image-record header, as mxnet.recordio.IRHeader.

flag: uint32, 0 for a scalar label, else the number of float32 labels after the header.
label: float (scalar) or float32 array of ``flag`` values.
id, id2: uint64 ids (im2rec stores the record key in ``id``)."""

_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)  # 24


def pack(header: IRHeader | Sequence, s: bytes) -> bytes:
    """Pack an image-record payload exactly as ``mxnet.recordio.pack``.

    A scalar ``header.label`` is stored in the header with ``flag = 0``; a sequence label
    is stored as ``flag = len(label)`` float32 values after the 24-byte header with header
    label 0 (the ``flag`` passed in is ignored, as in mxnet).

    Args:
        header: ``IRHeader(flag, label, id, id2)``.
        s: encoded image bytes (or ``b""``).
    Returns:
        the payload bytes.
    """
    header = IRHeader(*header)
    if isinstance(header.label, (int, float, np.integer, np.floating)):
        header = header._replace(flag=0)
    else:
        label = np.asarray(header.label, dtype=np.float32)
        header = header._replace(flag=label.size, label=0)
        s = label.tobytes() + bytes(s)
    return struct.pack(_IR_FORMAT, *header) + bytes(s)


def unpack(s: bytes) -> tuple[IRHeader, bytes]:
    """Unpack an image-record payload exactly as ``mxnet.recordio.unpack``.

    Returns:
        ``(header, image_bytes)``; ``header.label`` is a float for ``flag == 0``, else a
        float32 array of ``flag`` values.
    Raises:
        RecordIOError: the payload is shorter than its header says.
    """
    if len(s) < _IR_SIZE:
        raise RecordIOError(f"payload of {len(s)} bytes is shorter than the 24-byte IRHeader")
    header = IRHeader(*struct.unpack(_IR_FORMAT, s[:_IR_SIZE]))
    s = s[_IR_SIZE:]
    if header.flag > 0:
        if len(s) < 4 * header.flag:
            raise RecordIOError(
                f"IRHeader flag={header.flag} needs {4 * header.flag} label bytes, payload has {len(s)}"
            )
        header = header._replace(label=np.frombuffer(s, np.float32, header.flag).copy())
        s = s[header.flag * 4 :]
    return header, s


def encode_record(payload: bytes) -> bytes:
    """Frame one payload as dmlc ``RecordIOWriter::WriteRecord`` does.

    Returns the bytes to append to a ``.rec`` file: one or more parts, each
    ``magic, lrec, bytes``, the last zero-padded to a 4-byte boundary.
    Raises:
        RecordIOError: payload of 2**29 bytes or more.
    """
    n = len(payload)
    if n >= MAX_LENGTH:
        raise RecordIOError(f"record payload of {n} bytes exceeds the RecordIO limit of 2**29-1")
    parts = []
    dptr = 0
    find = payload.find
    # dmlc scans every 4-byte-aligned offset i with i + 4 <= n; find() only reports
    # complete matches, so "aligned hit" is the whole condition.
    pos = find(MAGIC_BYTES)
    while pos != -1:
        if pos % 4 == 0:
            parts.append(struct.pack("<II", MAGIC, ((1 if dptr == 0 else 2) << 29) | (pos - dptr)))
            parts.append(payload[dptr:pos])
            dptr = pos + 4
            pos = find(MAGIC_BYTES, dptr)
        else:
            pos = find(MAGIC_BYTES, pos + 1)
    parts.append(struct.pack("<II", MAGIC, ((3 if dptr else 0) << 29) | (n - dptr)))
    parts.append(payload[dptr:])
    pad = (-n) % 4
    if pad:
        parts.append(b"\0" * pad)
    return b"".join(parts)


class RecordIOWriter:
    """Sequential ``.rec`` writer (mxnet ``MXRecordIO(path, 'w')``).

    ``write`` returns the byte offset of the record's first magic, the value the ``.idx``
    stores. The file is written as given; atomic publication is the caller's job
    (see :mod:`facekit.atomic`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._f = open(self.path, "wb")
        self.offset = 0

    def write(self, payload: bytes) -> int:
        data = encode_record(payload)
        start = self.offset
        self._f.write(data)
        self.offset += len(data)
        return start

    def overwrite(self, offset: int, payload: bytes) -> None:
        """Replace the record at ``offset`` with ``payload``, whose framing
        (:func:`encode_record`) must have the old record's length: the caller guarantees it
        (e.g. a fixed-size header record whose counts are known only at the end).

        Raises:
            RecordIOError: the new record would run past the end of the file.
        """
        data = encode_record(payload)
        self._f.flush()
        if offset + len(data) > self.offset:
            raise RecordIOError(f"{self.path}: overwrite at {offset} runs past the end of the file")
        self._f.seek(offset)
        self._f.write(data)
        self._f.seek(self.offset)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class IndexedRecordIOWriter(RecordIOWriter):
    """``.rec`` + ``.idx`` writer (mxnet ``MXIndexedRecordIO(idx, rec, 'w')``).

    The idx lines are ``f"{key}\\t{offset}\\n"`` in write order.
    """

    def __init__(self, idx_path: str | os.PathLike, rec_path: str | os.PathLike):
        super().__init__(rec_path)
        self.idx_path = os.fspath(idx_path)
        self._idx = open(self.idx_path, "w", encoding="ascii", newline="\n")
        self.keys: list[int] = []

    def write_idx(self, key: int, payload: bytes) -> int:
        offset = self.write(payload)
        self._idx.write(f"{int(key)}\t{offset}\n")
        self.keys.append(int(key))
        return offset

    def close(self) -> None:
        super().close()
        if not self._idx.closed:
            self._idx.close()


class RecordIOReader:
    """Reads records of a ``.rec`` file by offset or sequentially, without mxnet.

    Every malformed input (wrong magic, a length past the end of the file, a part flag out
    of sequence, a truncated file) raises :class:`RecordIOError` naming the file and the
    byte offset; no read allocates more than the bytes left in the file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._f: BinaryIO = open(self.path, "rb")
        self.size = os.fstat(self._f.fileno()).st_size

    def _err(self, offset: int, msg: str) -> RecordIOError:
        return RecordIOError(f"{self.path}: record at offset {offset}: {msg}")

    def read_at(self, offset: int) -> tuple[bytes, int]:
        """Read the record whose first magic is at ``offset``.

        Returns:
            ``(payload, next_offset)``.
        Raises:
            RecordIOError: malformed record or offset (names file and offset).
        """
        start = offset
        chunks = []
        first = True
        f = self._f
        while True:
            if offset + 8 > self.size:
                raise self._err(start, f"truncated: header at {offset} runs past end of file ({self.size} bytes)")
            f.seek(offset)
            head = f.read(8)
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise self._err(start, f"bad magic 0x{magic:08x} at offset {offset} (expected 0x{MAGIC:08x})")
            cflag = lrec >> 29
            length = lrec & _LEN_MASK
            upper = (length + 3) & ~3
            if offset + 8 + length > self.size:
                raise self._err(
                    start, f"length {length} at offset {offset} points past end of file ({self.size} bytes)"
                )
            if first and cflag not in (0, 1):
                raise self._err(start, f"cflag {cflag} at offset {offset}: not the start of a record")
            if not first and cflag not in (2, 3):
                raise self._err(start, f"cflag {cflag} at offset {offset} inside a multi-part record")
            chunks.append(f.read(length))
            offset += 8 + upper
            if cflag in (0, 3):
                break
            chunks.append(MAGIC_BYTES)
            first = False
        return b"".join(chunks), min(offset, self.size)

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, payload)`` for every record in file order."""
        offset = 0
        while offset < self.size:
            payload, nxt = self.read_at(offset)
            yield offset, payload
            offset = nxt

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_idx(path: str | os.PathLike) -> list[tuple[int, int]]:
    """Parse an ``.idx`` file into ``[(key, offset), ...]`` in file order.

    Raises:
        RecordIOError: a line that is not ``key<TAB>offset`` (names file and line).
    """
    out = []
    path = os.fspath(path)
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
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
            out.append((key, off))
    return out


class IndexedRecordIOReader(RecordIOReader):
    """Random access by key through the ``.idx`` (mxnet ``MXIndexedRecordIO(..., 'r')``).

    ``keys`` lists the keys in idx order; ``read_idx(key)`` returns the payload.
    """

    def __init__(self, idx_path: str | os.PathLike, rec_path: str | os.PathLike):
        super().__init__(rec_path)
        self.idx_path = os.fspath(idx_path)
        pairs = read_idx(self.idx_path)
        self.keys = [k for k, _ in pairs]
        self.idx = dict(pairs)
        for k, off in pairs:
            if off >= self.size and not (off == self.size == 0):
                raise RecordIOError(
                    f"{self.idx_path}: key {k} offset {off} is past the end of {self.path} ({self.size} bytes)"
                )

    def read_idx(self, key: int) -> bytes:
        try:
            offset = self.idx[key]
        except KeyError:
            raise RecordIOError(f"{self.idx_path}: no key {key}") from None
        try:
            return self.read_at(offset)[0]
        except RecordIOError as e:
            raise RecordIOError(f"key {key}: {e}") from None
