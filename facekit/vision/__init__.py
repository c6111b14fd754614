"""Pixels: image decoding, face detection (SCRFD, RetinaFace, YuNet decoders and the
selection rules), five-point alignment, masks and occlusions.

The names below are facekit's public vision API (plugins import them from here, never from
the submodules). They are loaded on first use (PEP 562 ``__getattr__``), so ``import
facekit.vision`` stays cheap and imports neither onnxruntime nor a submodule it does not
need. Names that would clash across submodules carry their model's name:
``check_scrfd_signature``, ``check_retinaface_signature``, ``check_yunet_signature``,
``SCRFD_LAYOUTS``, ``probe_onnx`` (``onnxdet.probe``).
"""

from __future__ import annotations

from facekit._exports import lazy_exports

#: public name -> "submodule:attribute"
_EXPORTS = {
    # images: reading and decoding photos (BGR uint8), reject reasons
    "decode_image": "images:decode_image",
    "read_file": "images:read_file",
    "check_image_header": "images:check_image_header",
    "read_head": "images:read_head",
    "image_format": "images:image_format",
    "SNIFF_BYTES": "images:SNIFF_BYTES",
    "encode_jpeg": "images:encode_jpeg",
    "file_kind": "images:file_kind",
    "os_error_detail": "images:os_error_detail",
    "jpeg_orientation": "images:jpeg_orientation",
    "apply_orientation": "images:apply_orientation",
    "MAX_FILE_BYTES": "images:MAX_FILE_BYTES",
    "EMPTY_FILE": "images:EMPTY_FILE",
    "NOT_AN_IMAGE": "images:NOT_AN_IMAGE",
    "TRUNCATED": "images:TRUNCATED",
    "CORRUPT": "images:CORRUPT",
    "UNREADABLE": "images:UNREADABLE",
    "TOO_LARGE": "images:TOO_LARGE",
    # align: five-point similarity alignment (insightface's norm_crop)
    "ARCFACE_TEMPLATE": "align:ARCFACE_TEMPLATE",
    "template_for": "align:template_for",
    "estimate_norm": "align:estimate_norm",
    "norm_crop": "align:norm_crop",
    "box_crop": "align:box_crop",
    "box_crop_transform": "align:box_crop_transform",
    # detection: detector results and the face-selection rules
    "Detections": "detection:Detections",
    "DetectorParams": "detection:DetectorParams",
    "find_faces": "detection:find_faces",
    "find_faces_batch": "detection:find_faces_batch",
    "pad_image": "detection:pad_image",
    "largest_central_index": "detection:largest_central_index",
    "inside_fraction": "detection:inside_fraction",
    "is_face_chip": "detection:is_face_chip",
    "NO_FACE": "detection:NO_FACE",
    "FACE_TOO_SMALL": "detection:FACE_TOO_SMALL",
    "MULTIPLE_FACES": "detection:MULTIPLE_FACES",
    # onnxdet: ONNX detectors on onnxruntime
    "DEFAULT_PROVIDERS": "onnxdet:DEFAULT_PROVIDERS",
    "check_providers": "onnxdet:check_providers",
    "session_options": "onnxdet:session_options",
    "make_session": "onnxdet:make_session",
    "input_size_of": "onnxdet:input_size_of",
    "letterbox": "onnxdet:letterbox",
    "letterbox_blob": "onnxdet:letterbox_blob",
    "nms": "onnxdet:nms",
    "ModelSignature": "onnxdet:ModelSignature",
    "probe_onnx": "onnxdet:probe",
    "OnnxDetectorParams": "onnxdet:OnnxDetectorParams",
    "OnnxSessionParams": "onnxdet:OnnxSessionParams",
    "OnnxInputParams": "onnxdet:OnnxInputParams",
    "OnnxDetectorModel": "onnxdet:OnnxDetectorModel",
    # the decoders
    "Scrfd": "scrfd:Scrfd",
    "SCRFD_LAYOUTS": "scrfd:LAYOUTS",
    "check_scrfd_signature": "scrfd:check_signature",
    "RetinaFaceOnnx": "retinaface_onnx:RetinaFaceOnnx",
    "check_retinaface_signature": "retinaface_onnx:check_signature",
    "YuNet": "yunet:YuNet",
    "check_yunet_signature": "yunet:check_signature",
    # masks: the face-mask renderer
    "STYLES": "masks:STYLES",
    "COLOURS": "masks:COLOURS",
    "PATTERNS": "masks:PATTERNS",
    "MaskRenderer": "masks:MaskRenderer",
    "MaskResult": "masks:MaskResult",
    "Texture": "masks:Texture",
    "load_textures": "masks:load_textures",
    "seeded_rng": "masks:seeded_rng",
    "encode_mask_png": "masks:encode_mask_png",
    # occlusion: online occlusions for training
    "Occluder": "occlusion:Occluder",
    "NoOcclusion": "occlusion:NoOcclusion",
    "RandomRectangle": "occlusion:RandomRectangle",
    "RandomEllipse": "occlusion:RandomEllipse",
    "RandomPolygon": "occlusion:RandomPolygon",
    "RandomFaceMask": "occlusion:RandomFaceMask",
    "RandomObject": "occlusion:RandomObject",
    "load_objects": "occlusion:load_objects",
    "default_occluders": "occlusion:default_occluders",
    "gaussian_light": "occlusion:gaussian_light",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
