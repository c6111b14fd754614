"""Thumbnails for the report: tiles of aligned crops composed into one sprite JPEG per
identity, and small copies of source photos with their detected boxes drawn. All images
are ``uint8`` BGR (OpenCV order); sizes in pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from facekit.errors import FacekitError, SampleRejected
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


def source_thumbnail(path: str, boxes: Sequence[Optional[Sequence[float]]], side: int,
                     landmarks: Sequence[Optional[Sequence[float]]] = ()) -> tuple[Optional[np.ndarray], str]:
    """A source photo scaled to at most ``side`` pixels (longer side) with each box
    (``[x1, y1, x2, y2]`` in source pixels, EXIF orientation applied as the pipeline saw the
    photo) drawn in red and landmarks as dots.

    Returns ``(image or None, why)``: None and a one-line reason when the photo cannot be
    read or decoded (which is often why it was rejected); never raises for a bad photo.
    """
    try:
        img = decode_image(read_file(path))
    except SampleRejected as e:
        return None, f"{e.reason}: {e.detail}" if e.detail else e.reason
    except Exception as e:  # a photo the decoder chokes on: shown as text, not a thumbnail
        return None, " ".join(str(e).split())[:200]
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
