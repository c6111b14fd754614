"""MXNet RecordIO, written and read without mxnet.

Matches dmlc-core ``recordio.h``/``recordio.cc`` (record framing, magic splitting) and
Apache MXNet 1.9.1 ``python/mxnet/recordio.py`` (``IRHeader``, ``pack``, ``unpack``,
the ``.idx`` text format, parsed in :mod:`facekit.formats.idx`). See ``shared/docs/FORMATS.md``
section 1.

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
from facekit.formats.idx import IdxScan, check_scanned, load_idx, scan_idx

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
_LEN_MASK = (1 << 29) - 1
_HEAD = struct.Struct("<II")
MAX_LENGTH = 1 << 29

IRHeader = namedtuple("IRHeader", ["flag", "label", "id", "id2"])
IRHeader.__doc__ = """Image-record header, as mxnet.recordio.IRHeader.

flag: uint32, 0 for a scalar label, else the number of float32 labels after the header.
label: float (scalar) or float32 array of ``flag`` values.
id, id2: uint64 ids (im2rec stores the record key in ``id``)."""

_IR_FORMAT = "<IfQQ"
_IR = struct.Struct(_IR_FORMAT)
_IR_SIZE = _IR.size  # 24
_SCALARS = (int, float, np.integer, np.floating)
_PADS = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by length % 4


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
    return pack_header(header) + bytes(s)


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


def _split_points(payload: bytes) -> list[int]:
    """Offsets ``i`` (multiples of 4, ``i + 4 <= len``) where the payload holds the magic:
    the places dmlc's writer ends a part. Vectorised: one uint32 compare per 4 bytes."""
    n4 = len(payload) >> 2
    if n4 == 0:
        return []
    words = np.frombuffer(payload, dtype="<u4", count=n4)
    hits = words == MAGIC
    if not hits.any():
        return []
    return (np.flatnonzero(hits) * 4).tolist()


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
    splits = _split_points(payload) if n >= 4 else []
    if not splits:
        return b"".join((_HEAD.pack(MAGIC, n), payload, _PADS[n & 3]))
    parts = []
    dptr = 0
    # dmlc scans every 4-byte-aligned offset i with i + 4 <= n and ends a part at each
    # magic found there, dropping its 4 bytes (the reader puts them back).
    for pos in splits:
        parts.append(_HEAD.pack(MAGIC, ((1 if dptr == 0 else 2) << 29) | (pos - dptr)))
        parts.append(payload[dptr:pos])
        dptr = pos + 4
    parts.append(_HEAD.pack(MAGIC, (3 << 29) | (n - dptr)))
    parts.append(payload[dptr:])
    parts.append(_PADS[n & 3])
    return b"".join(parts)


def pack_header(header: IRHeader | Sequence) -> bytes:
    """The header part of :func:`pack`'s payload (``pack(header, s) == pack_header(header)
    + s``): ``<IfQQ`` (flag, float32 label, uint64 id, uint64 id2, little-endian), 24 bytes,
    plus ``4 * flag`` float32 label bytes for a sequence label. Its length is a multiple of
    4, so image bytes after it keep their 4-byte alignment. ``header`` may be any 4-sequence
    (a plain tuple avoids building an IRHeader on a hot path).

    Raises:
        struct.error: an id outside uint64 or a label not convertible to float32.
    """
    _, label, id_, id2 = header
    if isinstance(label, _SCALARS):
        return _IR.pack(0, label, id_, id2)
    label = np.asarray(label, dtype=np.float32)
    return _IR.pack(label.size, 0, id_, id2) + label.tobytes()


