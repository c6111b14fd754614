"""Verification evaluation (insightface's ``evaluate``: 10-fold accuracy, TAR@FAR) and
the ONNX recognition model that embeds faces for it.

The names below are facekit's public evaluation API. They are loaded on first use (PEP 562
``__getattr__``), so ``import facekit.eval`` imports neither onnxruntime nor cv2.
"""

from __future__ import annotations

import importlib

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


def __getattr__(name: str):
    """Load a public name from its submodule on first use (then it is a plain attribute)."""
    try:
        module, _, attr = _EXPORTS[name].partition(":")
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
