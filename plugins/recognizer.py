"""Recognizer ``onnx``: a face-recognition ONNX model (ArcFace-style) embedding the aligned
faces, with the input size, normalisation and colour order read from the model or given,
exactly as ``facekit eval`` embeds bins (:class:`facekit.eval.recognition.OnnxEmbedder`)."""

from __future__ import annotations

import logging

import numpy as np
from pydantic import Field

import facekit
from facekit.eval import ModelError, OnnxEmbedder
from facekit.vision import OnnxInputParams, OnnxSessionParams

log = logging.getLogger("facekit")


class OnnxRecognizerParams(facekit.RecognizerParams, OnnxSessionParams, OnnxInputParams):
    model: facekit.ModelPath = Field(
        description="face-recognition ONNX model (one N x 3 x H x W or N x H x W x 3 input), or a recognizer's name "
        "from facekit models"
    )
    flip: bool = Field(
        False, description="embed each face and its mirror image and sum the two (insightface's evaluation rule; "
        "facekit.clean's thresholds were calibrated so): twice the model time"
    )


class OnnxRecognizer(facekit.Recognizer):
    """Embeds aligned faces with an ONNX recognition model (L2-normalised embeddings)."""

    name = "onnx"
    description = "face-recognition ONNX model (ArcFace-style): L2-normalised embeddings of the aligned faces"
    Params = OnnxRecognizerParams

    def __init__(self, params):
        super().__init__(params)
        p = params
        self.model = OnnxEmbedder(p.model, p.input_size, p.mean, p.std, p.color, p.providers, p.threads, rebatch=p.batch > 1)
        check_embedding_output(self.model)
        if self.model.batch == 1 and p.batch > 1:
            log.info("%s: exported with a batch of 1 and cannot be rewritten (%s): one face per model call",
                     p.model, self.model.rebatch_note)

    def embed(self, crops):
        return self.embed_with_norms(crops)[0]

    def embed_with_norms(self, crops):
        """``(embeddings, norms)`` of aligned crops (each ``(S, S, 3)`` uint8 BGR, resized
        to the model's input when another size): ``(N, D)`` float32 L2-normalised and the
        raw outputs' ``(N,)`` float32 L2 norms (with ``flip``: of the sum of the face's and
        its mirror image's raw outputs, as insightface's verification embeds). One session call per ``len(crops)`` faces
        when the model takes any batch size (a model exported with a batch of 1 is rewritten
        to take any, :func:`facekit.vision.onnxbatch.batchable`; one that cannot be runs in
        chunks of its batch). A face whose embedding is not finite or is zero keeps NaN values:
        the worker rejects it."""
        m = self.model
        batch = np.stack([m.prepare(c) for c in crops])
        raw = m.run(m.to_tensor(batch))
        if self.params.flip:
            raw = raw + m.run(m.to_tensor(batch[:, :, ::-1]))
        norms = np.linalg.norm(raw, axis=1).astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            emb = (raw / norms[:, None]).astype(np.float32)
        return emb, norms


def check_embedding_output(model: OnnxEmbedder) -> None:
    """Refuse a model whose first output is not one embedding per image: an ``(N, D)``
    (or ``(N, D, 1, 1)``) tensor with D from 2 to 65,536 where the graph says, as read from
    the graph (a detector's score maps, ``(N, A, 1)``, are not; a classifier's ``(N, 1000)``
    cannot be told from an embedding by its shape).

    Raises:
        ModelError: naming the model, the output and its shape.
    """
    out = model.session.get_outputs()[0]
    shape = list(out.shape)
    dims = shape[1:2] if len(shape) == 2 or (len(shape) == 4 and shape[2:] == [1, 1]) else None
    d = dims[0] if dims else None
    if dims is None or (isinstance(d, int) and not 2 <= d <= 65536):
        raise ModelError(
            f"{model.path}: output {out.name!r} has shape {shape}, not one embedding per image (N x D): "
            "is this a face-recognition model?"
        )


@facekit.hookimpl
def register_stages(register):
    register(OnnxRecognizer)
