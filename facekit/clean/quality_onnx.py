"""A learned face-quality model (CR-FIQA, eDifFIQA, ...) on onnxruntime (issue 26 part 2).

Kept apart from :mod:`facekit.clean.quality` so that the model-free signals (which the
stage API imports) load neither onnxruntime nor the recognition module."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from facekit.eval.recognition import ModelError, OnnxEmbedder

class OnnxQuality(OnnxEmbedder):
    """A learned face-quality model (CR-FIQA, eDifFIQA, ...) exported to ONNX: one image
    input (``N x 3 x H x W`` or ``N x H x W x 3``), one output of one score per face
    (``N``, ``N x 1``). Preprocessing is :class:`facekit.eval.recognition.OnnxEmbedder`'s
    (input size from the model, ``(x - mean) / std``, RGB unless told; settings from the
    arguments, the model's metadata or insightface's rule).

    Args: those of :class:`~facekit.eval.recognition.OnnxEmbedder`.
    Raises:
        ModelError: what OnnxEmbedder raises, or a model with more than one output or an
            output with more than one value per face.
    """

    def __init__(self, model: str | os.PathLike, **kwargs):
        super().__init__(model, **kwargs)
        outputs = self.session.get_outputs()
        if len(outputs) != 1:
            raise ModelError(f"{self.path}: a quality model has one output (a score per face), found {len(outputs)}")
        shape = outputs[0].shape
        fixed = [d for d in shape[1:] if isinstance(d, int)]
        if len(shape) > 2 or any(d != 1 for d in fixed):
            raise ModelError(f"{self.path}: output {outputs[0].name} {shape} is not one score per face (N or N x 1)")

    def score(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Scores of aligned crops (each ``(S, S, 3)`` uint8 BGR): ``(N,)`` float32,
        higher = better (the model's scale).

        Raises:
            ModelError: the model gives more than one value per face.
            ValueError: a crop that is not an ``(H, W, 3)`` uint8 image (names its index).
        """
        if not len(crops):
            return np.zeros((0,), np.float32)
        for i, c in enumerate(crops):
            if not isinstance(c, np.ndarray) or c.dtype != np.uint8 or c.ndim != 3 or c.shape[2] != 3:
                raise ValueError(f"crop {i}: expected an (H, W, 3) uint8 BGR image")
        out = self.run(self.to_tensor(np.stack([self.prepare(c) for c in crops])))
        if out.shape[1] != 1:
            raise ModelError(f"{self.path}: the model gave {out.shape[1]} values per face, not one score")
        return out[:, 0].astype(np.float32)



__all__ = ["OnnxQuality"]
