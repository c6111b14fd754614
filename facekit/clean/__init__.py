"""Cleaning already aligned face datasets (issue 26): quality signals, label noise within
an identity, duplicates, and identity merges across a dataset. The functions work on
embeddings and crops; the pipeline's stages call them.

The names below are facekit's public cleaning API, loaded on first use (PEP 562
``__getattr__``), so ``import facekit.clean`` imports neither cv2 nor faiss.
"""

from __future__ import annotations

from facekit._exports import lazy_exports

#: public name -> "submodule:attribute"
_EXPORTS = {
    # quality: model-free signals, thresholds, a learned model on onnxruntime
    "FaceQuality": "quality:FaceQuality",
    "QUALITY_COLUMNS": "quality:QUALITY_COLUMNS",
    "QualityThresholds": "quality:QualityThresholds",
    "compute_quality": "quality:compute_quality",
    "judge": "quality:judge",
    "head_pose": "quality:head_pose",
    "pixel_signals": "quality:pixel_signals",
    "face_size": "quality:face_size",
    "OnnxQuality": "quality_onnx:OnnxQuality",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
