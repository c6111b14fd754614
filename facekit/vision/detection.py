"""Detector-independent rules: pad-and-retry, minimum face size, face selection.

Selection ``largest_central`` follows insightface ``build_eval_pack``/``FaceAnalysis``:
keep the face maximising ``area - 2 * squared distance of the box centre from the image
centre`` (centre = ``(h // 2, w // 2)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import cv2
import numpy as np
from pydantic import Field

from facekit.errors import SampleRejected
from facekit.params import FaceChoiceThresholds

NO_FACE = "no_face"
FACE_TOO_SMALL = "face_too_small"
MULTIPLE_FACES = "multiple_faces"


@dataclass
class Detections:
    """Faces found in one image, in that image's pixel coordinates.

    boxes: ``(N, 4)`` float32 x1, y1, x2, y2. scores: ``(N,)`` float32 in [0, 1].
    landmarks: ``(N, 5, 2)`` float32 (left eye, right eye, nose, left mouth corner, right
    mouth corner; "left" = image left), or ``None`` for detectors without landmarks.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: Optional[np.ndarray] = None

    @classmethod
    def empty(cls, with_landmarks: bool = True) -> "Detections":
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, 5, 2), np.float32) if with_landmarks else None,
        )

    def __len__(self) -> int:
        return len(self.boxes)

    def take(self, idx) -> "Detections":
        return Detections(
            self.boxes[idx], self.scores[idx], None if self.landmarks is None else self.landmarks[idx]
        )


class DetectorParams(FaceChoiceThresholds):
    select: Literal["largest_central", "all", "reject", "identity"] = Field(
        "largest_central",
        description="several faces: keep the one maximising area - 2*squared centre offset, keep all, reject the "
        "image, or (identity, with a recognizer) keep the face closest to its identity's centre",
    )
    min_size: float = Field(20.0, ge=0, description="faces whose box's shorter side is below this (pixels) are rejected")
    pad: float = Field(
        0.5, ge=0, description="no face found: retry once with this fraction of the image size padded on each side (tight crops)"
    )
    pad_min_face: float = Field(
        0.3,
        ge=0,
        le=1,
        description="faces found only by the padded retry must span this fraction of the image's shorter side",
    )
    rotate: Literal["off", "auto"] = Field(
        "off",
        description="auto: when no face is found, the kept face's landmarks show it sideways or upside down, or "
        "its score is below rotate_below, detect on the photo turned by 90, 180 and 270 degrees too and keep the "
        "upright face with the highest score (photos stored sideways or upside down)",
    )
    rotate_below: float = Field(
        0.75,
        ge=0,
        le=1,
        description="rotate: auto also tries the turns when the kept face scores below this (detectors find upside-down "
        "faces with lower scores and landmarks that look upright)",
    )


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


def _keep_large(det: Detections, image: np.ndarray, p) -> Detections:
    """Faces found only by a padded pass must span ``p.pad_min_face`` of the image's shorter
    side: padding exists for tight crops, whose face fills the frame, so a small face seen
    only after padding is far more often a false positive (e.g. a dog)."""
    sides = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
    return det.take(np.nonzero(sides >= p.pad_min_face * min(image.shape[:2]))[0])


def _padded_pass(detector, image: np.ndarray, p) -> Detections:
    """Detect on ``image`` padded by ``p.pad``, back in ``image`` coordinates, keeping only
    faces spanning ``p.pad_min_face`` of the image's shorter side."""
    padded, dx, dy = pad_image(image, p.pad)
    det = detector.detect(padded)
    if len(det):
        det = _keep_large(shift(det, dx, dy), image, p)
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
    found = find_faces_batch(detector, [image])[0]
    if isinstance(found, SampleRejected):
        raise found
    return found


def find_faces_batch(detector, images: list) -> list:
    """:func:`find_faces` for several images with one ``detector.detect_batch`` call for
    their first passes (the retries, rare, go one by one).

    Returns one item per image: its kept :class:`Detections`, or the
    :class:`SampleRejected` (``no_face``, ``face_too_small``, ``multiple_faces``) it earned.
    """
    p = detector.params
    chips = [p.pad > 0 and is_face_chip(im.shape) for im in images]
    firsts, offsets = [], []
    for im, chip in zip(images, chips):
        if chip:  # a tight chip: the padded pass is all but certain to be needed: first
            padded, dx, dy = pad_image(im, p.pad)
            firsts.append(padded)
            offsets.append((dx, dy))
        else:
            firsts.append(im)
            offsets.append(None)
    dets = detector.detect_batch(firsts) if len(firsts) > 1 else [detector.detect(firsts[0])] if firsts else []
    out = []
    for im, off, det in zip(images, offsets, dets):
        try:
            found = _finish(detector, im, det, off)
        except SampleRejected as r:
            found = r
        if p.rotate == "auto" and _doubtful(found, p.rotate_below):
            found = _rotated(detector, im, found)
        out.append(found)
    return out