def encode_records(payloads: Sequence) -> tuple[bytes, list[int]]:
    """Frame many payloads back to back, byte for byte as ``b"".join(map(encode_record,
    payloads))`` (dmlc ``RecordIOWriter::WriteRecord`` called once per payload).

    Args:
        payloads: each ``bytes`` (or any bytes-like object), or a tuple of pieces whose
            concatenation is the payload, e.g. ``(pack_header(h), image_bytes)``.
    Returns:
        ``(data, starts)``: the framed records and the byte offset of each record's first
        magic within ``data`` (``len(data)`` is a multiple of 4).
    Raises:
        RecordIOError: a payload of 2**29 bytes or more.

    Every record is first framed as one part and the whole buffer is scanned for the magic
    in a single vectorised pass: a payload is aligned on 4 bytes in the buffer exactly as
    in itself (each piece before the last has a length multiple of 4, else the pieces are
    joined first), and padding bytes are zero, so any hit besides the records' own heads
    is a magic dmlc would split on; those (rare) batches are framed record by record with
    :func:`encode_record`.
    """
    pieces: list = []
    starts: list[int] = []
    pos = 0
    head = _HEAD.pack
    for p in payloads:
        if type(p) is tuple:
            if len(p) == 2 and not len(p[0]) & 3:
                n = len(p[0]) + len(p[1])
                pieces += (head(MAGIC, n), p[0], p[1])
            else:
                p = b"".join(p)
                n = len(p)
                pieces += (head(MAGIC, n), p)
        else:
            n = len(p)
            pieces += (head(MAGIC, n), p)
        if n >= MAX_LENGTH:
            raise RecordIOError(f"record payload of {n} bytes exceeds the RecordIO limit of 2**29-1")
        if n & 3:
            pieces.append(_PADS[n & 3])
        starts.append(pos)
        pos += 8 + ((n + 3) & ~3)
    data = b"".join(pieces)
    if not starts:
        return data, starts
    hits = np.count_nonzero(np.frombuffer(data, dtype="<u4") == MAGIC)
    if hits == len(starts):  # only the heads we wrote: no payload holds the magic
        return data, starts
    framed = [encode_record(b"".join(p) if type(p) is tuple else p) for p in payloads]
    starts = []
    pos = 0
    for f in framed:
        starts.append(pos)
        pos += len(f)
    return b"".join(framed), starts


