"""Five-point face alignment to the ArcFace template ("norm crop").

Reproduces ``insightface.utils.face_align.norm_crop`` pixel for pixel: least-squares
similarity transform from the five landmarks to the template (Umeyama: the arithmetic of
``skimage.transform.SimilarityTransform``'s estimate, bit for bit, without importing
scikit-image and SciPy), then ``cv2.warpAffine`` (bilinear, black border).
See ``shared/docs/FORMATS.md`` section 4.
"""

from __future__ import annotations

import cv2
import numpy as np

#: ArcFace 112x112 template, image coordinates, order: left eye, right eye, nose,
#: left mouth corner, right mouth corner.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def template_for(size: int) -> np.ndarray:
    """The five template points for an output of ``size x size`` pixels.

    ``size`` a multiple of 112: template scaled by size/112. Otherwise a multiple of 128:
    scaled by size/128 and shifted right by 8*size/128 (insightface ``estimate_norm``).

    Raises:
        ValueError: size is a multiple of neither 112 nor 128.
    """
    if size <= 0 or (size % 112 and size % 128):
        raise ValueError(f"alignment size {size} must be a multiple of 112 or 128")
    if size % 112 == 0:
        ratio, diff_x = size / 112.0, 0.0
    else:
        ratio = size / 128.0
        diff_x = 8.0 * ratio
    dst = ARCFACE_TEMPLATE * ratio
    dst[:, 0] += diff_x
    return dst


def estimate_norm(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """2x3 similarity matrix mapping source landmarks onto the template.

    Args:
        landmarks: ``(5, 2)`` float, image coordinates in pixels (x, y), standard order.
        size: output side in pixels.
    Returns:
        ``(2, 3)`` float64 affine matrix for ``cv2.warpAffine``.
    Raises:
        ValueError: landmarks not of shape (5, 2), not finite, or degenerate.
    """
    lmk = np.asarray(landmarks)
    if lmk.shape != (5, 2) or not np.all(np.isfinite(lmk)):
        raise ValueError(f"landmarks must be a finite (5, 2) array, got shape {lmk.shape}")
    dst = template_for(size)
    with np.errstate(all="ignore"):
        T = umeyama(lmk, dst)
    if not np.all(np.isfinite(T)):
        raise ValueError("degenerate landmarks: no similarity transform to the template")
    return T[0:2, :]


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping
    ``src`` points onto ``dst`` points (Umeyama, PAMI 1991).

    The same arithmetic, operation for operation and in the inputs' dtypes, as
    scikit-image's ``skimage.transform._geometric._umeyama(src, dst, estimate_scale=True)``
    (0.26), which ``SimilarityTransform.estimate`` / ``from_estimate`` and so insightface's
    ``estimate_norm`` call: the results are bit-identical (tests/test_align.py), without
    importing scikit-image and SciPy (~0.1-0.2 s per worker process).

    Args:
        src: ``(N, D)`` float array (float32 or float64), source points.
        dst: ``(N, D)`` float array, destination points.
    Returns:
        ``(D + 1, D + 1)`` float64 homogeneous matrix; all NaN when the problem is not
        well-conditioned (every source point the same).
    """
    src = np.asarray(src)
    dst = np.asarray(dst)
    num, dim = src.shape
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_demean = src - src_mean
    dst_demean = dst - dst_mean
    A = dst_demean.T @ src_demean / num  # Eq. (38)
    d = np.ones((dim,), dtype=np.float64)  # Eq. (39)
    if np.linalg.det(A) < 0:
        d[dim - 1] = -1
    T = np.eye(dim + 1, dtype=np.float64)
    U, S, V = np.linalg.svd(A)
    # Eq. (40) and (43); rank from the singular values as numpy's matrix_rank does
    tol = S.max() * np.max(A.shape) * np.finfo(float).eps
    rank = np.count_nonzero(S > tol)
    if rank == 0:
        return np.nan * T
    elif rank == dim - 1:
        if np.linalg.det(U) * np.linalg.det(V) > 0:
            T[:dim, :dim] = U @ V
        else:
            s = d[dim - 1]
            d[dim - 1] = -1
            T[:dim, :dim] = U @ np.diag(d) @ V
            d[dim - 1] = s
    else:
        T[:dim, :dim] = U @ np.diag(d) @ V
    scale = 1.0 / src_demean.var(axis=0).sum() * (S @ d)  # Eq. (41) and (42)
    T[:dim, dim] = dst_mean - scale * (T[:dim, :dim] @ src_mean.T)
    T[:dim, :dim] *= scale
    return T


def norm_crop(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Aligned ``size x size`` face crop; equals insightface ``norm_crop`` pixel for pixel.

    Args:
        image: ``(H, W, C)`` uint8, any channel order (kept as given; facekit uses BGR).
        landmarks: ``(5, 2)`` float, pixels, image coordinates.
        size: multiple of 112 or 128.
    Returns:
        ``(size, size, C)`` uint8, same channel order as ``image``.
    """
    M = estimate_norm(landmarks, size)
    return cv2.warpAffine(image, M, (size, size), borderValue=0.0)


def _box_window(shape, box, margin: int) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    x1 = int(max(np.floor(box[0]) - margin / 2, 0))
    y1 = int(max(np.floor(box[1]) - margin / 2, 0))
    x2 = int(min(np.ceil(box[2]) + margin / 2, w))
    y2 = int(min(np.ceil(box[3]) + margin / 2, h))
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box {list(box)} is empty inside a {w}x{h} image")
    return x1, y1, x2, y2


def box_crop_transform(shape, box: np.ndarray, size: int = 112, margin: int = 44) -> np.ndarray:
    """The ``(2, 3)`` float64 affine map from source pixels to :func:`box_crop`'s output
    pixels (OpenCV's resize convention: pixel centres at ``i + 0.5``).

    Raises:
        ValueError: the box is empty inside the image.
    """
    x1, y1, x2, y2 = _box_window(shape, box, margin)
    sx, sy = size / (x2 - x1), size / (y2 - y1)
    return np.array([[sx, 0.0, 0.5 * sx - 0.5 - sx * x1], [0.0, sy, 0.5 * sy - 0.5 - sy * y1]], np.float64)


def box_crop(image: np.ndarray, box: np.ndarray, size: int = 112, margin: int = 44) -> np.ndarray:
    """Crop a detector box with a margin and resize, for detectors without landmarks.

    As insightface ``face_preprocess.preprocess`` without landmarks: the box grows by
    ``margin/2`` pixels on each side (clipped to the image), the crop is resized to
    ``size x size`` (bilinear).

    Args:
        image: ``(H, W, C)`` uint8.
        box: ``(4,)`` x1, y1, x2, y2 in pixels.
    Returns:
        ``(size, size, C)`` uint8.
    """
    x1, y1, x2, y2 = _box_window(image.shape, box, margin)
    crop = image[y1:y2, x1:x2]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
