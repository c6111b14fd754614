"""Face datasets stored in MXNet RecordIO, read without mxnet: one ``.rec``/``.idx`` pair
or a set of shards, in any layout in use (``shared/docs/FORMATS.md`` section 2).

Layouts:

- ``insightface``: key 0 is a header record (``flag > 0``, empty image,
  ``label = [N+1, N+1+K]``); image keys are ``1..N``, identity records ``N+1..N+K``
  (``label = [start, end)``). What arcface_torch's ``MXFaceDataset`` reads.
- ``plain``: every idx key is an image record (``im2rec``, DALI-safe files, files
  re-laid out by arcface_torch's ``shuffle_rec.py``).

Image records hold a scalar label (``flag = 0``) or an array label whose first element is
the class (``[class, aligned]``, Glint360K-style); both give ``label_of(header)``.
Detection: key 0 is an insightface header when it has ``flag > 0``, no image bytes and an
integral ``label[0] >= 1``; otherwise the file is plain. (``MXFaceDataset`` looks at
``flag > 0`` only, which mistakes a plain file whose key 0 is an array-labelled image for a
header; facekit also requires the empty image.)

Shards are named ``<prefix>-00000-of-00008.rec`` (+ ``.idx``); a folder holding a complete
set is read as one dataset, shard after shard. A ``.rec`` without its ``.idx`` is indexed
in memory by a sequential scan (:func:`facekit.formats.recordio.build_index`).

Everything read from the files is data, not trusted: the header's counts are bounded by
the records the idx holds, labels become class ids only through :func:`class_id` (finite
integers in ``0 .. 2**31 - 1``), image sizes are read from the image header
(:func:`image_hw`) before any decode, and an idx listing one record under several keys is
noted (``FaceRecPart.first_of``) so that consumers read it once.
"""

from __future__ import annotations

import bisect
import io
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from facekit.errors import RecordIOError
from facekit.formats.idx import check_scanned, idx_rows
from facekit.formats.recordio import IndexedRecordIOReader, IRHeader, RecordIOReader, unpack

LAYOUTS = ("insightface", "plain")
SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.rec$")


def shard_stem(prefix: str, i: int, n: int) -> str:
    """File stem of shard ``i`` of ``n``: ``f"{prefix}-{i:05d}-of-{n:05d}"``."""
    return f"{prefix}-{i:05d}-of-{n:05d}"


class RecordIORecordSetError(RecordIOError):
    """A shard set is incomplete or inconsistent."""


#: class ids are finite integers in ``0 .. MAX_CLASS - 1`` (int32, what the trainers'
#: label tensors and the float32 labels of the format hold without loss in practice)
MAX_CLASS = 1 << 31


def class_id(label: float) -> int:
    """The class id a label denotes: ``label`` must be a finite integer in
    ``0 .. MAX_CLASS - 1`` (a float from :func:`label_of`).

    Raises:
        ValueError: anything else (NaN, inf, 1e30, -1, 2.5); the message says why.
    """
    if not (math.isfinite(label) and label.is_integer() and 0 <= label < MAX_CLASS):
        raise ValueError(f"label {label} is not a class id (an integer in 0..{MAX_CLASS - 1})")
    return int(label)


def label_of(header: IRHeader) -> float:
    """The class of an image record: the scalar label, or the first element of an array
    label (arcface_torch ``MXFaceDataset``)."""
    lab = header.label
    if isinstance(lab, np.ndarray):
        if lab.size == 0:
            raise RecordIOError("image record has flag > 0 but no label values")
        return float(lab[0])
    return float(lab)


def read_property(path: str | os.PathLike) -> tuple[int, int, int]:
    """Parse an InsightFace ``property`` file: one line ``num_classes,height,width``.

    Raises:
        RecordIOError: not exactly three comma-separated integers (old loaders assert this).
    """
    text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    fields = text.split(",")
    try:
        if len(fields) != 3 or "\n" in text:
            raise ValueError
        n, h, w = (int(f) for f in fields)
    except ValueError:
        raise RecordIOError(f"{path}: property must be one line 'num_classes,height,width', got {text[:80]!r}") from None
    return n, h, w