#: ``cv2.rotate`` codes turning an image by 90, 180 and 270 degrees clockwise
_TURNS = ((90, cv2.ROTATE_90_CLOCKWISE), (180, cv2.ROTATE_180), (270, cv2.ROTATE_90_COUNTERCLOCKWISE))


def is_upright(landmarks: np.ndarray) -> bool:
    """Whether five landmarks ``(5, 2)`` (left eye, right eye, nose, left mouth, right mouth;
    pixels) show an upright face: the eye line within 45 degrees of horizontal, left eye
    on the image's left, and the mouth below the eyes."""
    eye = landmarks[1] - landmarks[0]
    mouth_y = (landmarks[3, 1] + landmarks[4, 1]) / 2
    eyes_y = (landmarks[0, 1] + landmarks[1, 1]) / 2
    return bool(eye[0] > 0 and abs(eye[1]) < eye[0] and mouth_y > eyes_y)


def _doubtful(found, below: float) -> bool:
    """Whether ``rotate: auto`` tries the turned photo: no face, a face whose landmarks are
    not upright, or a best score below ``below``."""
    if isinstance(found, SampleRejected):
        return found.reason == NO_FACE
    if found.landmarks is not None and not all(is_upright(lm) for lm in found.landmarks):
        return True
    return float(found.scores.max()) < below


def turn_back(det: Detections, angle: int, shape) -> Detections:
    """Map detections made on the image turned clockwise by ``angle`` (90, 180, 270) back
    to the coordinates of the original image of ``shape`` ``(H, W, ...)``. Landmarks keep
    their meaning (left eye stays the face's left eye)."""
    h, w = shape[:2]

    def back(pts: np.ndarray) -> np.ndarray:
        x, y = pts[..., 0], pts[..., 1]
        if angle == 90:  # original (x, y) -> turned (h - 1 - y, x)
            ox, oy = y, h - 1 - x
        elif angle == 180:
            ox, oy = w - 1 - x, h - 1 - y
        else:  # 270: original (x, y) -> turned (y, w - 1 - x)
            ox, oy = w - 1 - y, x
        return np.stack([ox, oy], -1).astype(np.float32)

    b = det.boxes
    corners = back(np.stack([b[:, [0, 1]], b[:, [2, 3]]], 1))
    boxes = np.concatenate([corners.min(1), corners.max(1)], 1).astype(np.float32)
    lmk = None if det.landmarks is None else back(det.landmarks)
    return Detections(boxes, det.scores, lmk)


def _rotated(detector, image: np.ndarray, found):
    """``rotate: auto``: of ``found`` (when upright) and the results on the image turned by
    90/180/270 degrees (mapped back to the original image's coordinates), the upright one
    with the highest score; ``found`` as it was when none is upright."""
    best, best_score = None, -1.0
    if not isinstance(found, SampleRejected) and (found.landmarks is None or all(is_upright(lm) for lm in found.landmarks)):
        best, best_score = found, float(found.scores.max())
    for angle, code in _TURNS:
        turned = cv2.rotate(image, code)
        first = turned
        offset = None
        if detector.params.pad > 0 and is_face_chip(turned.shape):
            first, dx, dy = pad_image(turned, detector.params.pad)
            offset = (dx, dy)
        try:
            det = _finish(detector, turned, detector.detect(first), offset)
        except SampleRejected:
            continue
        if det.landmarks is not None and not all(is_upright(lm) for lm in det.landmarks):
            continue
        score = float(det.scores.max())
        if score > best_score:
            best, best_score = turn_back(det, angle, image.shape), score
    return best if best is not None else found


def _finish(detector, image: np.ndarray, det: Detections, offset) -> Detections:
    """The rest of :func:`find_faces` once the first pass gave ``det`` (on the chip padded
    by ``offset`` when not None)."""
    p = detector.params
    if offset is not None:
        # The padded chip's faces are taken at once when they lie mostly inside the chip;
        # otherwise the unpadded pass decides, and if it finds nothing the padded faces
        # stand (exactly what detect-then-retry gives)
        padded = _keep_large(shift(det, *offset), image, p) if len(det) else det
        det = padded.take(np.nonzero(inside_fraction(padded.boxes, image.shape) >= CHIP_MIN_INSIDE)[0])
        if len(det) == 0:
            det = detector.detect(image)
            if len(det) == 0:
                det = padded
    elif len(det) == 0 and p.pad > 0:
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
    return det  # "all" and "identity" keep every face (identity picks one per photo later)