class RecordIOWriter:
    """Sequential ``.rec`` writer (mxnet ``MXRecordIO(path, 'w')``).

    ``write`` returns the byte offset of the record's first magic, the value the ``.idx``
    stores. The file is written as given; atomic publication is the caller's job
    (see :mod:`facekit.formats.atomic`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._f = open(self.path, "wb", buffering=1 << 20)
        self.offset = 0

    def write(self, payload: bytes) -> int:
        """Append one record (:func:`encode_record` framing, mxnet ``MXRecordIO.write``).

        Returns:
            the offset of the record's first magic: what the idx lists for it.
        Raises:
            RecordIOError: a payload of 2**29 bytes or more (nothing written).
        """
        data = encode_record(payload)
        start = self.offset
        self._f.write(data)
        self.offset += len(data)
        return start

    def write_many(self, payloads: Sequence) -> list[int]:
        """Append many records (:func:`encode_records`: each payload ``bytes`` or a tuple of
        pieces) with one write. Returns the offset of each record's first magic."""
        data, starts = encode_records(payloads)
        base = self.offset
        self._f.write(data)
        self.offset += len(data)
        return [base + s for s in starts]

    def write_encoded(self, data: bytes) -> int:
        """Append bytes that are already whole framed records (:func:`encode_record`
        output, or records copied from another ``.rec``). Returns their offset."""
        start = self.offset
        self._f.write(data)
        self.offset += len(data)
        return start

    def append_copy(self, src_fd: int, start: int, length: int) -> int:
        """Append ``length`` bytes of the open file ``src_fd`` from byte ``start`` (whole
        framed records), in the kernel where it can (``os.copy_file_range``).

        Returns:
            the offset in this file where the copied bytes begin.
        Raises:
            RecordIOError: the source ended before ``length`` bytes.
        """
        self._f.flush()
        dst = self._f.fileno()
        base = self.offset
        pos = 0
        while pos < length:
            n = 0
            try:
                n = os.copy_file_range(src_fd, dst, length - pos, start + pos, base + pos)
            except (AttributeError, OSError):
                n = 0
            if n <= 0:
                data = os.pread(src_fd, min(1 << 22, length - pos), start + pos)
                if not data:
                    raise RecordIOError(f"{self.path}: copy source ended at {start + pos}, {length - pos} bytes short")
                n = os.pwrite(dst, data, base + pos)
            pos += n
        self.offset += length
        self._f.seek(self.offset)
        return base

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
        """Hand the buffered bytes to the operating system (no ``fsync``)."""
        self._f.flush()

    def close(self) -> None:
        """Flush and close the file; closing twice is harmless."""
        if not self._f.closed:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class IndexedRecordIOWriter(RecordIOWriter):
    """``.rec`` + ``.idx`` writer (mxnet ``MXIndexedRecordIO(idx, rec, 'w')``).

    The idx lines are ``f"{key}\\t{offset}\\n"`` in write order, written as records are
    written (buffered): the writer holds no per-record state, so its memory stays flat
    however many records it writes.
    """

    def __init__(self, idx_path: str | os.PathLike, rec_path: str | os.PathLike):
        super().__init__(rec_path)
        self.idx_path = os.fspath(idx_path)
        self._idx = open(self.idx_path, "w", encoding="ascii", newline="\n", buffering=1 << 16)

    def write_idx(self, key: int, payload: bytes) -> int:
        """:meth:`write` one record and list it in the idx as ``key<TAB>offset`` (mxnet
        ``MXIndexedRecordIO.write_idx``). Returns its offset.

        Raises:
            RecordIOError: a payload of 2**29 bytes or more (nothing written).
        """
        offset = self.write(payload)
        self._idx.write(f"{int(key)}\t{offset}\n")
        return offset

    def write_many_idx(self, keys: Sequence[int], payloads: Sequence) -> list[int]:
        """:meth:`write_many` the records and list them in the idx under ``keys`` (same
        length). Returns their offsets.

        Raises:
            ValueError: ``keys`` and ``payloads`` differ in length (nothing written).
            RecordIOError: a payload of 2**29 bytes or more (nothing written).
        """
        if len(keys) != len(payloads):
            raise ValueError(f"{len(keys)} keys for {len(payloads)} payloads")
        offsets = self.write_many(payloads)
        self.add_index(keys, offsets)
        return offsets

    def write_encoded_idx(self, key: int, data: bytes) -> int:
        """:meth:`write_encoded` one framed record and list it in the idx under ``key``."""
        offset = self.write_encoded(data)
        self._idx.write(f"{int(key)}\t{offset}\n")
        return offset

    def add_index(self, keys: Sequence[int], offsets: Sequence[int]) -> None:
        """List records already in the file (e.g. placed by :meth:`append_copy`) in the idx."""
        self._idx.write(_idx_text([int(k) for k in keys], offsets))

    def close(self) -> None:
        """Close the ``.rec`` and then the ``.idx``; closing twice is harmless."""
        super().close()
        if not self._idx.closed:
            self._idx.close()


