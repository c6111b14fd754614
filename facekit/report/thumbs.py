"""Thumbnails for the report: tiles of aligned crops composed into one sprite JPEG per
identity, and small copies of source photos with their detected boxes drawn. All images
are ``uint8`` BGR (OpenCV order); sizes in pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from facekit.errors import FacekitError, SampleRejected
from facekit.report.source import SourceReader
from facekit.vision.images import decode_image, read_file

JPEG_QUALITY = 82


def fit(img: np.ndarray, side: int) -> np.ndarray:
    """``img`` scaled (INTER_AREA) and centred on a ``side`` x ``side`` dark square."""
    h, w = img.shape[:2]
    s = side / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    out = np.full((side, side, 3), 32, np.uint8)
    y, x = (side - nh) // 2, (side - nw) // 2
    out[y : y + nh, x : x + nw] = small
    return out


def sprite(tiles: Sequence[np.ndarray], cols: int) -> np.ndarray:
    """Square tiles of one size in a grid of ``cols`` columns (row-major), one image."""
    side = tiles[0].shape[0]
    rows = (len(tiles) + cols - 1) // cols
    out = np.full((rows * side, min(cols, len(tiles)) * side, 3), 32, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * side : (r + 1) * side, c * side : (c + 1) * side] = t
    return out


def write_jpeg(img: np.ndarray, path: Path) -> None:
    """Write ``img`` (BGR) as a JPEG; raises FacekitError naming ``path`` on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise FacekitError(f"{path}: could not encode thumbnail")
    try:
        path.write_bytes(buf.tobytes())
    except OSError as e:
        raise FacekitError(f"{path}: {e.strerror or e}") from None


def _source(path: str, reader: Optional[SourceReader]) -> tuple[Optional[np.ndarray], str]:
    """The decoded source image of ``path`` (a file, or an ``mxrec`` source's
    ``<file>.rec:<key>`` when ``reader`` is given), or None and a one-line reason."""
    try:
        return decode_image(reader.read(path) if reader is not None else read_file(path)), ""
    except SampleRejected as e:
        return None, f"{e.reason}: {e.detail}" if e.detail else e.reason
    except Exception as e:  # a photo the decoder chokes on: shown as text, not a thumbnail
        return None, " ".join(str(e).split())[:200]


def source_thumbnail(path: str, boxes: Sequence[Optional[Sequence[float]]], side: int,
                     landmarks: Sequence[Optional[Sequence[float]]] = (),
                     reader: Optional[SourceReader] = None) -> tuple[Optional[np.ndarray], str]:
    """A source photo scaled to at most ``side`` pixels (longer side) with each box
    (``[x1, y1, x2, y2]`` in source pixels, EXIF orientation applied as the pipeline saw the
    photo) drawn in red and landmarks as dots. ``reader`` also reads ``mxrec`` sources'
    records (:class:`facekit.report.source.SourceReader`).

    Returns ``(image or None, why)``: None and a one-line reason when the photo cannot be
    read or decoded (which is often why it was rejected); never raises for a bad photo.
    """
    img, why = _source(path, reader)
    if img is None:
        return None, why
    h, w = img.shape[:2]
    s = min(1.0, side / max(h, w))
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA) if s < 1 else img.copy()
    th = max(1, round(side / 90))
    for b in boxes:
        if b is not None and len(b) >= 4 and all(np.isfinite(b[:4])):
            p1 = (int(round(b[0] * s)), int(round(b[1] * s)))
            p2 = (int(round(b[2] * s)), int(round(b[3] * s)))
            cv2.rectangle(small, p1, p2, (40, 40, 235), th, cv2.LINE_AA)
    for lm in landmarks:
        if lm is not None and len(lm) >= 10:
            for k in range(5):
                if np.isfinite(lm[2 * k]) and np.isfinite(lm[2 * k + 1]):
                    cv2.circle(small, (int(round(lm[2 * k] * s)), int(round(lm[2 * k + 1] * s))), th, (60, 220, 60), -1)
    return small, ""


#: the mean y of the five ArcFace template points over the crop's side (71.90 of 112): a
#: least-squares similarity alignment puts the points' centroid on the template's, so the
#: side of a crop is estimated from its aligned points (the results do not record it)
_TEMPLATE_MEAN_Y = 71.9008 / 112


def face_thumbnail(row: dict, side: int, reader: Optional[SourceReader] = None) -> tuple[Optional[np.ndarray], str]:
    """The face a result row describes, cut from its source image (for a rejected face,
    which has no crop in the sinks), fitted into ``side`` x ``side``: warped with the row's
    ``transform`` (source -> crop; the crop's side estimated from its ``aligned`` points on
    ArcFace's template, else 112) as the pipeline aligned it; else its ``box`` with a
    quarter of margin; else the whole image (an aligned source's crop).

    Returns ``(image or None, why)`` as :func:`source_thumbnail`; never raises for a bad photo.
    """
    img, why = _source(row["path"], reader)
    if img is None:
        return None, why
    t, box = row.get("transform"), row.get("box")
    if t is not None and len(t) == 6 and all(np.isfinite(t)):
        pts = row.get("aligned")
        crop = 112
        if pts is not None and len(pts) >= 10 and all(np.isfinite(pts)):
            crop = int(np.clip(round(float(np.mean(pts[1::2])) / _TEMPLATE_MEAN_Y), 32, 1024))
        img = cv2.warpAffine(img, np.asarray(t, np.float64).reshape(2, 3), (crop, crop), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    elif box is not None and len(box) >= 4 and all(np.isfinite(box[:4])):
        h, w = img.shape[:2]
        m = 0.25 * max(box[2] - box[0], box[3] - box[1])
        x1, y1 = max(0, int(box[0] - m)), max(0, int(box[1] - m))
        x2, y2 = min(w, int(np.ceil(box[2] + m))), min(h, int(np.ceil(box[3] + m)))
        if x2 > x1 and y2 > y1:
            img = img[y1:y2, x1:x2]
    return fit(img, side), ""
