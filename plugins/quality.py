"""Quality stages (issue 26 part 2): ``signals`` measures each aligned face without a model
(blur, pose from the five landmarks, face size, brightness, contrast, the recognizer's
embedding norm) and rejects faces over the thresholds it is given; ``onnx`` adds a learned
face-quality model's score (CR-FIQA, eDifFIQA exported to ONNX) and ``min_quality``."""

from __future__ import annotations


from pydantic import Field

import facekit
from facekit.clean import OnnxQuality
from facekit.vision import OnnxInputParams, OnnxSessionParams


class SignalsQuality(facekit.Quality):
    """The model-free signals and their thresholds."""

    name = "signals"
    description = "blur, pose, face size, brightness, contrast, embedding norm of each face; thresholds reject"


class OnnxQualityParams(facekit.QualityParams, OnnxSessionParams, OnnxInputParams):
    model: facekit.InputPath = Field(description="face-quality ONNX model: one image input, one score per face")


class OnnxQualityStage(facekit.Quality):
    """A learned face-quality model on onnxruntime, besides the model-free signals."""

    name = "onnx"
    description = "a learned face-quality ONNX model (CR-FIQA, eDifFIQA): its score per face, min_quality"
    Params = OnnxQualityParams
    scores = True

    def __init__(self, params):
        super().__init__(params)
        p = params
        self.model = OnnxQuality(p.model, input_size=p.input_size, mean=p.mean, std=p.std, color=p.color,
                                 providers=p.providers, threads=p.threads)

    def score(self, crops):
        return self.model.score(crops)


@facekit.hookimpl
def register_stages(register):
    register(SignalsQuality)
    register(OnnxQualityStage)
