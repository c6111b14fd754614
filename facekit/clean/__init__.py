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
    # identity: label noise and two-people identities within an identity
    "clean_identity": "identity:clean_identity",
    "find_outliers": "identity:find_outliers",
    "find_mixed": "identity:find_mixed",
    "robust_centre": "identity:robust_centre",
    "split_name": "identity:split_name",
    "mixed_identity_names": "identity:mixed_identity_names",
    "IdentityReport": "identity:IdentityReport",
    "CleanError": "identity:CleanError",
    "DEFAULT_OUTLIER_THRESHOLD": "identity:DEFAULT_OUTLIER_THRESHOLD",
    "DEFAULT_MIXED_MAX_SIMILARITY": "identity:DEFAULT_MIXED_MAX_SIMILARITY",
    "DEFAULT_MIXED_MIN_FRACTION": "identity:DEFAULT_MIXED_MIN_FRACTION",
    "DEFAULT_MIXED_MIN_FACES": "identity:DEFAULT_MIXED_MIN_FACES",
    # duplicates: exact and near copies within an identity
    "find_duplicates": "duplicates:find_duplicates",
    "byte_digest": "duplicates:byte_digest",
    "pixel_digest": "duplicates:pixel_digest",
    "Duplicates": "duplicates:Duplicates",
    "DEFAULT_NEAR_THRESHOLD": "duplicates:DEFAULT_NEAR_THRESHOLD",
    # merge: identity centres, merge candidates, images under two identities, labels
    "identity_centres": "merge:identity_centres",
    "merge_candidates": "merge:merge_candidates",
    "merge_groups": "merge:merge_groups",
    "cross_identity_images": "merge:cross_identity_images",
    "cross_identity_hashes": "merge:cross_identity_hashes",
    "relabel": "merge:relabel",
    # moved: faces nearer another identity's centre than their own
    "CentreIndex": "moved:CentreIndex",
    "Moved": "moved:Moved",
    "DEFAULT_MOVED_MARGIN": "moved:DEFAULT_MOVED_MARGIN",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