#: most pixels an image record may claim before it is decoded (Pillow's own default,
#: which :func:`facekit.vision.images.decode_image` enforces too)
MAX_PIXELS = 89_478_485

_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_HW = struct.Struct(">HH")


def image_hw(data: bytes) -> tuple[int, int]:
    """``(height, width)`` in pixels of encoded image bytes, from the header only: the
    JPEG SOF segment and the PNG IHDR chunk are parsed directly (a few microseconds, no
    pixel decode); other formats through Pillow's lazy ``Image.open``. The stored size,
    without EXIF orientation (as ``facekit.formats.lst.image_size``).

    Raises:
        ValueError: no image format recognised, or a header without a size.
    """
    n = len(data)
    if n >= 4 and data[0] == 0xFF and data[1] == 0xD8:
        i = 2
        while i + 9 <= n:
            if data[i] != 0xFF:
                break
            m = data[i + 1]
            if m == 0xFF:  # fill byte
                i += 1
            elif m in _SOF:
                h, w = _HW.unpack_from(data, i + 5)
                if h and w:
                    return h, w
                break  # height 0 (set later by a DNL marker): let Pillow decide
            elif 0xD0 <= m <= 0xD9 or m == 0x01:  # markers without a length
                i += 2
            else:
                i += 2 + ((data[i + 2] << 8) | data[i + 3])
    elif n >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        w, h = struct.unpack_from(">II", data, 16)
        return h, w
    from PIL import Image

    import facekit.vision.images  # noqa: F401 - sets the filter for Pillow's DecompressionBombWarning

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError as e:  # over twice Pillow's limit: no size given
        raise ValueError(f"image too large: {e}") from None
    except Exception as e:  # Pillow raises many kinds on junk
        raise ValueError(f"no image size readable from the header: {type(e).__name__}: {e}") from None
    return h, w


@dataclass
class PartFiles:
    """One ``.rec`` and its ``.idx`` (None when absent)."""

    rec: Path
    idx: Optional[Path]


def find_parts(path: str | os.PathLike, prefix: str = "train") -> tuple[list[PartFiles], Optional[Path]]:
    """Resolve what a user points at into the ``.rec`` files of one dataset.

    ``path`` may be a folder (``<prefix>.rec``, else a complete shard set
    ``<prefix>-IIIII-of-NNNNN.rec``, else its only ``.rec``), a ``.rec`` file or a ``.idx``
    file. Returns ``(parts, property_path or None)``.

    Raises:
        RecordIOError: nothing to read, several candidate files, or an incomplete shard
            set (names the missing shards).
    """
    p = Path(path)
    if p.is_dir():
        prop = p / "property" if (p / "property").is_file() else None
        single = p / f"{prefix}.rec"
        if single.is_file():
            return [_part(single)], prop
        shards: dict[int, set] = {}
        for f in p.iterdir():
            m = SHARD_RE.match(f.name)
            if m and m["prefix"] == prefix and f.is_file():
                shards.setdefault(int(m["n"]), set()).add(int(m["i"]))
        if len(shards) > 1:
            raise RecordIOError(f"{p}: shards of several set sizes: {sorted(shards)} (mixed runs?)")
        if shards:
            (n, have), = shards.items()
            missing = sorted(set(range(n)) - have)
            if missing:
                names = ", ".join(shard_stem(prefix, i, n) + ".rec" for i in missing[:5])
                raise RecordIORecordSetError(f"{p}: incomplete shard set, missing {len(missing)} of {n}: {names}")
            return [_part(p / (shard_stem(prefix, i, n) + ".rec")) for i in range(n)], prop
        recs = sorted(f for f in p.glob("*.rec") if f.is_file())
        if len(recs) == 1:
            return [_part(recs[0])], prop
        if not recs:
            raise RecordIOError(f"{p}: no {prefix}.rec, no {prefix}-*-of-*.rec shards and no other .rec file")
        raise RecordIOError(f"{p}: several .rec files ({', '.join(r.name for r in recs[:5])}); name one or set prefix")
    if p.suffix == ".idx":
        p = p.with_suffix(".rec")
    if p.suffix != ".rec" or not p.is_file():
        raise RecordIOError(f"{path}: not a .rec/.idx file or a folder holding one")
    prop = p.parent / "property"
    return [_part(p)], prop if prop.is_file() else None