class RecordIOReader:
    """Reads records of a ``.rec`` file by offset or sequentially, without mxnet
    (dmlc ``RecordIOReader``/``RecordIOChunkReader``; mxnet ``MXRecordIO(path, 'r')``).

    Random access (:meth:`read_at`) uses ``os.pread`` on one descriptor, so it keeps no
    file position; iteration opens its own buffered handle. Every malformed input (wrong
    magic, an offset not on a 4-byte boundary, a length past the end of the file, a part
    flag out of sequence, a truncated file) raises :class:`RecordIOError` naming the file,
    the key when known and the byte offset; no read allocates more than the bytes left in
    the file, and every loop advances by at least 8 bytes (no hang).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._f: BinaryIO = open(self.path, "rb")
        self._fd = self._f.fileno()
        self.size = os.fstat(self._fd).st_size

    def _err(self, start: int, msg: str, key=None) -> RecordIOError:
        who = f"key {key}, record at offset {start}" if key is not None else f"record at offset {start}"
        return RecordIOError(f"{self.path}: {who}: {msg}")

    def _head(self, head: bytes, offset: int, start: int, first: bool, key) -> tuple[int, int]:
        """Check one part header; returns ``(cflag, length)``."""
        if len(head) < 8:
            raise self._err(start, f"truncated: part header at {offset} runs past end of file ({self.size} bytes)", key)
        magic, lrec = _HEAD.unpack_from(head)
        if magic != MAGIC:
            hint = " (the offset is not the start of a record)" if first else ""
            raise self._err(start, f"bad magic 0x{magic:08x} at offset {offset} (expected 0x{MAGIC:08x}){hint}", key)
        cflag = lrec >> 29
        length = lrec & _LEN_MASK
        if offset + 8 + length > self.size:
            raise self._err(
                start, f"length {length} at offset {offset} points past end of file ({self.size} bytes)", key
            )
        if first and cflag not in (0, 1):
            raise self._err(start, f"cflag {cflag} at offset {offset}: not the start of a record", key)
        if not first and cflag not in (2, 3):
            raise self._err(start, f"cflag {cflag} at offset {offset} inside a multi-part record", key)
        return cflag, length

    def read_at(self, offset: int, key=None) -> tuple[bytes, int]:
        """Read the record whose first magic is at byte ``offset``.

        Args:
            offset: byte position of the record's first magic (what the ``.idx`` stores).
            key: only used in error messages.
        Returns:
            ``(payload, next_offset)``: the record's bytes with split magics put back, and
            the byte position just after it (its padding included, capped at the file size).
        Raises:
            RecordIOError: malformed record or offset (names file, key and offset).
        """
        offset = int(offset)
        start = offset
        if offset < 0 or offset % 4:
            raise self._err(start, "offset is not on a 4-byte record boundary", key)
        if offset + 8 > self.size:
            raise self._err(start, f"truncated: header at {offset} runs past end of file ({self.size} bytes)", key)
        fd = self._fd
        cflag, length = self._head(os.pread(fd, 8, offset), offset, start, True, key)
        if cflag == 0:
            data = os.pread(fd, length, offset + 8)
            if len(data) != length:
                raise self._err(start, "truncated while reading (file shrank?)", key)
            return data, min(offset + 8 + ((length + 3) & ~3), self.size)
        chunks = []
        while True:
            data = os.pread(fd, length, offset + 8)
            if len(data) != length:
                raise self._err(start, "truncated while reading (file shrank?)", key)
            chunks.append(data)
            offset += 8 + ((length + 3) & ~3)
            if cflag == 3:
                break
            cflag, length = self._head(os.pread(fd, 8, offset), offset, start, False, key)
        return MAGIC_BYTES.join(chunks), min(offset, self.size)

    def read_prefix(self, offset: int, n: int, key=None) -> tuple[bytes, int]:
        """The first ``n`` bytes of the record at ``offset`` (all of it if shorter), read
        without the rest of the payload where the record's first part holds them.

        Returns:
            ``(prefix, payload_length)``; payload_length is -1 when the record is split
            into parts and only its prefix was read.
        Raises:
            RecordIOError: as :meth:`read_at`.
        """
        offset = int(offset)
        if offset < 0 or offset % 4:
            raise self._err(offset, "offset is not on a 4-byte record boundary", key)
        if offset + 8 > self.size:
            raise self._err(offset, f"truncated: header at {offset} runs past end of file ({self.size} bytes)", key)
        n = max(0, min(n, self.size - offset - 8))  # never ask for more than the file holds
        buf = os.pread(self._fd, 8 + n, offset)
        cflag, length = self._head(buf[:8], offset, offset, True, key)
        if cflag == 0:
            return buf[8 : 8 + min(n, length)], length
        if length >= n:
            return buf[8 : 8 + n], -1
        payload = self.read_at(offset, key)[0]
        return payload[:n], len(payload)

    def read_header(self, offset: int, key=None) -> tuple[IRHeader, int]:
        """The :class:`IRHeader` of the image record at ``offset`` and the length in bytes
        of its image (``-1`` if unknown without a full read), reading only the header.

        Raises:
            RecordIOError: malformed record, or a payload too short for its IRHeader.
        """
        prefix, total = self.read_prefix(offset, _IR_SIZE + 40, key)
        if len(prefix) >= _IR_SIZE:
            flag = struct.unpack_from("<I", prefix)[0]
            if flag > 10 and len(prefix) == _IR_SIZE + 40:
                need = _IR_SIZE + 4 * flag
                if 0 <= total < need:  # a corrupt flag: fail before reading anything more
                    raise self._err(
                        offset, f"IRHeader flag={flag} needs {4 * flag} label bytes, payload has {total - _IR_SIZE}", key
                    )
                prefix, total = self.read_prefix(offset, need, key)
        try:
            header, rest = unpack(prefix)
        except RecordIOError as e:
            raise self._err(offset, str(e), key) from None
        nimg = -1 if total < 0 else total - _IR_SIZE - 4 * header.flag
        return header, nimg

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, payload)`` for every record in file order (a sequential scan
        with its own 1 MiB-buffered handle; needs no idx).

        Raises:
            RecordIOError: at the first malformed record (names file and offset).
        """
        size = self.size
        with open(self.path, "rb", buffering=1 << 20) as f:
            read = f.read
            offset = 0
            while offset < size:
                start = offset
                chunks = None
                first = True
                while True:
                    cflag, length = self._head(read(8), offset, start, first, None)
                    data = read(length)
                    if len(data) != length:
                        raise self._err(start, "truncated while reading (file shrank?)")
                    pad = -length & 3
                    if pad:
                        read(pad)
                    offset += 8 + length + pad
                    if cflag == 0:
                        payload = data
                        break
                    if chunks is None:
                        chunks = [data]
                    else:
                        chunks.append(data)
                    if cflag == 3:
                        payload = MAGIC_BYTES.join(chunks)
                        break
                    first = False
                yield start, payload

    def scan(self, resync: bool = True) -> Iterator[tuple[int, int, bytes | None, RecordIOError | None]]:
        """Walk the file record by record, for checking and re-indexing.

        Yields ``(offset, next_offset, payload, None)`` for a good record and
        ``(offset, resume_offset, None, error)`` for a bad one. With ``resync`` the walk
        goes on from the next 4-byte-aligned magic that starts a plausible record
        (cflag 0 or 1, length inside the file); without it, it stops at the first error.
        """
        offset = 0
        size = self.size
        while offset < size:
            try:
                payload, nxt = self.read_at(offset)
            except RecordIOError as e:
                resume = self._resync(offset + 4) if resync else size
                yield offset, resume, None, e
                offset = resume
                continue
            yield offset, nxt, payload, None
            offset = nxt

    def _resync(self, pos: int) -> int:
        """Next offset >= ``pos`` where a plausible record starts, or the file size."""
        pos = (pos + 3) & ~3
        block = 1 << 20
        while pos + 8 <= self.size:
            buf = os.pread(self._fd, block + 8, pos)
            i = buf.find(MAGIC_BYTES)
            while i != -1 and i + 8 <= len(buf):
                if i % 4 == 0:
                    lrec = struct.unpack_from("<I", buf, i + 4)[0]
                    if lrec >> 29 in (0, 1) and pos + i + 8 + (lrec & _LEN_MASK) <= self.size:
                        return pos + i
                i = buf.find(MAGIC_BYTES, i + 1)
            pos += block
        return self.size

    def close(self) -> None:
        """Close the ``.rec`` file."""
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class IndexedRecordIOReader(RecordIOReader):
    """Random access by key through the ``.idx`` (mxnet ``MXIndexedRecordIO(..., 'r')``).

    ``keys`` lists the keys in idx order (a list of int); ``read_idx(key)`` returns the
    payload. ``key_array``/``offset_array`` hold the idx as int64 arrays (compact for
    millions of records); a key listed twice maps to its last offset, as in mxnet.
    With ``idx_path=None`` the index is rebuilt in memory by a sequential scan
    (:func:`build_index`).

    ``stream=True`` is for one pass in idx order over a large file: the idx is checked in
    one pass (:func:`scan_idx`) and, when its keys are dense and its offsets increase (what
    every writer makes), not held (``streamed``; :func:`facekit.formats.idx.idx_rows` reads
    it in blocks): ``key_array`` / ``offset_array`` are loaded on first use (and checked to
    be the idx scanned). Any other idx is loaded at once.

    Raises:
        RecordIOError: an unparsable idx, an idx offset past the end of the ``.rec`` (names
            both files, the key and the offset), or an empty idx beside a non-empty ``.rec``
            (it would read as an empty dataset).
    """

    def __init__(self, idx_path: str | os.PathLike | None, rec_path: str | os.PathLike, stream: bool = False):
        super().__init__(rec_path)
        self._key_array: np.ndarray | None = None
        self._offset_array: np.ndarray | None = None
        self._scan: IdxScan | None = None
        self._map: dict | None = None
        self._keys: list | None = None
        if idx_path is None:
            self.idx_path = None
            keys, offs, _ = build_index(self.path)
            self._set_arrays(np.asarray(keys, dtype=np.int64), np.asarray(offs, dtype=np.int64))
            return
        self.idx_path = os.fspath(idx_path)
        if stream:
            scan = scan_idx(self.idx_path, max(self.size, 1))
            if scan.streamable and scan.rows:
                self._check(scan.rows, scan.past_end)
                self._scan = scan
                self._k0, self._dense, self._n = scan.first_key, True, scan.rows
                return
        self._set_arrays(*load_idx(self.idx_path))

    def _check(self, n: int, past_end) -> None:
        if not n and self.size and self.idx_path is not None:
            raise RecordIOError(
                f"{self.idx_path}: empty idx beside {self.path} ({self.size} bytes of records): rebuild it "
                "with 'facekit reindex --force' (or delete it to have the .rec scanned)"
            )
        if past_end is not None:
            raise RecordIOError(
                f"{self.idx_path}: key {past_end[0]} offset {past_end[1]} is past the end of {self.path} "
                f"({self.size} bytes)"
            )

    def _set_arrays(self, keys: np.ndarray, offs: np.ndarray) -> None:
        bad = np.flatnonzero(offs >= max(self.size, 1))
        self._check(len(keys), (int(keys[bad[0]]), int(offs[bad[0]])) if len(bad) else None)
        n = len(keys)
        self._k0 = int(keys[0]) if n else 0
        # keys k0, k0 + 1, ...: strictly increasing from k0 to k0 + n - 1 (1 byte a record of
        # transient memory, not an arange and a comparison of the whole idx)
        self._dense = bool(n) and int(keys[-1]) - self._k0 == n - 1 and bool((keys[1:] > keys[:-1]).all())
        if self._scan is not None:  # loaded after a streamed open: it must be the idx scanned
            check_scanned(self.idx_path, self._scan, keys, offs)
        self._key_array, self._offset_array, self._n = keys, offs, n

    @property
    def streamed(self) -> bool:
        """Whether the idx is not held in memory (``stream=True``, arrays not loaded yet)."""
        return self._key_array is None

    @property
    def key_array(self) -> np.ndarray:
        """The idx's keys, int64, in file order (loaded on first use when streamed)."""
        if self._key_array is None:
            self._set_arrays(*load_idx(self.idx_path))
        return self._key_array

    @property
    def offset_array(self) -> np.ndarray:
        """The idx's record offsets (bytes), int64, in file order."""
        if self._offset_array is None:
            self._set_arrays(*load_idx(self.idx_path))
        return self._offset_array

    def __len__(self) -> int:
        return self._n

    @property
    def keys(self) -> list[int]:
        """The idx keys in idx order, as Python ints (mxnet ``MXIndexedRecordIO.keys``);
        :attr:`key_array` is the same as an int64 array without the list."""
        if self._keys is None:
            self._keys = self.key_array.tolist()
        return self._keys

    @property
    def idx(self) -> dict[int, int]:
        """``{key: offset}`` (last row wins for a repeated key), as mxnet's ``idx``."""
        if self._map is None:
            self._map = dict(zip(self.key_array.tolist(), self.offset_array.tolist()))
        return self._map

    def offset_of(self, key: int) -> int:
        """Byte offset of ``key``'s record. Raises RecordIOError for an unknown key."""
        if self._dense:
            i = key - self._k0
            if 0 <= i < self._n:
                if i == 0 and self._scan is not None:
                    return self._scan.first_offset
                return int(self.offset_array[i])
        else:
            off = self.idx.get(key)
            if off is not None:
                return off
        raise RecordIOError(f"{self.idx_path or self.path}: no key {key}")

    def read_idx(self, key: int) -> bytes:
        """The payload of record ``key`` (mxnet ``MXIndexedRecordIO.read_idx``).

        Raises:
            RecordIOError: unknown key or malformed record (names file, key, offset).
        """
        return self.read_at(self.offset_of(key), key)[0]


