"""Detector ``mtcnn``: the ``mtcnn`` package (weights ship in its wheel; it imports
TensorFlow, so it is the optional extra ``facekit[mtcnn]``)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
from pydantic import Field, model_validator

import facekit


class MtcnnParams(facekit.DetectorParams):
    min_face_size: int = Field(20, ge=4, description="smallest face the image pyramid looks for (pixels)")
    thresholds: tuple[float, float, float] = Field((0.6, 0.7, 0.8), description="PNet, RNet, ONet thresholds")
    scale_factor: float = Field(0.709, gt=0, lt=1, description="image pyramid scale step")

    @model_validator(mode="after")
    def _installed(self):
        missing = [m for m in ("mtcnn", "tensorflow") if importlib.util.find_spec(m) is None]
        if missing:
            raise ValueError(
                f"the mtcnn detector needs {' and '.join(missing)}: pip install 'facekit[mtcnn]'"
            )
        return self


class MtcnnDetector(facekit.Detector):
    """MTCNN (PNet/RNet/ONet) boxes, scores and five landmarks."""

    name = "mtcnn"
    Params = MtcnnParams
    provides_landmarks = True

    def __init__(self, params):
        super().__init__(params)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from mtcnn import MTCNN

        self.model = MTCNN()

    def detect(self, image):
        """image: (H, W, 3) uint8 BGR; mtcnn itself takes RGB."""
        p = self.params
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        rows = self.model.detect_faces(
            rgb,
            box_format="xyxy",
            output_type="numpy",
            min_face_size=p.min_face_size,
            scale_factor=p.scale_factor,
            threshold_pnet=p.thresholds[0],
            threshold_rnet=p.thresholds[1],
            threshold_onet=p.thresholds[2],
        )
        rows = np.asarray(rows, np.float32).reshape(-1, 16)
        if len(rows) == 0:
            return facekit.Detections.empty()
        # [image_id, x1, y1, x2, y2, confidence, five landmark x, five landmark y] (planar;
        # order left eye, right eye, nose, mouth left, mouth right: mtcnn's parse_landmarks)
        lmk = np.stack([rows[:, 6:11], rows[:, 11:16]], axis=-1)
        return facekit.Detections(boxes=rows[:, 1:5].copy(), scores=rows[:, 5].copy(), landmarks=lmk)


@facekit.hookimpl
def register_stages(register):
    register(MtcnnDetector)
