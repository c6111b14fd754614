"""Helpers shared by the benchmark scripts (not part of facekit).

- :func:`data_root`: the shared test material (``../shared/data`` beside the repo, or
  ``$FACEKIT_TEST_DATA``).
- :func:`insightface_face`: the face a user's insightface loop keeps from one image, with
  facekit's default rules (pad-and-retry for tight chips, minimum face size, largest-central
  selection) so both sides keep the same faces.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
PAD, PAD_MIN_FACE, MIN_FACE = 0.5, 0.3, 20.0  # facekit's detector defaults


def data_root(given: Optional[str] = None) -> Path:
    """The test material folder: ``given``, else ``$FACEKIT_TEST_DATA``, else ``../shared/data``
    relative to the repository root."""
    if given:
        return Path(given).expanduser().resolve()
    return Path(os.environ.get("FACEKIT_TEST_DATA", REPO.parent / "shared" / "data"))


def insightface_face(det, img, input_size=(640, 640)):
    """Detect with insightface's ``SCRFD.detect`` and keep one face as facekit's defaults do.

    Args:
        det: an insightface SCRFD (``model_zoo.get_model(...)`` after ``prepare``).
        img: ``(H, W, 3)`` uint8 BGR image (``cv2.imread``).
    Returns:
        ``(landmarks, inferences)``: the kept face's five landmarks ``(5, 2)`` float32 in
        ``img``'s pixels, or ``None`` when no face of at least ``MIN_FACE`` px is found; and
        how many times the model ran (2 when the image had to be padded: nothing found
        unpadded, then the image padded ``PAD`` on each side and searched again, keeping only
        faces spanning ``PAD_MIN_FACE`` of the image). Selection: largest-central
        (``area - 2 * |centre offset|^2``, insightface's ``max_num`` metric).
    """
    import cv2
    import numpy as np

    h, w = img.shape[:2]
    boxes, kps = det.detect(img, input_size=input_size)
    inferences = 1
    if len(boxes) == 0:
        dy, dx = int(round(h * PAD)), int(round(w * PAD))
        padded = cv2.copyMakeBorder(img, dy, dy, dx, dx, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        boxes, kps = det.detect(padded, input_size=input_size)
        inferences += 1
        if len(boxes):
            boxes = boxes - np.array([dx, dy, dx, dy, 0], np.float32)
            kps = kps - np.array([dx, dy], np.float32)
            side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            keep = side >= PAD_MIN_FACE * min(h, w)
            boxes, kps = boxes[keep], kps[keep]
    if len(boxes):
        side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        boxes, kps = boxes[side >= MIN_FACE], kps[side >= MIN_FACE]
    if len(boxes) == 0:
        return None, inferences
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 - w // 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 - h // 2
    return kps[int(np.argmax(area - 2.0 * (cx * cx + cy * cy)))], inferences
