"""Detector ``retinaface``: SCRFD / RetinaFace ONNX models in InsightFace's output
convention, run through ``insightface.model_zoo`` on onnxruntime (CPU).

No model is downloaded: give ``model: PATH``, or put one in InsightFace's model folder
(``$INSIGHTFACE_HOME/models`` or ``~/.insightface/models``, e.g.
``buffalo_l/det_10g.onnx``).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import Field, model_validator

import facekit

MODEL_PATTERNS = ("det_10g.onnx", "det_2.5g.onnx", "det_500m.onnx", "scrfd_*.onnx", "retinaface*.onnx", "*det*.onnx")


def insightface_model_root() -> Path:
    """InsightFace's model folder: ``$INSIGHTFACE_HOME/models`` or ``~/.insightface/models``."""
    return Path(os.environ.get("INSIGHTFACE_HOME", "~/.insightface")).expanduser() / "models"


def find_default_model() -> Optional[Path]:
    """First detection model in InsightFace's model folder, by the preference above."""
    root = insightface_model_root()
    for pat in MODEL_PATTERNS:
        hits = sorted(glob.glob(str(root / "**" / pat), recursive=True))
        if hits:
            return Path(hits[0])
    return None


class RetinafaceParams(facekit.DetectorParams):
    model: Optional[facekit.InputPath] = Field(
        None, description="SCRFD/RetinaFace .onnx (default: the first one in ~/.insightface/models)"
    )
    input_size: int = Field(640, ge=32, description="square detector input side (pixels), as insightface 0.7.3")
    threshold: float = Field(0.5, gt=0, lt=1, description="score threshold")
    nms: float = Field(0.4, gt=0, lt=1, description="NMS IoU threshold")

    @model_validator(mode="after")
    def _model(self):
        if self.model is None:
            found = find_default_model()
            if found is None:
                raise ValueError(
                    "no detection model given and none found in "
                    f"{insightface_model_root()}: set 'model: PATH' to a SCRFD/RetinaFace .onnx, or put "
                    f"det_10g.onnx (from InsightFace's buffalo_l pack) in {insightface_model_root() / 'buffalo_l'}"
                )
            self.model = found
        return self


class RetinafaceDetector(facekit.Detector):
    """SCRFD/RetinaFace: boxes, scores, five landmarks."""

    name = "retinaface"
    Params = RetinafaceParams
    provides_landmarks = True

    def __init__(self, params):
        super().__init__(params)
        from insightface.model_zoo import get_model

        s = params.input_size
        self.model = get_model(str(params.model), providers=["CPUExecutionProvider"])
        if self.model is None or not hasattr(self.model, "detect"):
            raise facekit.ConfigError(f"retinaface: {params.model} is not a detection model insightface recognises")
        self.model.prepare(ctx_id=-1, input_size=(s, s), det_thresh=params.threshold, nms_thresh=params.nms)

    def detect(self, image):
        s = self.params.input_size
        bboxes, kpss = self.model.detect(image, input_size=(s, s))
        if bboxes is None or len(bboxes) == 0:
            return facekit.Detections.empty()
        bboxes = np.asarray(bboxes, np.float32)
        lmk = None if kpss is None else np.asarray(kpss, np.float32).reshape(-1, 5, 2)
        if lmk is None:
            raise facekit.FacekitError(f"retinaface: model {self.params.model} gives no keypoints")
        return facekit.Detections(bboxes[:, :4].copy(), bboxes[:, 4].copy(), lmk)


@facekit.hookimpl
def register_stages(register):
    register(RetinafaceDetector)
