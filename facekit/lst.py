"""Text side files of the InsightFace dataset tools: ``.lst``/``label.txt`` and landmarks.

See ``shared/docs/FORMATS.md`` section 2.

- insightface ``.lst`` (what ``glint2lst`` writes and ``face2rec2`` reads), tab-separated:
  ``aligned  path  label  [x1 y1 x2 y2  [x0..x4  y0..y4]]``; landmarks *planar* (five x,
  then five y). ``glint2lst`` writes ``0, path, label, 0, 0, 0, 0, <5 x>, <5 y>``.
- landmark file of ``dir2lmk``: ``path face_id x1 y1 ... x5 y5`` (12 fields, space
  separated, landmarks interleaved), ``face_id`` being the identity's class id.
"""

from __future__ import annotations

import numpy as np

from facekit.stages import Sample


def _f(v: float) -> str:
    return f"{float(v):.3f}"


def lst_line(sample: Sample) -> str:
    """The insightface ``.lst`` line for one kept face (newline-terminated).

    With landmarks: ``0 path label 0 0 0 0 x0..x4 y0..y4`` (glint2lst); with a box only:
    ``0 path label x1 y1 x2 y2``; with neither (source already aligned): ``1 path label``.
    Paths are the source images'; coordinates are in the source image, pixels.
    """
    if sample.landmarks is None and sample.box is None:  # pass-through: already aligned
        return f"1\t{sample.path}\t{sample.label}\n"
    if sample.landmarks is not None:
        lmk = np.asarray(sample.landmarks, np.float64)
        fields = ["0", sample.path, str(sample.label), "0", "0", "0", "0"]
        fields += [_f(v) for v in lmk[:, 0]] + [_f(v) for v in lmk[:, 1]]
    elif sample.box is not None:
        fields = ["0", sample.path, str(sample.label)] + [_f(v) for v in sample.box]
    return "\t".join(fields) + "\n"


def landmark_line(sample: Sample) -> str | None:
    """The ``dir2lmk`` landmark-file line ``path face_id x1 y1 ... x5 y5``, or None
    when the sample has no landmarks."""
    if sample.landmarks is None:
        return None
    lmk = np.asarray(sample.landmarks, np.float64).reshape(-1)
    return " ".join([sample.path, str(sample.label)] + [_f(v) for v in lmk]) + "\n"


def image_size(data: bytes) -> tuple[int, int]:
    """``(height, width)`` of encoded image bytes, read from the header only."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
    return h, w
