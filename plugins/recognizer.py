"""Recognizer ``onnx``: a face-recognition ONNX model (ArcFace-style) embedding the aligned
faces, with the input size, normalisation and colour order read from the model or given,
exactly as ``facekit eval`` embeds bins (:class:`facekit.eval.recognition.OnnxEmbedder`)."""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
from pydantic import Field

import facekit
from facekit.eval import OnnxEmbedder
from facekit.vision import OnnxSessionParams


class OnnxRecognizerParams(facekit.RecognizerParams, OnnxSessionParams):
    model: facekit.InputPath = Field(description="face-recognition ONNX model (one N x 3 x H x W or N x H x W x 3 input)")
    input_size: Optional[int] = Field(None, ge=16, le=1024, description="model input side; default from the model")
    mean: Optional[float] = Field(None, description="normalisation (x - mean) / std; default from the model")
    std: Optional[float] = Field(None, gt=0, description="see mean")
    color: Optional[Literal["RGB", "BGR"]] = Field(None, description="colour order of the model; default from the model")


class OnnxRecognizer(facekit.Recognizer):
    """Embeds aligned faces with an ONNX recognition model (L2-normalised embeddings)."""

    name = "onnx"
    description = "face-recognition ONNX model (ArcFace-style): L2-normalised embeddings of the aligned faces"
    Params = OnnxRecognizerParams

    def __init__(self, params):
        super().__init__(params)
        p = params
        self.model = OnnxEmbedder(p.model, p.input_size, p.mean, p.std, p.color, p.providers, p.threads)

    def embed(self, crops):
        m = self.model
        batch = np.stack([m.prepare(c) for c in crops])
        emb = m.run(m.to_tensor(batch))
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


@facekit.hookimpl
def register_stages(register):
    register(OnnxRecognizer)
