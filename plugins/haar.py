"""Detector ``haar``: OpenCV 4.x Haar cascades (boxes only, no landmarks)."""

from __future__ import annotations

import os

import cv2
import numpy as np
from pydantic import Field, field_validator

import facekit


class HaarParams(facekit.DetectorParams):
    cascade: str = Field(
        "haarcascade_frontalface_default.xml",
        description="file name in cv2.data.haarcascades, or a path to a cascade XML",
    )
    scale_factor: float = Field(1.1, gt=1.0)
    min_neighbors: int = Field(5, ge=0)

    @field_validator("cascade")
    @classmethod
    def _exists(cls, v):
        if _cascade_path(v) is None:
            raise ValueError(
                f"cascade {v!r} not found (OpenCV {cv2.__version__}; Haar cascades ship with opencv-python 4.x, not 5.x)"
            )
        return v


def _cascade_path(name: str):
    if os.path.isfile(name):
        return name
    base = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if base and os.path.isfile(os.path.join(base, name)):
        return os.path.join(base, name)
    return None


class HaarDetector(facekit.Detector):
    """Viola-Jones cascade; score = logistic of the cascade's level weight."""

    name = "haar"
    Params = HaarParams
    provides_landmarks = False

    def __init__(self, params):
        super().__init__(params)
        self.cascade = cv2.CascadeClassifier(_cascade_path(params.cascade))
        if self.cascade.empty():
            raise facekit.ConfigError(f"haar: OpenCV could not load cascade {params.cascade}")

    def detect(self, image):
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        rects, _, weights = self.cascade.detectMultiScale3(
            gray, scaleFactor=self.params.scale_factor, minNeighbors=self.params.min_neighbors, outputRejectLevels=True
        )
        if len(rects) == 0:
            return facekit.Detections.empty(with_landmarks=False)
        r = np.asarray(rects, np.float32).reshape(-1, 4)
        boxes = np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], 1)
        scores = 1.0 / (1.0 + np.exp(-np.asarray(weights, np.float32).reshape(-1)))
        return facekit.Detections(boxes, scores.astype(np.float32), None)


@facekit.hookimpl
def register_stages(register):
    register(HaarDetector)