def _part(rec: Path) -> PartFiles:
    idx = rec.with_suffix(".idx")
    return PartFiles(rec, idx if idx.is_file() else None)


class FaceRecPart:
    """One ``.rec`` of a face dataset: its layout, image keys and their byte offsets.

    Attributes:
        layout: ``"insightface"`` or ``"plain"``.
        header0: ``(first_identity_key, end_key)`` from the header record, or None.
        image_keys, image_offsets: int64 arrays, image records in dataset order.
        identity_keys: int64 array of identity-record keys (insightface), else empty.
        first_of: None when every image has its own record; else an int64 array giving,
            for each image, the index of the first image whose idx offset is the same
            (``first_of[i] != i``: image ``i`` repeats a record already listed).
        duplicate_offsets: how many images repeat another image's record.
    ``stream=True`` (one pass in dataset order over a large file: the ``mxrec`` source):
    a dense idx whose offsets increase, what every writer makes, is checked in one pass and
    not held (16 B a record less); :meth:`entries` reads it in blocks, and the arrays above
    are loaded on first use. Any other idx is loaded at once, as without ``stream`` (so is a
    dense one whose key 0, the header record, is not its first row).
    Raises:
        RecordIOError: unreadable files or idx, a header record whose counts exceed the
            records the idx (or scan) holds, a missing image or identity key.
    The open file is per process: after ``fork`` or unpickling the part reopens its file
    on first read, so a part (and :class:`FaceRec`) can go to DataLoader workers.
    """

    def __init__(self, files: PartFiles, layout: str = "auto", stream: bool = False):
        self.rec_path = str(files.rec)
        self.idx_path = str(files.idx) if files.idx else None
        r = IndexedRecordIOReader(self.idx_path, self.rec_path, stream=stream)
        self._reader: Optional[RecordIOReader] = r
        self._pid = os.getpid()
        self.records = len(r)
        # dense keys (the usual idx) cannot repeat: no sorted copy of the keys to count them
        self.duplicate_keys = 0 if r._dense else int(len(r.key_array) - len(np.unique(r.key_array)))
        self.header0 = self._detect_header(r)
        if layout == "auto":
            layout = "insightface" if self.header0 else "plain"
        elif layout not in LAYOUTS:
            raise ValueError(f"layout must be auto, insightface or plain, not {layout!r}")
        self.layout = layout
        if layout == "insightface":
            if self.header0 is None:
                raise RecordIOError(
                    f"{self.rec_path}: layout insightface forced, but key 0 is not a header record "
                    "(flag > 0, empty image, label [first_identity_key, end_key])"
                )
            first, end = self.header0
            if max(first, end) > self.records:  # counts from the file, not trusted
                src = self.idx_path or "the scan of the .rec"
                raise RecordIOError(
                    f"{self.rec_path}: key 0, record at offset {r.offset_of(0)}: header label [{first}, {end}] "
                    f"needs keys 0..{max(first, end) - 1}, but {src} lists {self.records} records"
                )
        self.first_of = None
        self.duplicate_offsets = 0
        self._image_keys = self._image_offsets = self._identity_keys = self._identity_offsets = None
        #: streamed (``stream=True``, a dense idx whose offsets increase, so no image repeats
        #: a record): the idx rows of the images, read when needed
        self._scan = r._scan if r.streamed and (layout == "plain" or r._k0 == 0) else None
        self._rec_size = r.size
        if self._scan is not None:  # keys k0, k0 + 1, ...: the rows of keys 1 .. first - 1
            self._image_rows = (1, self.header0[0]) if layout == "insightface" else (0, self.records)
            self._n_images = self._image_rows[1] - self._image_rows[0]
        else:
            self._materialise(r)

    def _materialise(self, r: IndexedRecordIOReader) -> None:
        """The image and identity keys and offsets as arrays (views of the idx's where it
        is dense), and the images that repeat another's record (``first_of``)."""
        if self.layout == "insightface":
            first, end = self.header0
            self._image_keys = self._keys(r, 1, first)
            self._identity_keys = self._keys(r, first, max(first, end))
            self._image_offsets = self._offsets(r, self._image_keys)
            self._identity_offsets = self._offsets(r, self._identity_keys)
        else:
            self._image_keys = r.key_array
            self._identity_keys = np.zeros(0, np.int64)
            self._identity_offsets = np.zeros(0, np.int64)
            if self.duplicate_keys:  # mxnet: keys list has both rows, the dict the last offset
                self._image_offsets = np.array([r.idx[k] for k in r.keys], dtype=np.int64)
            else:
                self._image_offsets = r.offset_array
        self._n_images = len(self._image_keys)
        offs = self._image_offsets
        if len(offs) > 1 and not (offs[1:] > offs[:-1]).all():  # not strictly increasing: look
            _, first_idx, inv = np.unique(offs, return_index=True, return_inverse=True)
            first_of = first_idx[inv.reshape(-1)].astype(np.int64)
            n_dup = int((first_of != np.arange(len(offs))).sum())
            if n_dup:
                self.first_of = first_of
                self.duplicate_offsets = n_dup

    def _load(self) -> None:
        """A streamed part's arrays, on first use (the idx read whole, checked to be the
        idx scanned at open)."""
        r = IndexedRecordIOReader(self.idx_path, self.rec_path)
        try:
            check_scanned(self.idx_path, self._scan, r.key_array, r.offset_array)
            self._materialise(r)
        finally:
            r.close()
        self._scan = None

    def _array(self, name: str) -> np.ndarray:
        if getattr(self, name) is None:
            self._load()
        return getattr(self, name)

    image_keys = property(
        lambda self: self._array("_image_keys"),
        doc="int64 keys of the image records, dataset order (a streamed part loads its idx)",
    )
    image_offsets = property(lambda self: self._array("_image_offsets"), doc="int64 byte offsets of the image records")
    identity_keys = property(
        lambda self: self._array("_identity_keys"), doc="int64 keys of the identity records (insightface)"
    )
    identity_offsets = property(
        lambda self: self._array("_identity_offsets"), doc="int64 byte offsets of the identity records"
    )

    @property
    def streamed(self) -> bool:
        """Whether the idx is not held: :meth:`entries` reads it in blocks."""
        return self._scan is not None

    def entries(self) -> Iterator[tuple[int, int, int]]:
        """``(k, key, offset)`` of every image (ints; ``offset``: byte position of its record
        in the ``.rec``), ``k`` = 0, 1, ... in dataset order: from the arrays, or for a
        streamed part from the idx in blocks (memory: one block).

        Raises:
            RecordIOError: (streamed) the idx changed since the part was opened.
        """
        if self._scan is None:
            blocks = (
                (self._image_keys[i : i + 4096], self._image_offsets[i : i + 4096])
                for i in range(0, self._n_images, 4096)
            )
        else:
            blocks = idx_rows(self.idx_path, *self._image_rows, self._scan, max(self._rec_size, 1))
        k = 0
        for keys, offs in blocks:
            for key, off in zip(keys.tolist(), offs.tolist()):
                yield k, key, off
                k += 1

    def key_bounds(self) -> tuple[int, int]:
        """``(smallest, largest)`` image key (``(0, 0)`` without images), without reading
        the idx of a streamed part."""
        if not self._n_images:
            return 0, 0
        if self._scan is not None:
            lo = self._scan.first_key + self._image_rows[0]
            return lo, lo + self._n_images - 1
        return int(self._image_keys.min()), int(self._image_keys.max())

    @staticmethod
    def _detect_header(r: IndexedRecordIOReader) -> Optional[tuple[int, int]]:
        if not len(r):
            return None
        try:
            off = r.offset_of(0)
            payload = r.read_at(off, 0)[0]
            h, img = unpack(payload)
        except RecordIOError:
            return None
        if h.flag == 0 or img:
            return None
        lab = [float(x) for x in h.label]
        if not lab[0].is_integer() or lab[0] < 1:
            return None
        end = lab[1] if len(lab) > 1 and lab[1].is_integer() else lab[0]
        return int(lab[0]), int(end)

    @staticmethod
    def _keys(r: IndexedRecordIOReader, start: int, end: int) -> np.ndarray:
        """Keys ``start .. end - 1`` as an int64 array: a view of the idx's keys when they
        are dense (no second 8 B a record), else a new ``arange``."""
        if r._dense and r._k0 <= start and end - r._k0 <= len(r.key_array):
            return r.key_array[start - r._k0 : end - r._k0]
        return np.arange(start, end, dtype=np.int64)

    def _offsets(self, r: IndexedRecordIOReader, keys: np.ndarray) -> np.ndarray:
        if r._dense and len(keys):
            i0 = int(keys[0]) - r._k0
            if i0 >= 0 and i0 + len(keys) <= len(r.offset_array):
                return r.offset_array[i0 : i0 + len(keys)]
        out = np.empty(len(keys), np.int64)
        for j, k in enumerate(keys.tolist()):
            out[j] = r.offset_of(k)  # raises RecordIOError naming the missing key
        return out

    def __len__(self) -> int:
        return self._n_images

    @property
    def reader(self) -> RecordIOReader:
        """This part's ``.rec`` reader, opened on first use and again in a new process (a
        DataLoader worker never shares the parent's file descriptor)."""
        if self._reader is None or self._pid != os.getpid():
            self._reader = RecordIOReader(self.rec_path)  # never share a descriptor across processes
            self._pid = os.getpid()
        return self._reader

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_reader"] = None
        return d

    def read(self, i: int) -> tuple[IRHeader, bytes]:
        """Header and image bytes of image ``i`` of this part (0-based, dataset order).

        Raises:
            RecordIOError: malformed record (names file, key and offset).
        """
        return self.read_record(int(self.image_keys[i]), int(self.image_offsets[i]))

    def read_record(self, key: int, offset: int) -> tuple[IRHeader, bytes]:
        """Header and image bytes of the record ``key`` at byte ``offset`` (from
        :meth:`entries`). Raises RecordIOError: malformed record (names file, key, offset)."""
        payload = self.reader.read_at(offset, key)[0]
        try:
            return unpack(payload)
        except RecordIOError as e:
            raise RecordIOError(f"{self.rec_path}: key {key}, record at offset {offset}: {e}") from None

    def read_header(self, i: int) -> tuple[IRHeader, int]:
        """Header of image ``i`` and its image length (-1 if unknown), reading ~64 bytes."""
        return self.reader.read_header(int(self.image_offsets[i]), int(self.image_keys[i]))

    def identity_ranges(self) -> list[tuple[int, int, int]]:
        """``[(identity_key, start, end), ...]`` from the identity records (insightface)."""
        out = []
        for k, off in zip(self.identity_keys.tolist(), self.identity_offsets.tolist()):
            h, _ = self.reader.read_header(off, k)
            lab = np.atleast_1d(np.asarray(h.label, np.float64))
            if lab.size < 2:
                raise RecordIOError(f"{self.rec_path}: key {k}, record at offset {off}: identity record needs label [start, end)")
            out.append((k, int(lab[0]), int(lab[1])))
        return out

    def close(self) -> None:
        """Close the ``.rec`` reader if one is open (it reopens on the next read)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class FaceRec:
    """A face dataset in RecordIO: one file or a shard set, read as one sequence of images.

    Args:
        path: folder, ``.rec`` or ``.idx`` (see :func:`find_parts`).
        layout: ``auto`` (per file), ``insightface`` or ``plain``.
        prefix: file stem inside a folder (``train``).
        stream: for one pass in dataset order: the idx is read in blocks, not held
            (:class:`FaceRecPart`; :meth:`entries`).
    Attributes:
        parts: the :class:`FaceRecPart` objects, in order.
        property: ``(num_classes, height, width)`` from ``property``, or None.
        property_error: why ``property`` could not be read, or None.
    Raises:
        RecordIOError: unreadable files, bad idx, forced layout not matching.
    """

    def __init__(
        self, path: str | os.PathLike, layout: str = "auto", prefix: str = "train", stream: bool = False
    ):
        files, prop = find_parts(path, prefix)
        self.path = str(path)
        self.parts = [FaceRecPart(f, layout, stream) for f in files]
        self.property_path = str(prop) if prop else None
        self.property = None
        self.property_error = None
        if prop:
            try:
                self.property = read_property(prop)
            except (RecordIOError, OSError) as e:
                self.property_error = str(e)
        self._starts = np.cumsum([0] + [len(p) for p in self.parts]).tolist()

    @property
    def layout(self) -> str:
        """The parts' layout (see :attr:`FaceRecPart.layout`), or ``"mixed"`` when the parts
        differ."""
        kinds = {p.layout for p in self.parts}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    def __len__(self) -> int:
        return self._starts[-1]

    def locate(self, i: int) -> tuple[int, int]:
        """``(part_index, index_in_part)`` of image ``i``. Raises IndexError."""
        if not 0 <= i < len(self):
            raise IndexError(f"image index {i} out of range 0..{len(self) - 1}")
        j = bisect.bisect_right(self._starts, i) - 1
        return j, i - self._starts[j]

    def key(self, i: int) -> tuple[int, int]:
        """``(part_index, record_key)`` of image ``i``."""
        j, k = self.locate(i)
        return j, int(self.parts[j].image_keys[k])

    def read(self, i: int) -> tuple[IRHeader, bytes]:
        """Header and encoded image bytes of image ``i`` (untouched, as stored)."""
        j, k = self.locate(i)
        return self.parts[j].read(k)

    def read_header(self, i: int) -> tuple[IRHeader, int]:
        """Header of image ``i`` (dataset order) and its image length (-1 if unknown),
        reading ~64 bytes. Raises IndexError, RecordIOError."""
        j, k = self.locate(i)
        return self.parts[j].read_header(k)

    def labels(self, with_ids: bool = False, errors: str = "raise"):
        """Class of every image (int64 array, dataset order), reading only headers; with
        ``with_ids`` also the IRHeader ``id`` of every image (uint64 array).

        Args:
            errors: ``"raise"``, or ``"collect"``: a bad image gets label -1 and id 0, and
                one more value is returned, ``{image_index: (reason, message)}``, reason
                ``"bad_record"`` or ``"bad_label"`` (messages name file, key and offset).
        Raises:
            RecordIOError: (``errors="raise"``) a malformed record, or a label that is not
                a class id (:func:`class_id`); names file, key and offset.
        """
        out = np.empty(len(self), np.int64)
        ids = np.empty(len(self), np.uint64)
        bad: dict[int, tuple[str, str]] = {}
        for i, j, _, key, off in self.entries():
            p = self.parts[j]
            reason = "bad_record"
            try:
                h, _ = p.reader.read_header(off, key)
                try:
                    lab = class_id(label_of(h))
                except (ValueError, RecordIOError) as e:
                    reason = "bad_label"
                    raise RecordIOError(f"{p.rec_path}: key {key}, record at offset {off}: {e}") from None
            except RecordIOError as e:
                if errors == "raise":
                    raise
                bad[i] = (reason, str(e))
                lab, h = -1, None
            out[i] = lab
            ids[i] = h.id if h is not None else 0
        if errors == "collect":
            return (out, ids, bad) if with_ids else (out, bad)
        return (out, ids) if with_ids else out

    def entries(self) -> Iterator[tuple[int, int, int, int, int]]:
        """``(i, part_index, index_in_part, key, offset)`` of every image, in dataset order
        (:meth:`FaceRecPart.entries`: a streamed dataset's idx is read in blocks)."""
        i = 0
        for j, p in enumerate(self.parts):
            for k, key, off in p.entries():
                yield i, j, k, key, off
                i += 1

    def __iter__(self) -> Iterator[tuple[int, IRHeader, bytes]]:
        """Yield ``(i, header, image_bytes)`` in dataset order."""
        for i, j, _, key, off in self.entries():
            h, img = self.parts[j].read_record(key, off)
            yield i, h, img

    def close(self) -> None:
        """Close every part's reader (each reopens on its next read)."""
        for p in self.parts:
            p.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
