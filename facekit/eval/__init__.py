"""Verification evaluation (insightface's ``evaluate``: 10-fold accuracy, TAR@FAR) and
the ONNX recognition model that embeds faces for it.

The names below are facekit's public evaluation API. They are loaded on first use (PEP 562
``__getattr__``), so ``import facekit.eval`` imports neither onnxruntime nor cv2.
"""

from __future__ import annotations

from facekit._exports import lazy_exports

#: public name -> "submodule:attribute"
_EXPORTS = {
    # recognition: ONNX recognition models on onnxruntime
    "OnnxEmbedder": "recognition:OnnxEmbedder",
    "Preprocess": "recognition:Preprocess",
    "ModelError": "recognition:ModelError",
    # verification: insightface's verification protocol
    "VerificationResult": "verification:VerificationResult",
    "verify": "verification:verify",
    "evaluate": "verification:evaluate",
    "evaluate_distances": "verification:evaluate_distances",
    "pair_distances": "verification:pair_distances",
    "fold_indices": "verification:fold_indices",
    "combine_flip": "verification:combine_flip",
    "xnorm": "verification:xnorm",
    "FAR_TARGET": "verification:FAR_TARGET",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
