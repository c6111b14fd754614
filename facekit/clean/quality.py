"""Face quality signals without extra models, and reject rules on them (issue 26 part 2).

Per face, from its aligned crop (``(H, W, 3)`` uint8 BGR) and its five landmarks (left
eye, right eye, nose, left mouth corner, right mouth corner; "left" = image left; the
insightface order), each signal kept separate (no combined score):

- ``blur``: variance of the Laplacian (``cv2.Laplacian``, 3x3 aperture ``[[0,1,0],
  [1,-4,1],[0,1,0]]``, the CV_64F values, computed exactly in CV_16S) of the grey crop
  (BT.601 luma, ``cv2.COLOR_BGR2GRAY``) inside the face window :data:`FACE_WINDOW`,
  computed on the crop at its own size (no resizing: a 224x224 crop of the same face gives
  other values than its 112x112 crop). Lower is blurrier; it also scales with the square
  of the contrast (a face at 40 % brightness gives ~1/6 of the value). Measured on 112x112
  crops: sharp real faces mostly 180 to 1,200 (a few low-contrast or soft ones down to
  ~60); the same crops after a Gaussian blur of sigma 1.5 px mostly 14 to 50 (issue 26
  report).
- ``yaw``, ``pitch``, ``roll`` (degrees) from the five landmarks alone, :func:`head_pose`.
  Zero is the pose of the ArcFace template (what alignment maps every face onto); yaw > 0:
  the face turns towards the image's right (its nose moves right); pitch > 0: the face
  looks up (the nose moves towards the eyes); roll > 0: the face is turned counter-
  clockwise in the image (the image-right eye higher; the sense of
  ``cv2.getRotationMatrix2D``'s positive angle). A crop of an aligned source without
  detection has the template as landmarks: pose ~0 by construction.
- ``inter_ocular`` and ``face_size``: the eye distance and the face box's shorter side in
  source pixels (:func:`face_size`): the measure detection's ``min_size`` uses.
- ``brightness`` and ``contrast``: mean and standard deviation of the grey crop (0..255)
  inside :data:`FACE_WINDOW`.
- ``embedding_norm`` (the recognizer's pre-normalisation norm, given) and ``quality`` (a
  learned model's score, :class:`facekit.clean.quality_onnx.OnnxQuality`), NaN when not
  measured.

:class:`QualityThresholds` (config) and :func:`judge` turn the signals into reject reasons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional, Sequence

import cv2
import numpy as np
from pydantic import Field

from facekit.params import Params
from facekit.vision.align import ARCFACE_TEMPLATE
from facekit.vision.detection import FACE_TOO_SMALL

#: the face window of an aligned crop, as fractions of its width and height (x0, y0, x1,
#: y1): on an ArcFace 112x112 crop x 28..84, y 34..101 px, the eyebrows to the chin
#: between the cheeks (no background, no black border of a face near the photo's edge)
FACE_WINDOW = (0.25, 0.30, 0.75, 0.90)

# ---------------------------------------------------------------- reasons

BLURRY = "blurry"
EXTREME_POSE = "extreme_pose"
TOO_DARK = "too_dark"
TOO_BRIGHT = "too_bright"
LOW_CONTRAST = "low_contrast"
LOW_EMBEDDING_NORM = "low_embedding_norm"
LOW_QUALITY = "low_quality"
# FACE_TOO_SMALL (imported): detection's reason, for the same measure (the box's shorter
# side in source pixels, detection's ``min_size``): a face too small, whichever step saw it

# ---------------------------------------------------------------- 3-D face model

#: The five points of a mean face in 3-D, in ArcFace-template pixels (x right, y down,
#: z towards the camera), order of the landmarks. x and y: the ArcFace 112x112 template
#: (:data:`facekit.vision.align.ARCFACE_TEMPLATE`) made left-right symmetric, so its own
#: landmarks are the frontal pose; z: the depths of the same points in MediaPipe's
#: canonical face model (google/mediapipe, Apache-2.0: ``mediapipe/modules/face_geometry/
#: data/geometry_pipeline_metadata_detection.pbtxt`` gives the eye centres, z 3.4657 cm,
#: the midpoints of ``canonical_face_model.obj`` vertices 33/133 and 263/362, and the nose
#: tip, vertex 1, z 7.4756 cm; the mouth corners are vertices 61/291, z 4.2839 cm), scaled
#: by the eye distances (template 35.237 px / model 6.3023 cm = 5.591 px/cm).
def _face_model() -> np.ndarray:
    t = ARCFACE_TEMPLATE.astype(np.float64)
    mid = (t[0, 0] + t[1, 0]) / 2
    half_eye = (t[1, 0] - t[0, 0]) / 2
    half_mouth = (t[4, 0] - t[3, 0]) / 2
    eye_y, nose_y, mouth_y = (t[0, 1] + t[1, 1]) / 2, t[2, 1], (t[3, 1] + t[4, 1]) / 2
    px_per_cm = 2 * half_eye / (2 * 3.1511454582214355)
    z_eye, z_nose, z_mouth = (px_per_cm * z for z in (3.4656630754470825, 7.475604057312012, 4.283884))
    m = np.array(
        [
            [-half_eye, eye_y, z_eye],
            [half_eye, eye_y, z_eye],
            [0.0, nose_y, z_nose],
            [-half_mouth, mouth_y, z_mouth],
            [half_mouth, mouth_y, z_mouth],
        ]
    )
    m[:, 0] += mid
    return m


FACE_MODEL_3D = _face_model()
#: ``(4, 5)``: least-squares solution of ``[X Y Z 1] @ P.T = landmarks`` for the affine
#: camera ``P`` (2 x 4), the same for every face: one matrix product fits a whole batch
_FIT = np.linalg.pinv(np.hstack([FACE_MODEL_3D, np.ones((5, 1))]))


def head_pose(landmarks: np.ndarray) -> np.ndarray:
    """Yaw, pitch and roll in degrees of faces from their five landmarks.

    The method of insightface's 3-D landmark pose (``model_zoo/landmark.py``:
    ``estimate_affine_matrix_3d23d``, ``P2sRt``, ``matrix2angle``) on five points: the
    affine camera ``P`` (2 x 4) mapping :data:`FACE_MODEL_3D` onto the landmarks by least
    squares (weak perspective, any image scale), its two rows made the nearest orthonormal
    pair (polar decomposition), completed to a rotation ``R = Rz(roll) Rx(pitch)
    Ry(yaw)``: the face turns, then nods, then the picture tilts. Roll is thus the in-image
    angle (the eye line's angle on a face without yaw or pitch). Vectorised: one matrix
    product and one batched SVD for the whole batch.

    Accuracy (issue 26 report): exact on points projected from the model by weak
    perspective; through a pinhole camera within 1.2 degrees at ~1 m and 2.4 degrees at
    ~50 cm from the face. On SCRFD's landmarks of real crops, a mirrored photo gives the
    negated yaw within 1.3 degrees (median; 4 degrees at the 90th percentile) and a photo
    turned by 15 degrees a roll 14 to 19 degrees apart (10th-90th percentile). Yaw and
    pitch rest on the nose's offset and the model's nose depth, which vary between people;
    pitch also moves with expression (mouth corners raised by a smile read as looking
    down: 1.5 degrees per pixel of a 112x112 crop), so it is the least reliable angle: use
    loose ``max_pitch`` limits. cv2.solvePnP (rigid model, focal = image width) on the same
    landmarks differs by 5 degrees of yaw and 3 of pitch (median) and takes ~100x longer.

    Args:
        landmarks: ``(5, 2)`` or ``(N, 5, 2)`` float, image pixels (x, y), standard order.
    Returns:
        ``(3,)`` or ``(N, 3)`` float32: yaw, pitch, roll (signs: module docstring); NaN for
        a face whose landmarks are not finite or degenerate (all points on one line).
    Raises:
        ValueError: landmarks not of shape (5, 2) or (N, 5, 2).
    """
    lmk = np.asarray(landmarks, np.float64)
    single = lmk.ndim == 2
    if single:
        lmk = lmk[None]
    if lmk.ndim != 3 or lmk.shape[1:] != (5, 2):
        raise ValueError(f"landmarks must have shape (5, 2) or (N, 5, 2), got {np.shape(landmarks)}")
    out = np.full((len(lmk), 3), np.nan, np.float32)
    ok = np.isfinite(lmk).all(axis=(1, 2))
    if ok.any():
        P = np.einsum("kp,npc->nck", _FIT, lmk[ok])[:, :, :3]  # (n, 2, 3) linear part of P
        u, s, vt = np.linalg.svd(P, full_matrices=False)
        q = u @ vt  # nearest matrix with orthonormal rows
        r1, r2 = q[:, 0], q[:, 1]
        r3 = np.cross(r1, r2)
        yaw = np.degrees(np.arctan2(-r3[:, 0], r3[:, 2]))
        pitch = np.degrees(np.arcsin(np.clip(r3[:, 1], -1.0, 1.0)))
        roll = np.degrees(np.arctan2(r1[:, 1], r2[:, 1]))
        angles = np.stack([yaw, pitch, roll], 1)
        # degenerate: the fitted camera collapses a direction (collinear landmarks)
        angles[s[:, 1] <= 1e-6 * np.maximum(s[:, 0], 1e-12)] = np.nan
        out[ok] = angles
    return out[0] if single else out


def face_size(landmarks: np.ndarray, box: Optional[np.ndarray] = None) -> tuple[float, float]:
    """``(inter_ocular, face_size)`` in source pixels.

    ``inter_ocular``: the distance between the eye landmarks. ``face_size``: the shorter
    side of the detection box (what detection's ``min_size`` compares); without a box (an
    aligned source, landmarks on the template) estimated as :data:`BOX_PER_EYE_DISTANCE`
    times the eye distance.

    Args:
        landmarks: ``(5, 2)`` float, source pixels. box: ``(4,)`` x1, y1, x2, y2 or None.
    Raises:
        ValueError: landmarks not (5, 2) or a box not 4 values.
    """
    lmk = np.asarray(landmarks, np.float64)
    if lmk.shape != (5, 2):
        raise ValueError(f"landmarks must have shape (5, 2), got {lmk.shape}")
    iod = float(np.hypot(*(lmk[1] - lmk[0])))
    if box is None:
        return iod, BOX_PER_EYE_DISTANCE * iod
    b = np.asarray(box, np.float64).reshape(-1)
    if b.shape != (4,):
        raise ValueError(f"box must be 4 values x1, y1, x2, y2, got shape {np.shape(box)}")
    return iod, float(min(b[2] - b[0], b[3] - b[1]))


#: SCRFD's box shorter side over the eye distance on frontal faces (median over the
#: shared aligned_112 and kz_celebs crops, issue 26 report): estimates the box of a face
#: known only by its landmarks
BOX_PER_EYE_DISTANCE = 2.2


# ---------------------------------------------------------------- pixels


def _window(h: int, w: int) -> tuple[int, int, int, int]:
    """:data:`FACE_WINDOW` in pixels of an ``h x w`` crop: y0, y1, x0, x1 (at least one
    pixel from every border, so the 3x3 Laplacian inside it never reads past the crop)."""
    x0, y0, x1, y1 = FACE_WINDOW
    return max(1, round(y0 * h)), min(h - 1, round(y1 * h)), max(1, round(x0 * w)), min(w - 1, round(x1 * w))


def _mean_var(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of each ``x[i]`` of an ``(N, h, w)`` integer array, exactly (the
    sums of integers below 2**53 are exact in float64)."""
    x = x.astype(np.float64)
    n = x.shape[1] * x.shape[2]
    mean = x.sum(axis=(1, 2)) / n
    return mean, np.maximum(np.einsum("ijk,ijk->i", x, x) / n - mean * mean, 0.0)


def pixel_signals(crops: Sequence[np.ndarray]) -> np.ndarray:
    """Blur, brightness and contrast of aligned crops (definitions: module docstring).

    Only the face window and a one-pixel margin are read: the windows of crops of one size
    are stacked and go through one ``cvtColor`` and one ``Laplacian`` call (CV_16S: the
    3x3 Laplacian of 8-bit grey is an exact integer in -1020..1020, so the variance, from
    exact integer sums, equals the CV_64F one's).

    Args:
        crops: ``(H, W, 3)`` uint8 BGR images (sizes may differ), or one ``(N, H, W, 3)`` array.
    Returns:
        ``(N, 3)`` float32: blur, brightness, contrast.
    Raises:
        ValueError: a crop that is not ``(H, W, 3)`` uint8 of at least 8x8 pixels (names its index).
    """
    out = np.zeros((len(crops), 3), np.float32)
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(crops):
        if not isinstance(c, np.ndarray) or c.dtype != np.uint8 or c.ndim != 3 or c.shape[2] != 3:
            what = f"{c.dtype} array of shape {c.shape}" if isinstance(c, np.ndarray) else type(c).__name__
            raise ValueError(f"crop {i}: expected an (H, W, 3) uint8 BGR image, got a {what}")
        if min(c.shape[:2]) < 8:
            raise ValueError(f"crop {i}: {c.shape[1]}x{c.shape[0]} pixels is too small for quality signals (min 8x8)")
        groups.setdefault(c.shape, []).append(i)
    for (h, w, _), idx in groups.items():
        y0, y1, x0, x1 = _window(h, w)
        ys, xs = slice(y0 - 1, y1 + 1), slice(x0 - 1, x1 + 1)  # the window and its margin
        if isinstance(crops, np.ndarray) and crops.ndim == 4:
            sub = np.ascontiguousarray(crops[idx, ys, xs])
        else:
            sub = np.stack([crops[i][ys, xs] for i in idx])
        n, hh, ww = sub.shape[:3]
        grey = cv2.cvtColor(sub.reshape(n * hh, ww, 3), cv2.COLOR_BGR2GRAY)
        lap = cv2.Laplacian(grey, cv2.CV_16S).reshape(n, hh, ww)[:, 1:-1, 1:-1]
        face = grey.reshape(n, hh, ww)[:, 1:-1, 1:-1]
        out[idx, 0] = _mean_var(lap)[1]
        mean, var = _mean_var(face)
        out[idx, 1] = mean
        out[idx, 2] = np.sqrt(var)
    return out


# ---------------------------------------------------------------- per face


@dataclass
class FaceQuality:
    """The quality signals of one face, each separate (no combined score); NaN = not
    measured. Units: blur (Laplacian variance, grey levels squared), angles in degrees,
    sizes in source pixels, brightness/contrast in grey levels 0..255."""

    blur: float
    yaw: float
    pitch: float
    roll: float
    inter_ocular: float
    face_size: float
    brightness: float
    contrast: float
    embedding_norm: float = math.nan
    quality: float = math.nan

    def as_row(self) -> dict[str, float]:
        """The signals as ``{column: float}`` (float32 values), for ``results.parquet``."""
        return {f.name: float(np.float32(getattr(self, f.name))) for f in fields(self)}


#: the column names :meth:`FaceQuality.as_row` gives, in order
QUALITY_COLUMNS = tuple(f.name for f in fields(FaceQuality))


def compute_quality(
    crops: Sequence[np.ndarray],
    landmarks: np.ndarray,
    boxes: Optional[np.ndarray] = None,
    embedding_norms: Optional[np.ndarray] = None,
    scores: Optional[np.ndarray] = None,
) -> list[FaceQuality]:
    """The quality signals of a batch of faces.

    Args:
        crops: the aligned crops, ``(H, W, 3)`` uint8 BGR each.
        landmarks: ``(N, 5, 2)`` five landmarks per face in source pixels (for an aligned
            source without detection: the template of the crop's size,
            :func:`facekit.vision.align.template_for`).
        boxes: ``(N, 4)`` detection boxes in source pixels, or None (sizes estimated from
            the landmarks, :func:`face_size`).
        embedding_norms: ``(N,)`` the recognizer's pre-normalisation norms, or None.
        scores: ``(N,)`` a learned quality model's scores, or None.
    Returns:
        one :class:`FaceQuality` per crop, in order.
    Raises:
        ValueError: a bad crop (names its index) or arrays whose lengths differ from the crops'.
    """
    n = len(crops)
    lmk = np.asarray(landmarks, np.float64) if n else np.zeros((0, 5, 2))
    for name, arr, tail in (("landmarks", lmk, (5, 2)), ("boxes", boxes, (4,)),
                            ("embedding_norms", embedding_norms, ()), ("scores", scores, ())):
        if arr is not None and np.shape(arr) != (n, *tail):
            raise ValueError(f"{name} has shape {np.shape(arr)}; {n} crops need {(n, *tail)}")
    pix = pixel_signals(crops)
    pose = head_pose(lmk) if n else np.zeros((0, 3), np.float32)
    iod = np.hypot(*(lmk[:, 1] - lmk[:, 0]).T)
    if boxes is None:
        side = BOX_PER_EYE_DISTANCE * iod
    else:
        b = np.asarray(boxes, np.float64)
        side = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    nan = np.full(n, np.nan)
    table = np.column_stack(
        [pix[:, 0], pose, iod, side, pix[:, 1], pix[:, 2],
         nan if embedding_norms is None else embedding_norms, nan if scores is None else scores]
    ).astype(np.float64)
    return [FaceQuality(*row) for row in table.tolist()]


# ---------------------------------------------------------------- thresholds


class QualityThresholds(Params):
    """Reject rules on the quality signals; each None (the default) is not checked."""

    min_blur: Optional[float] = Field(
        None, ge=0, description="faces whose Laplacian variance (face window of the aligned crop) is below this are "
        "rejected as blurry (112x112 crops: sharp 60-2000, blurred below ~50)"
    )
    max_yaw: Optional[float] = Field(None, ge=0, le=180, description="|yaw| above this (degrees) is extreme_pose")
    max_pitch: Optional[float] = Field(None, ge=0, le=180, description="|pitch| above this (degrees) is extreme_pose")
    max_roll: Optional[float] = Field(
        None, ge=0, le=180, description="|roll| above this (degrees) is extreme_pose (alignment undoes roll: "
        "usually left unchecked)"
    )
    min_brightness: Optional[float] = Field(None, ge=0, le=255, description="mean grey level below this is too_dark")
    max_brightness: Optional[float] = Field(None, ge=0, le=255, description="mean grey level above this is too_bright")
    min_contrast: Optional[float] = Field(
        None, ge=0, le=255, description="grey-level standard deviation below this is low_contrast"
    )
    min_embedding_norm: Optional[float] = Field(
        None, ge=0, description="a pre-normalisation embedding norm below this is low_embedding_norm (MagFace: low "
        "norm, low quality; the scale depends on the recognizer)"
    )
    min_face_size: Optional[float] = Field(
        None, ge=0, description="a face box whose shorter side in the source is below this (pixels) is face_too_small, "
        "as detection's min_size"
    )
    min_quality: Optional[float] = Field(
        None, description="a learned quality model's score below this is low_quality (the scale is the model's)"
    )


#: (threshold, signal, reason, is it a lower bound, use the absolute value)
#: exposure first: a dark or flat face also measures blurry (blur scales with contrast^2),
#: and its first reason is the one reported
_RULES = (
    ("min_brightness", "brightness", TOO_DARK, True, False),
    ("max_brightness", "brightness", TOO_BRIGHT, False, False),
    ("min_contrast", "contrast", LOW_CONTRAST, True, False),
    ("min_blur", "blur", BLURRY, True, False),
    ("max_yaw", "yaw", EXTREME_POSE, False, True),
    ("max_pitch", "pitch", EXTREME_POSE, False, True),
    ("max_roll", "roll", EXTREME_POSE, False, True),
    ("min_embedding_norm", "embedding_norm", LOW_EMBEDDING_NORM, True, False),
    ("min_face_size", "face_size", FACE_TOO_SMALL, True, False),
    ("min_quality", "quality", LOW_QUALITY, True, False),
)


def judge(metrics: FaceQuality, thresholds: QualityThresholds) -> list[tuple[str, str]]:
    """The reject reasons one face earns: ``[(reason, detail), ...]``, empty when kept.

    Every set threshold is checked (a face may earn several reasons; the first is the one
    to report); a signal that is NaN where its threshold is set could not be measured and
    is rejected with that rule's reason (never kept unchecked). Reasons: ``blurry``,
    ``extreme_pose``, ``too_dark``, ``too_bright``, ``low_contrast``,
    ``low_embedding_norm``, ``face_too_small``, ``low_quality``.
    """
    out = []
    for key, signal, reason, lower, absolute in _RULES:
        limit = getattr(thresholds, key)
        if limit is None:
            continue
        value = float(getattr(metrics, signal))
        shown = f"|{signal}|" if absolute else signal
        if not math.isfinite(value):
            out.append((reason, f"{signal} could not be measured ({value}) and {key} is set"))
            continue
        v = abs(value) if absolute else value
        if (v < limit) if lower else (v > limit):
            out.append((reason, f"{shown} {v:.4g} {'<' if lower else '>'} {key} {limit:g}"))
    return out


__all__ = [
    "BLURRY",
    "BOX_PER_EYE_DISTANCE",
    "EXTREME_POSE",
    "FACE_MODEL_3D",
    "FACE_TOO_SMALL",
    "FACE_WINDOW",
    "FaceQuality",
    "LOW_CONTRAST",
    "LOW_EMBEDDING_NORM",
    "LOW_QUALITY",
    "QUALITY_COLUMNS",
    "QualityThresholds",
    "TOO_BRIGHT",
    "TOO_DARK",
    "compute_quality",
    "face_size",
    "head_pose",
    "judge",
    "pixel_signals",
]