def _looks_like_face_header(payload: bytes) -> bool:
    try:
        h, img = unpack(payload)
    except RecordIOError:
        return False
    return h.flag > 0 and not img and float(h.label[0]) >= 1 and float(h.label[0]).is_integer()


def build_index(
    rec_path: str | os.PathLike, keys: str = "auto", partial: bool = False
) -> tuple[list[int], list[int], dict]:
    """Rebuild the ``.idx`` of a ``.rec`` by scanning it sequentially.

    Args:
        rec_path: the ``.rec`` file.
        keys: ``"ordinal"`` (key = record number from 0: the insightface layout, and
            ``im2rec`` lists without shuffle), ``"id"`` (key = the IRHeader ``id`` of each
            record: what ``im2rec`` writes, shuffled or not) or ``"auto"``: ordinal when
            record 0 is an insightface header (flag > 0, empty image) or some record is not
            an image record or ids repeat; otherwise ``id``.
        partial: on a malformed record, index the records before it instead of raising.
    Returns:
        ``(keys, offsets, info)``; info has ``keys`` (the rule used), ``records`` and
        ``error`` (the message for a partial index, else None).
    Raises:
        RecordIOError: a malformed record (names file and offset), unless ``partial``.
        ValueError: unknown ``keys`` rule.
    """
    if keys not in ("auto", "ordinal", "id"):
        raise ValueError(f"keys must be auto, ordinal or id, not {keys!r}")
    offsets: list[int] = []
    ids: list[int] | None = [] if keys != "ordinal" else None
    header0 = False
    error = None
    with RecordIOReader(rec_path) as r:
        it = iter(r)
        while True:
            try:
                item = next(it)
            except StopIteration:
                break
            except RecordIOError as e:
                if not partial:
                    raise
                error = str(e)
                break
            off, payload = item
            if not offsets:
                header0 = _looks_like_face_header(payload)
            offsets.append(off)
            if ids is not None:
                if len(payload) >= _IR_SIZE:
                    ids.append(struct.unpack_from("<Q", payload, 8)[0])
                elif keys == "id":
                    raise RecordIOError(f"{r.path}: record at offset {off}: no IRHeader, cannot key by id")
                else:
                    ids = None
    rule = keys
    if keys == "auto":
        rule = "id" if ids is not None and not header0 and len(set(ids)) == len(ids) else "ordinal"
    out_keys = ids if rule == "id" else list(range(len(offsets)))
    if rule == "id" and len(set(out_keys)) != len(out_keys):
        raise RecordIOError(f"{os.fspath(rec_path)}: IRHeader ids repeat; cannot key by id (use keys='ordinal')")
    return out_keys, offsets, {"keys": rule, "records": len(offsets), "error": error}


def _idx_text(keys: Sequence[int], offsets: Sequence[int]) -> str:
    return "".join([f"{int(k)}\t{int(o)}\n" for k, o in zip(keys, offsets)])


def format_idx(keys: Sequence[int], offsets: Sequence[int]) -> bytes:
    """The ``.idx`` text for ``keys``/``offsets`` (``f"{key}\\t{offset}\\n"`` lines)."""
    return _idx_text(keys, offsets).encode("ascii")
