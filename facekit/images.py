"""Image decoding and encoding with the conventions of the InsightFace tools.

Decoded images are ``numpy.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``, **BGR**
channel order (what ``cv2.imread`` and InsightFace's detectors use), with the EXIF
orientation applied, as ``cv2.imread(path, cv2.IMREAD_COLOR)`` does.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facekit.errors import SampleRejected

# Reasons a file is rejected before any face work (stable tokens for the rejects file).
EMPTY_FILE = "empty_file"
NOT_AN_IMAGE = "not_an_image"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
UNREADABLE = "unreadable"

_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


def read_file(path: str) -> bytes:
    """Read a whole file; an OS error becomes ``SampleRejected('unreadable')``.

    Plain ``os.open``/``os.read`` until end of file (as ``cat``): half the cost of
    ``open(path, "rb").read()`` for the few-KB face crops of a pass-through packing run.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _O_BINARY)
        try:
            chunks = []
            while chunk := os.read(fd, 1 << 20 if chunks else 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(fd)
    except OSError as e:
        raise SampleRejected(UNREADABLE, f"{type(e).__name__}: {e.strerror or e}") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP, ... anything Pillow reads).

    Grayscale, palette, RGBA (alpha dropped, as ``cv2.imread``), CMYK (including Adobe's
    inverted CMYK JPEGs) and 16-bit inputs become 3-channel 8-bit; EXIF orientation is
    applied.

    Args:
        data: the encoded file bytes.
    Returns:
        ``(H, W, 3)`` uint8 array, BGR.
    Raises:
        SampleRejected: ``empty_file`` (0 bytes), ``not_an_image`` (no image format
            recognised), ``truncated`` (the data ends before the image is complete),
            ``corrupt`` (the decoder rejects the data).
    """
    if not data:
        raise SampleRejected(EMPTY_FILE, "file has 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format
            img.load()
    except UnidentifiedImageError:
        raise SampleRejected(NOT_AN_IMAGE, "no image format recognised in the bytes") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise SampleRejected(NOT_AN_IMAGE, f"refused: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        kind = f"{fmt} " if "fmt" in locals() and fmt else ""
        reason = TRUNCATED if "truncated" in str(e) or isinstance(e, EOFError) else CORRUPT
        raise SampleRejected(reason, f"{kind}data: {e}") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block must not lose an otherwise good image
        pass
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.uint32)
        if arr.max() > 255:
            arr = arr >> 8
        img = Image.fromarray(arr.astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode != "RGB":
        img = img.convert("RGB")
    rgb = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def encode_jpeg(image_bgr: np.ndarray, quality: int = 95) -> bytes:
    """Encode a BGR ``(H, W, 3)`` uint8 image as baseline JPEG with OpenCV.

    Same call as the InsightFace packing scripts: ``cv2.imencode('.jpg', img,
    [cv2.IMWRITE_JPEG_QUALITY, quality])``.
    """
    import cv2  # imported on first use: a pass-through run never encodes

    ok, buf = cv2.imencode(".jpg", image_bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {image_bgr.shape} as JPEG")
    return buf.tobytes()
