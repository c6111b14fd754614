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
