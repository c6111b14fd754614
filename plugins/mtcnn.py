"""Detector ``mtcnn``: MTCNN (P/R/O-Net) on onnxruntime, without TensorFlow.

The weights are those of the ``mtcnn`` package (ipazc/mtcnn 1.0.0, a default dependency:
a 2.3 MB wheel that needs only joblib and lz4); its modules, which import TensorFlow, are
never imported. The algorithm and defaults follow the package's ``detect_faces``
(see :mod:`facekit_plugins._mtcnn_onnx`); the tests compare both on the shared photos.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

import facekit
from facekit_plugins._mtcnn_onnx import MtcnnOnnx, MtcnnSettings, MtcnnWeightsError, load_weights


class MtcnnParams(facekit.DetectorParams):
    min_face_size: int = Field(20, ge=4, description="smallest face the image pyramid looks for (pixels)")
    thresholds: tuple[float, float, float] = Field((0.6, 0.7, 0.8), description="PNet, RNet, ONet thresholds")
    scale_factor: float = Field(0.709, gt=0, lt=1, description="image pyramid scale step")
    threads: int = Field(0, ge=0, description="onnxruntime intra-op threads (0: onnxruntime's default; inter-op 1)")

    @model_validator(mode="after")
    def _installed(self):
        try:
            load_weights("pnet")
        except MtcnnWeightsError as e:
            raise ValueError(str(e)) from None
        return self


class MtcnnDetector(facekit.Detector):
    """MTCNN boxes, scores and five landmarks, equal to the ``mtcnn`` package's ``detect_faces``."""

    name = "mtcnn"
    Params = MtcnnParams
    provides_landmarks = True

    def __init__(self, params):
        super().__init__(params)
        self.model = MtcnnOnnx(threads=params.threads)
        t = params.thresholds
        self.settings = MtcnnSettings(
            min_face_size=params.min_face_size,
            scale_factor=params.scale_factor,
            threshold_pnet=t[0],
            threshold_rnet=t[1],
            threshold_onet=t[2],
        )

    def detect(self, image):
        """image: ``(H, W, 3)`` uint8 **BGR** (MTCNN itself takes RGB: converted here).

        Returns :class:`facekit.Detections`: boxes x1, y1, x2, y2 clipped to the image,
        scores, landmarks ``(N, 5, 2)`` left eye, right eye, nose, mouth left, mouth right
        (the package's ``keypoints``), by decreasing score."""
        rows = self.model.detect_faces(image, self.settings, bgr=True)
        if len(rows) == 0:
            return facekit.Detections.empty()
        # [image_id, x1, y1, x2, y2, confidence, five landmark x, five landmark y] (planar)
        rows = rows.astype(np.float32)
        lmk = np.stack([rows[:, 6:11], rows[:, 11:16]], axis=-1)
        return facekit.Detections(boxes=rows[:, 1:5].copy(), scores=rows[:, 5].copy(), landmarks=lmk)


@facekit.hookimpl
def register_stages(register):
    register(MtcnnDetector)
