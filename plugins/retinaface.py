"""Detector ``retinaface``: SCRFD models in InsightFace's output convention (6/9/10/15
outputs; keypoint models, 9 or 15) and RetinaFace exports with ``loc``/``conf``/landmark
outputs (e.g. RetinaFace-MobileNet0.25), run on onnxruntime and decoded by facekit
(:mod:`facekit.vision.scrfd`, :mod:`facekit.vision.retinaface_onnx`; SCRFD results are identical to
insightface's ``SCRFD.detect`` with one input size). insightface is not needed.

Running a config downloads nothing: give ``model: PATH``, or a model ``facekit models get``
downloaded (``model: scrfd_500m``), or put one in InsightFace's model folder
(``$INSIGHTFACE_HOME/models`` or ``~/.insightface/models``, e.g.
``buffalo_l/det_10g.onnx``). The model's inputs/outputs are checked when the config is
validated.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import Field, field_validator, model_validator

import facekit
from facekit.vision import (
    SCRFD_LAYOUTS,
    OnnxDetectorParams,
    RetinaFaceOnnx,
    Scrfd,
    check_retinaface_signature,
    check_scrfd_signature,
    probe_onnx,
)

MODEL_PATTERNS = ("det_10g.onnx", "det_2.5g.onnx", "det_500m.onnx", "scrfd_*.onnx", "retinaface*.onnx", "*det*.onnx")
NEEDS = (
    "the retinaface detector needs SCRFD outputs (6/9/10/15 score/box/keypoint maps) "
    "or a RetinaFace loc/conf/landmark export"
)


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


def model_kind(path: Path) -> str:
    """``"scrfd"`` or ``"retinaface"``: which decoding fits the model at ``path``.

    Raises:
        ValueError: the model does not load, or its inputs/outputs fit neither (one line
            naming the file, what it has and what is needed).
    """
    sig = probe_onnx(path)
    if len(sig.outputs) == 3:
        try:
            check_retinaface_signature(sig)
            return "retinaface"
        except ValueError as e:
            raise ValueError(f"{path}: {e}; {NEEDS}") from None
    if len(sig.outputs) in SCRFD_LAYOUTS:
        try:
            _, _, kps = check_scrfd_signature(sig)
        except ValueError as e:
            raise ValueError(f"{path}: {e}; {NEEDS}") from None
        if not kps:
            raise ValueError(
                f"{path} is a SCRFD model without keypoint outputs ({len(sig.outputs)} outputs); "
                "the retinaface detector gives five landmarks: use a keypoint model (9 or 15 outputs, e.g. *_bnkps / *_kps)"
            )
        return "scrfd"
    raise ValueError(f"{path} has {sig.describe()}; {NEEDS}")


class RetinafaceParams(OnnxDetectorParams):
    model: Optional[facekit.ModelPath] = Field(
        None, description="SCRFD/RetinaFace .onnx, or a model name from facekit models (scrfd_500m); default: the "
        "first one in ~/.insightface/models"
    )
    threshold: float = Field(0.5, gt=0, lt=1, description="score threshold")
    nms: float = Field(0.4, gt=0, lt=1, description="NMS IoU threshold")

    @field_validator("model")
    @classmethod
    def _check_model(cls, v):
        if v is not None:
            model_kind(v)
        return v

    @model_validator(mode="after")
    def _model(self):
        if self.model is None:
            found = find_default_model()
            if found is None:
                raise ValueError(
                    "no detection model given and none found in "
                    f"{insightface_model_root()}: set 'model: PATH' to a SCRFD/RetinaFace .onnx, or 'model: scrfd_500m' "
                    "after 'facekit models get scrfd_500m', or put "
                    f"det_10g.onnx (from InsightFace's buffalo_l pack) in {insightface_model_root() / 'buffalo_l'}"
                )
            model_kind(found)
            self.model = found
        return self


class RetinafaceDetector(facekit.Detector):
    """SCRFD/RetinaFace: boxes, scores, five landmarks."""

    name = "retinaface"
    Params = RetinafaceParams
    provides_landmarks = True

    def __init__(self, params):
        super().__init__(params)
        import onnx

        p = params
        # The validator checked the model (model_kind); only the output count tells them apart.
        n_outputs = len(onnx.load_model(str(p.model), load_external_data=False).graph.output)
        cls = RetinaFaceOnnx if n_outputs == 3 else Scrfd
        self.model = cls(p.model, (p.input_size, p.input_size), p.threshold, p.nms, p.threads, p.providers)

    def detect(self, image):
        dets, kps = self.model.detect(image)
        if len(dets) == 0:
            return facekit.Detections.empty()
        return facekit.Detections(dets[:, :4].copy(), dets[:, 4].copy(), np.asarray(kps, np.float32).reshape(-1, 5, 2))


@facekit.hookimpl
def register_stages(register):
    register(RetinafaceDetector)
