"""Detector ``yunet``: OpenCV Zoo's YuNet (``face_detection_yunet_2023mar``, Apache-2.0
weights; e.g. ``yunet_s_640_640.onnx``) on onnxruntime, decoded by :mod:`facekit.vision.yunet` as
``cv2.FaceDetectorYN`` does: boxes, scores and five landmarks (left eye, right eye, nose,
left and right mouth corner; "left" = image left).

The image is letterboxed at the top-left of the model's input size. The model's
inputs/outputs are checked when the config is validated.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

import facekit
from facekit.vision import OnnxDetectorParams, YuNet, check_yunet_signature, probe_onnx

NEEDS = "the yunet detector needs a YuNet export (12 outputs: cls/obj/bbox/kps for strides 8/16/32)"


def check_model(path) -> None:
    """``ValueError`` (one line naming the file) unless ``path`` is a YuNet ONNX model."""
    sig = probe_onnx(path, probe_side=640)
    if len(sig.outputs) != 12:
        raise ValueError(f"{path} has {sig.describe()}; {NEEDS}")
    try:
        check_yunet_signature(sig)
    except ValueError as e:
        raise ValueError(f"{path}: {e}; {NEEDS}") from None


class YunetParams(OnnxDetectorParams):
    model: facekit.ModelPath = Field(
        ..., description="YuNet .onnx (OpenCV Zoo face_detection_yunet_2023mar), or a model name from facekit "
        "models: yunet_2023mar"
    )
    threshold: float = Field(0.6, gt=0, lt=1, description="score threshold (sqrt(cls * obj))")
    nms: float = Field(0.3, gt=0, lt=1, description="NMS IoU threshold")

    @field_validator("model")
    @classmethod
    def _check_model(cls, v):
        check_model(v)
        return v


class YunetDetector(facekit.Detector):
    """YuNet: boxes, scores, five landmarks."""

    name = "yunet"
    Params = YunetParams
    provides_landmarks = True

    def __init__(self, params):
        super().__init__(params)
        p = params
        self.model = YuNet(p.model, (p.input_size, p.input_size), p.threshold, p.nms, p.threads, p.providers)

    def detect(self, image):
        dets, kps = self.model.detect(image)
        if len(dets) == 0:
            return facekit.Detections.empty()
        return facekit.Detections(dets[:, :4].copy(), dets[:, 4].copy(), np.asarray(kps, np.float32))


@facekit.hookimpl
def register_stages(register):
    register(YunetDetector)
