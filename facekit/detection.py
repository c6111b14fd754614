"""Detector-independent rules: pad-and-retry, minimum face size, face selection.

Selection ``largest_central`` follows insightface ``build_eval_pack``/``FaceAnalysis``:
keep the face maximising ``area - 2 * squared distance of the box centre from the image
centre`` (centre = ``(h // 2, w // 2)``).
"""

from __future__ import annotations

import cv2
import numpy as np

from facekit.errors import SampleRejected
from facekit.stages import Detections

NO_FACE = "no_face"
FACE_TOO_SMALL = "face_too_small"
MULTIPLE_FACES = "multiple_faces"


def pad_image(image: np.ndarray, fraction: float) -> tuple[np.ndarray, int, int]:
    """Pad ``image`` with black borders of ``fraction`` x its height (top/bottom) and width
    (left/right). Returns ``(padded, dx, dy)``: the original's top-left in the padded image."""
    h, w = image.shape[:2]
    dy, dx = int(round(h * fraction)), int(round(w * fraction))
    padded = cv2.copyMakeBorder(image, dy, dy, dx, dx, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return padded, dx, dy


def shift(det: Detections, dx: float, dy: float) -> Detections:
    """Move detections from padded to original coordinates (subtract the pad offset)."""
    boxes = det.boxes - np.array([dx, dy, dx, dy], np.float32)
    lmk = None if det.landmarks is None else det.landmarks - np.array([dx, dy], np.float32)
    return Detections(boxes.astype(np.float32), det.scores, None if lmk is None else lmk.astype(np.float32))


def largest_central_index(boxes: np.ndarray, image_shape) -> int:
    """Index of the box maximising ``area - 2 * |centre - image centre|^2`` (insightface)."""
    h, w = image_shape[:2]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 - w // 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 - h // 2
    values = area - 2.0 * (cx * cx + cy * cy)
    return int(np.argmax(values))


#: An image is treated as a tight face chip (padded before its first detection) when its
#: longer side is at most this many pixels ...
CHIP_MAX_SIDE = 224
#: ... and its longer side is at most this many times its shorter side (square-ish).
CHIP_MAX_ASPECT = 1.25


#: ... and a face found on the padded chip is taken without an unpadded pass when at
#: least this fraction of its box lies inside the chip.
CHIP_MIN_INSIDE = 0.5


def inside_fraction(boxes: np.ndarray, image_shape) -> np.ndarray:
    """Fraction of each ``(N, 4)`` box's area (x1, y1, x2, y2, pixels) inside an image of
    ``image_shape``; ``(N,)`` float32 (0 for an empty box)."""
    h, w = image_shape[:2]
    iw = np.clip(np.minimum(boxes[:, 2], w) - np.maximum(boxes[:, 0], 0), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], h) - np.maximum(boxes[:, 1], 0), 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.where(area > 0, iw * ih / np.where(area > 0, area, 1), 0).astype(np.float32)


def is_face_chip(shape) -> bool:
    """Whether an image of ``shape`` (``(H, W, ...)``) is a tight face chip: small
    (longer side <= :data:`CHIP_MAX_SIDE` px) and square-ish (aspect ratio <=
    :data:`CHIP_MAX_ASPECT`), like LFW-style 150 px chips or 112/224 aligned crops, whose
    face fills the frame so that detectors find it only once borders are added."""
    h, w = int(shape[0]), int(shape[1])
    lo, hi = min(h, w), max(h, w)
    return 0 < hi <= CHIP_MAX_SIDE and hi <= CHIP_MAX_ASPECT * lo


def _padded_pass(detector, image: np.ndarray, p) -> Detections:
    """Detect on ``image`` padded by ``p.pad``, back in ``image`` coordinates, keeping only
    faces spanning ``p.pad_min_face`` of the image's shorter side."""
    padded, dx, dy = pad_image(image, p.pad)
    det = detector.detect(padded)
    if len(det):
        det = shift(det, dx, dy)
        # Padding exists for tight crops, whose face fills the frame: a small face seen
        # only after padding is far more often a false positive (e.g. a dog).
        sides = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
        det = det.take(np.nonzero(sides >= p.pad_min_face * min(image.shape[:2]))[0])
    return det


def find_faces(detector, image: np.ndarray) -> Detections:
    """Run ``detector.detect`` with the rules of its params (see :class:`DetectorParams`).

    Pad-and-retry: an image where no face is found is detected again with ``params.pad``
    borders, keeping only faces of at least ``pad_min_face`` x its shorter side. A tight
    face chip (:func:`is_face_chip`) is padded *first* (one detection instead of two for
    the usual case), with the same guard; faces lying mostly outside the chip
    (:data:`CHIP_MIN_INSIDE`) send it to an unpadded pass, whose faces win if it finds any,
    so the result is the detect-then-retry one whenever the padded pass is not clear-cut.

    Args:
        detector: a :class:`facekit.stages.Detector` (uses ``params.pad``, ``min_size``,
            ``select``).
        image: ``(H, W, 3)`` uint8 BGR.
    Returns:
        the kept faces, in ``image`` coordinates.
    Raises:
        SampleRejected: ``no_face``, ``face_too_small``, ``multiple_faces``.
    """
    p = detector.params
    if p.pad > 0 and is_face_chip(image.shape):
        # a tight chip: the padded pass is all but certain to be needed, so it goes first.
        # Its faces are taken at once when they lie mostly inside the chip; otherwise the
        # unpadded pass decides, and if it finds nothing the padded faces stand (exactly
        # what detect-then-retry gives)
        padded = _padded_pass(detector, image, p)
        det = padded.take(np.nonzero(inside_fraction(padded.boxes, image.shape) >= CHIP_MIN_INSIDE)[0])
        if len(det) == 0:
            det = detector.detect(image)
            if len(det) == 0:
                det = padded
    else:
        det = detector.detect(image)
        if len(det) == 0 and p.pad > 0:
            det = _padded_pass(detector, image, p)
    if len(det) == 0:
        raise SampleRejected(NO_FACE, f"{detector.name} found no face")
    sides = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
    big = sides >= p.min_size
    if not big.any():
        raise SampleRejected(
            FACE_TOO_SMALL, f"largest face side {float(sides.max()):.1f}px < min_size {p.min_size:g}px"
        )
    det = det.take(np.nonzero(big)[0])
    if len(det) > 1:
        if p.select == "reject":
            raise SampleRejected(MULTIPLE_FACES, f"{len(det)} faces found and select is 'reject'")
        if p.select == "largest_central":
            det = det.take([largest_central_index(det.boxes, image.shape)])
    return det
