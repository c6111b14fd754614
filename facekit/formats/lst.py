"""Text side files of the InsightFace dataset tools: ``.lst``/``label.txt`` and landmarks.

See ``shared/docs/FORMATS.md`` section 2.

- insightface ``.lst`` (what ``glint2lst`` writes and ``face2rec2`` reads), tab-separated:
  ``aligned  path  label  [x1 y1 x2 y2  [x0..x4  y0..y4]]``; landmarks *planar* (five x,
  then five y). ``glint2lst`` writes ``0, path, label, 0, 0, 0, 0, <5 x>, <5 y>``.
- landmark file of ``dir2lmk``: ``path face_id x1 y1 ... x5 y5`` (12 fields, space
  separated, landmarks interleaved), ``face_id`` being the identity's class id.

Every path goes through :func:`text_field`: a tab, newline, CR (or other control
character) or an undecodable byte cannot split a line or field. Sources reject such names
(``bad_name``), so this is a safety net for third-party sources; ordinary paths are
written as they are.
"""

from __future__ import annotations

import math
import re
import unicodedata

import numpy as np

from facekit.stages import Sample

_UNSAFE = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]")
_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(m: re.Match) -> str:
    c = m.group()
    o = ord(c)
    if 0xDC80 <= o <= 0xDCFF:  # an undecodable byte, as surrogateescape holds it
        return f"\\x{o - 0xDC00:02x}"
    return _ESCAPES.get(c) or (f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")


def text_field(text: str) -> str:
    """``text`` safe for one field of a tab-separated, one-record-per-line text file:
    tab, newline and CR become ``\\t``, ``\\n``, ``\\r``; other control characters and
    line separators ``\\xNN``/``\\uNNNN``; an undecodable byte of a file name (a lone
    surrogate of Python's ``surrogateescape``) ``\\xNN`` (the byte). Anything else,
    backslashes included, is kept, so ordinary paths stay byte for byte the same."""
    if text.isprintable() or _UNSAFE.search(text) is None:  # isprintable: the fast common case
        return text
    return _UNSAFE.sub(_escape, text)


def _f(v: float) -> str:
    return f"{float(v):.3f}"


def _i(v: float) -> str:
    """Nearest integer, halves rounded up (``floor(v + 0.5)``): ``parse_lst_line`` reads
    box fields with ``int()``."""
    return str(math.floor(float(v) + 0.5))


def lst_line(sample: Sample) -> str:
    """The insightface ``.lst`` line for one kept face (newline-terminated).

    With landmarks: ``0 path label 0 0 0 0 x0..x4 y0..y4`` (glint2lst); with a box only:
    ``0 path label x1 y1 x2 y2``, the box in whole pixels (nearest integer, halves up:
    insightface's ``face_preprocess.parse_lst_line`` reads box fields with ``int()``);
    with neither (source already aligned): ``1 path label``. Paths are the source
    images' (through :func:`text_field`); coordinates are in the source image, pixels.
    """
    path = text_field(sample.path)
    if sample.landmarks is None and sample.box is None:  # pass-through: already aligned
        return f"1\t{path}\t{sample.label}\n"
    if sample.landmarks is not None:
        lmk = np.asarray(sample.landmarks, np.float64)
        fields = ["0", path, str(sample.label), "0", "0", "0", "0"]
        fields += [_f(v) for v in lmk[:, 0]] + [_f(v) for v in lmk[:, 1]]
    else:
        fields = ["0", path, str(sample.label)] + [_i(v) for v in sample.box]
    return "\t".join(fields) + "\n"


def aligned_lst_line(path: str, label: int) -> str:
    """The ``.lst`` line of an already aligned image: ``1<TAB>path<TAB>label`` (what
    insightface's ``dir2lst`` writes for a folder of aligned crops; ``face2rec2`` packs
    such lines' files byte for byte). Newline-terminated."""
    return f"1\t{text_field(path)}\t{int(label)}\n"


def landmark_line(sample: Sample) -> str | None:
    """The ``dir2lmk`` landmark-file line ``path face_id x1 y1 ... x5 y5``, or None
    when the sample has no landmarks. (Fields are space-separated, as dir2lmk writes:
    a path with a space cannot be told apart there; :func:`text_field` handles the rest.)"""
    if sample.landmarks is None:
        return None
    lmk = np.asarray(sample.landmarks, np.float64).reshape(-1)
    return " ".join([text_field(sample.path), str(sample.label)] + [_f(v) for v in lmk]) + "\n"


def image_size(data: bytes) -> tuple[int, int]:
    """``(height, width)`` of encoded image bytes, read from the header only."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
    return h, w


# --------------------------------------------------------------------------- names from a .lst


class LstMismatch(ValueError):
    """A ``.lst`` line that does not describe the record it was matched to."""


def is_number(text: str) -> bool:
    """Whether a ``.lst`` field reads as a number (``float``): an im2rec line starts with
    its index, a face2rec2 line with its aligned flag then a path."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _fields(raw: bytes, im2rec: bool) -> tuple[str, str]:
    """``(label, path)`` fields of a tab-separated ``.lst`` line. Raises ValueError."""
    f = raw.decode("utf-8", "surrogateescape").rstrip("\r\n").split("\t")
    if len(f) < 3:
        raise ValueError("fewer than 3 tab-separated fields")
    return (f[1], f[-1]) if im2rec else (f[2], f[1])


def _names_of(path: str) -> tuple[str, str] | None:
    """``(identity folder, file stem)`` from a ``.lst`` path column (``.../<folder>/<file>``),
    or None when the path names no folder or an unusable name."""
    parts = path.split("/")
    if len(parts) < 2:
        return None
    folder, file = parts[-2], parts[-1]
    dot = file.rfind(".")
    stem = file[:dot] if dot > 0 else file
    if folder in ("", ".", "..") or stem in ("", ".", "..") or _UNSAFE.search(folder + stem):
        return None
    return folder, stem


class LstNames:
    """The identity folder and file name a ``.lst`` gives each image record of a RecordIO
    dataset (its path column: ``.../<folder>/<file>``), to write the records back as
    identity folders named as they were packed.

    Two formats (``shared/docs/FORMATS.md`` section 2), told apart by the first line:
    insightface's (``aligned path label ...``: what facekit's ``mxrec`` sink, ``glint2lst``
    and ``dir2lst`` write; line ``n`` (0-based) is the record with id ``first_id + n``: 1
    after an insightface header, as ``face2rec2`` numbers them, 0 in a plain file) and
    mxnet im2rec's (``idx label... path``: the record with id ``idx``).

    :meth:`load` reads the file once, keeping 8 bytes a line (its offset; 16 with
    im2rec ids that are not consecutive), and refuses (says why) a file that does not fit
    the dataset: another line count, a malformed line, a path naming no folder, a label
    whose images are in several folders, a folder holding several labels (folder names
    compared in NFC, case-insensitively). :meth:`name` reads the line of a record id,
    :meth:`name_at` line ``n`` (for a rec whose header ids are not recorded: its ``n``-th
    image record, as packers write the lines in order), each checking the line's label
    against the record's (reading the next line in file order needs no seek);
    :meth:`lines` gives every line's names in record order.
    """

    def __init__(self, path: str, fh, offsets, first_id: int, im2rec: bool, folders: dict, ids=None):
        """Use :meth:`load`. ``folders``: each label's folder name (:attr:`folders`)."""
        self.path, self.first_id, self.im2rec = path, first_id, im2rec
        #: label -> the name of its identity folder, as the file writes it
        self.folders: dict[int, str] = folders
        self._f, self._offsets, self._pos = fh, offsets, -1  # -1: seek before the first read
        self._order = self._sorted = None
        if ids is not None:  # im2rec indices, not consecutive: looked up in sorted order
            a = np.frombuffer(ids, np.int64)
            self._order = np.argsort(a, kind="stable")
            self._sorted = a[self._order]

    @classmethod
    def load(cls, path: str, records: int, first_id: int) -> "tuple[LstNames | None, str]":
        """``(names, "")``, or ``(None, why)`` when the file cannot name ``records`` image
        records whose ids start at ``first_id``. It is opened non-blocking and must be a
        regular file (a FIFO is refused, not waited on)."""
        import os
        import stat

        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except OSError as e:
            return None, f"cannot open it: {e.strerror or e}"
        fh = os.fdopen(fd, "rb")
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                fh.close()
                return None, "not a regular file"
            names, why = cls._scan(path, fh, records, first_id)
        except OSError as e:
            names, why = None, f"cannot read it: {e.strerror or e}"
        if names is None:
            fh.close()
        return names, why

    @classmethod
    def _scan(cls, path: str, fh, records: int, first_id: int) -> "tuple[LstNames | None, str]":
        """:meth:`load` on the open file ``fh``."""
        from array import array

        from facekit.formats.facerec import class_id

        offsets, ids = array("q"), array("q")
        folder_of: dict[int, str] = {}
        label_of: dict[str, int] = {}
        shown: dict[int, str] = {}  # label -> its folder name as written
        pos = n = 0
        im2rec = None
        for raw in fh:
            n += 1
            if n > records:
                return None, f"it has more lines than the {records} image records"
            if im2rec is None:
                f = raw.split(b"\t")
                im2rec = len(f) >= 3 and is_number(f[1].decode("latin-1"))
            try:
                label, p = _fields(raw, im2rec)
                label = class_id(float(label))
                if im2rec:
                    ids.append(int(raw.split(b"\t", 1)[0]))
            except ValueError as e:
                kind = "an im2rec" if im2rec else "an insightface"
                return None, f"line {n}: not {kind} .lst line ({e})"
            names = _names_of(p)
            if names is None:
                return None, f"line {n}: the path {p!r} names no usable identity folder and file"
            folder = unicodedata.normalize("NFC", names[0]).lower()
            if folder_of.setdefault(label, folder) != folder:
                return None, f"line {n}: label {label} has images in two folders ({names[0]!r} and another)"
            if label_of.setdefault(folder, label) != label:
                return None, f"line {n}: folder {names[0]!r} holds labels {label_of[folder]} and {label}"
            if label not in shown:
                shown[label] = names[0]
            offsets.append(pos)
            pos += len(raw)
        if n != records:
            return None, f"it has {n} lines for {records} image records"
        if not im2rec or not n:
            return cls(path, fh, offsets, first_id, False, shown), ""
        if ids == array("q", range(ids[0], ids[0] + n)):  # the usual im2rec list: 0, 1, 2, ...
            return cls(path, fh, offsets, ids[0], True, shown), ""
        if len(set(ids)) != n:
            return None, "an im2rec index appears on two lines"
        return cls(path, fh, offsets, first_id, True, shown, ids), ""

    def line_of(self, record_id: int) -> int:
        """0-based line of the record with id ``record_id``. Raises LstMismatch: no line."""
        if self._sorted is None:
            n = record_id - self.first_id
            if 0 <= n < len(self._offsets):
                return n
        else:
            k = int(np.searchsorted(self._sorted, record_id))
            if k < len(self._sorted) and int(self._sorted[k]) == record_id:
                return int(self._order[k])
        raise LstMismatch(f"{self.path}: no line for the record with id {record_id}")

    def read(self, n: int) -> tuple[float, tuple[str, str] | None]:
        """Label and ``(identity folder, file stem)`` (None: unusable) of line ``n``
        (0-based): no seek when it is the line after the last one read. Raises
        LstMismatch: the line changed since :meth:`load` read it."""
        off = self._offsets[n]
        if off != self._pos:
            self._f.seek(off)
        raw = self._f.readline()
        self._pos = off + len(raw)
        try:
            lab, p = _fields(raw, self.im2rec)
            return float(lab), _names_of(p)
        except ValueError as e:
            raise LstMismatch(f"{self.path}:{n + 1}: the line changed since it was read ({e})") from None

    def name(self, record_id: int, label: int) -> tuple[str, str]:
        """``(identity folder, file stem)`` of the record with id ``record_id`` and class id
        ``label``. Raises LstMismatch: no line for that id, or its label is another."""
        return self.name_at(self.line_of(record_id), label, f"the record with id {record_id}")

    def name_at(self, n: int, label: int, record: str) -> tuple[str, str]:
        """``(identity folder, file stem)`` line ``n`` (0-based) gives the record
        ``record`` (its description, for the error) of class id ``label``. Raises
        LstMismatch: the line's label is another."""
        lab, names = self.read(n)
        if lab != label or names is None:
            raise LstMismatch(f"{self.path}:{n + 1}: label {lab:g}, but {record} has label {label}")
        return names

    def lines(self, by_id: bool = True):
        """``(line, label, folder, file stem)`` of every line (0-based ``line``, int
        ``label``), in record order: by record id (``by_id``; im2rec ids that are not
        consecutive are sorted) or in file order. Raises LstMismatch (the file changed)."""
        order = self._order if by_id and self._order is not None else range(len(self._offsets))
        for n in order:
            n = int(n)
            lab, names = self.read(n)
            if names is None:
                raise LstMismatch(f"{self.path}:{n + 1}: the line changed since it was read")
            yield n, int(lab), names[0], names[1]

    def close(self) -> None:
        """Close the file."""
        self._f.close()
