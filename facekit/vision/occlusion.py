"""Online occlusions for training (MSML's ``datasets/augment/rand_occ.py`` kinds), torch-free.

Every transform is called as ``occluder(image, mask=None, rng=None)`` and returns
``(occluded_image, mask)`` (torchvision style: image in, image out, plus the mask):

- ``image``: a square face crop, ``PIL.Image`` (RGB or L) or numpy uint8 ``(H, W, 3)`` /
  ``(H, W)``; the result has the same type and mode. Colour order is whatever you give
  (facekit's datasets give RGB; only :class:`RandomFaceMask` cares and takes ``bgr=``).
- ``mask``: the occlusion mask so far (same size, uint8 / PIL ``L``; default all clean);
  the result is it with the new occluder's pixels set: **255 = clean, 0 = occluded**
  (MSML's convention), exactly the pixels the occluder replaced.
- ``rng``: a ``numpy.random.Generator``; default the transform's own (``seed=`` at
  construction), so a fixed seed gives a fixed sequence.

Kinds: :class:`NoOcclusion`; :class:`RandomRectangle` (area ratio in ``[0, 0.36)``; MSML's
mask of this kind is painted with the image's size instead of the rectangle's, which
overstates the occlusion: here the mask is exactly the rectangle);
:class:`RandomEllipse` (area 0.2-0.4 of the image, random colour);
:class:`RandomPolygon` (4-10 points between two circles, a connected star-shaped polygon,
about 0.4 of the face); :class:`RandomFaceMask` (facekit's mask renderer); and
:class:`RandomObject` (cut-out PNGs with alpha from a folder: ``glasses`` placed at the
eyes, ``scarf`` over the lower face, both from the ArcFace template landmarks, ``any``
anywhere with a random size and rotation).
"""

from __future__ import annotations

import math
import os
from typing import Optional

import cv2
import numpy as np


try:  # PIL is a facekit dependency; kept optional here for numpy-only callers
    from PIL import Image
except ImportError:  # pragma: no cover
    Image = None


def _to_array(image, mask):
    """(array, mask array, back) where back(arr, msk) converts to the input's type."""
    is_pil = Image is not None and isinstance(image, Image.Image)
    if is_pil:
        mode = image.mode
        arr = np.array(image.convert("RGB") if mode not in ("RGB", "L") else image)
    else:
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
            raise ValueError(f"image must be uint8 (H, W, 3) or (H, W), got {arr.dtype} {arr.shape}")
        arr = arr.copy()
    h, w = arr.shape[:2]
    if mask is None:
        msk = np.full((h, w), 255, np.uint8)
    else:
        msk = np.array(mask, dtype=np.uint8)
        if msk.shape != (h, w):
            raise ValueError(f"mask shape {msk.shape} != image size {(h, w)}")
    if is_pil:

        def back(a, m):
            return Image.fromarray(a), Image.fromarray(m, "L")
    else:

        def back(a, m):
            return a, m

    return arr, msk, back


def _paint(arr: np.ndarray, msk: np.ndarray, region: np.ndarray, colour) -> None:
    """Fill ``region`` (bool) of ``arr`` with ``colour`` and mark it occluded in ``msk``."""
    if arr.ndim == 2:
        arr[region] = int(np.mean(colour))
    else:
        arr[region] = colour
    msk[region] = 0


class Occluder:
    """Base of the online occlusions (see the module doc for the call convention)."""

    def __init__(self, seed: Optional[int] = None):
        self.rng = np.random.default_rng(seed)

    def __call__(self, image, mask=None, rng: Optional[np.random.Generator] = None):
        arr, msk, back = _to_array(image, mask)
        self.apply(arr, msk, rng if rng is not None else self.rng)
        return back(arr, msk)

    def apply(self, arr: np.ndarray, msk: np.ndarray, rng: np.random.Generator) -> None:
        """Occlude ``arr`` in place and set the covered pixels of ``msk`` to 0."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _colour(rng) -> tuple:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


class NoOcclusion(Occluder):
    """The image and mask unchanged."""

    def apply(self, arr, msk, rng):
        pass


class RandomRectangle(Occluder):
    """An axis-aligned rectangle of a random colour whose area is a uniform fraction
    ``area`` of the image; the mask is exactly the rectangle (MSML's is too large)."""

    def __init__(self, area=(0.0, 0.36), seed=None):
        super().__init__(seed)
        self.area = area

    def apply(self, arr, msk, rng):
        h, w = arr.shape[:2]
        ratio = rng.uniform(*self.area)
        aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        rh = int(round(min(h, math.sqrt(ratio * h * w / aspect))))
        rw = int(round(min(w, ratio * h * w / max(rh, 1))))
        if rh == 0 or rw == 0:
            return
        y = int(rng.integers(0, h - rh + 1))
        x = int(rng.integers(0, w - rw + 1))
        region = np.zeros((h, w), bool)
        region[y : y + rh, x : x + rw] = True
        _paint(arr, msk, region, _colour(rng))


class RandomEllipse(Occluder):
    """A filled ellipse of a random colour covering about ``area`` of the image."""

    def __init__(self, area=(0.2, 0.4), seed=None):
        super().__init__(seed)
        self.area = area

    def apply(self, arr, msk, rng):
        h, w = arr.shape[:2]
        target = rng.uniform(*self.area) * h * w
        aspect = rng.uniform(0.5, 2.0)
        a = math.sqrt(target / math.pi * aspect)
        b = target / math.pi / a
        cx, cy = rng.uniform(0.25 * w, 0.75 * w), rng.uniform(0.25 * h, 0.75 * h)
        angle = rng.uniform(0, 180)
        region = np.zeros((h, w), np.uint8)
        cv2.ellipse(region, ((cx, cy), (2 * a, 2 * b), angle), 1, -1, cv2.LINE_8)
        _paint(arr, msk, region.astype(bool), _colour(rng))


class RandomPolygon(Occluder):
    """A connected (star-shaped) polygon of ``points`` vertices at sorted random angles, each
    between an inner and an outer circle around a random centre: about ``area`` of the face."""

    def __init__(self, points=(4, 10), area=0.4, seed=None):
        super().__init__(seed)
        self.points = points
        self.area = area

    def apply(self, arr, msk, rng):
        h, w = arr.shape[:2]
        n = int(rng.integers(self.points[0], self.points[1] + 1))
        r_out = math.sqrt(self.area * h * w / math.pi) * 1.25
        r_in = 0.55 * r_out
        cx, cy = rng.uniform(0.3 * w, 0.7 * w), rng.uniform(0.3 * h, 0.7 * h)
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = rng.uniform(r_in, r_out, n)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        region = np.zeros((h, w), np.uint8)
        cv2.fillPoly(region, [np.round(pts).astype(np.int32)], 1, cv2.LINE_8)
        _paint(arr, msk, region.astype(bool), _colour(rng))


def _template(h: int, w: int) -> np.ndarray:
    from facekit.vision.align import template_for

    if h == w and (h % 112 == 0 or h % 128 == 0):
        return template_for(h)
    return template_for(112) * np.array([w / 112.0, h / 112.0], np.float32)


class RandomFaceMask(Occluder):
    """facekit's face-mask renderer (:class:`facekit.vision.masks.MaskRenderer`) as an online
    occlusion. ``landmarks``: the face's five points (default: the ArcFace template of the
    image size). ``bgr``: the image is BGR (default RGB, as the datasets give it)."""

    def __init__(self, styles=None, textures=None, landmarks=None, bgr: bool = False, seed=None):
        from facekit.vision.masks import STYLES, MaskRenderer

        super().__init__(seed)
        self.renderer = MaskRenderer(tuple(styles) if styles is not None else STYLES, textures)
        self.landmarks = None if landmarks is None else np.asarray(landmarks, np.float32)
        self.bgr = bgr

    def apply(self, arr, msk, rng):
        h, w = arr.shape[:2]
        lmk = self.landmarks if self.landmarks is not None else _template(h, w)
        if arr.ndim == 2:
            img = cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
        else:
            img = arr if self.bgr else np.ascontiguousarray(arr[:, :, ::-1])
        res = self.renderer.render(img, lmk, rng)
        if arr.ndim == 2:
            arr[:] = cv2.cvtColor(res.image, cv2.COLOR_BGR2GRAY)
        else:
            arr[:] = res.image if self.bgr else res.image[:, :, ::-1]
        msk[res.mask == 0] = 0


def load_objects(folder: str | os.PathLike) -> list[np.ndarray]:
    """Cut-out objects: every ``.png`` with alpha in ``folder`` (sorted), as ``(h, w, 4)``
    uint8 RGBA (alpha binarised at 128).

    Raises:
        FacekitError: no PNG in the folder, or a PNG without alpha (names the file).
    """
    from facekit.vision.masks import read_rgba_pngs

    out = []
    for _, img in read_rgba_pngs(folder, "object images (cut-outs with alpha)"):
        rgba = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
        rgba[:, :, 3] = np.where(rgba[:, :, 3] >= 128, 255, 0)
        out.append(rgba)
    return out


class RandomObject(Occluder):
    """Paste a random cut-out object (PNG with alpha) from ``folder``.

    kind: ``glasses`` (width ~2.3x the eye distance, centred between the eyes, along the
    eye line), ``scarf`` (about the jaw width, top edge at the nose tip, over the lower
    face) or ``any`` (random size 0.2-0.6 of the side, random rotation, anywhere).
    Placement uses the ArcFace template landmarks of the image size (or ``landmarks``).
    """

    def __init__(self, folder, kind: str = "any", landmarks=None, seed=None):
        super().__init__(seed)
        if kind not in ("glasses", "scarf", "any"):
            raise ValueError(f"kind must be glasses, scarf or any, not {kind!r}")
        self.objects = load_objects(folder)
        self.kind = kind
        self.landmarks = None if landmarks is None else np.asarray(landmarks, np.float32)

    def apply(self, arr, msk, rng):
        h, w = arr.shape[:2]
        obj = self.objects[int(rng.integers(len(self.objects)))]
        oh, ow = obj.shape[:2]
        lmk = self.landmarks if self.landmarks is not None else _template(h, w)
        if self.kind == "glasses":
            eyes = lmk[1] - lmk[0]
            width = np.linalg.norm(eyes) * rng.uniform(2.1, 2.5)
            angle = math.degrees(math.atan2(eyes[1], eyes[0]))
            centre = (lmk[0] + lmk[1]) / 2 + rng.normal(0, 1.0, 2)
        elif self.kind == "scarf":
            width = (lmk[4, 0] - lmk[3, 0]) * rng.uniform(2.6, 3.2)
            angle = rng.uniform(-5, 5)
            s = width / ow
            centre = np.array([(lmk[3, 0] + lmk[4, 0]) / 2, lmk[2, 1] + 0.5 * oh * s + rng.uniform(-2, 4)])
        else:
            width = rng.uniform(0.2, 0.6) * w
            angle = rng.uniform(-180, 180)
            centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        s = width / ow
        M = cv2.getRotationMatrix2D((ow / 2, oh / 2), -angle, s)
        M[:, 2] += centre - np.array([ow / 2, oh / 2])
        warped = cv2.warpAffine(obj, M, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
        region = warped[:, :, 3] >= 128
        if arr.ndim == 2:
            arr[region] = cv2.cvtColor(warped[:, :, :3], cv2.COLOR_RGB2GRAY)[region]
        else:
            arr[region] = warped[:, :, :3][region]
        msk[region] = 0


def default_occluders(objects: Optional[dict] = None, seed=None) -> list[Occluder]:
    """MSML's online kinds: none, rectangle, ellipse, polygon, plus one
    :class:`RandomObject` per entry of ``objects`` (``{"glasses": folder, "scarf": folder,
    "any": folder}``, each optional)."""
    occ: list[Occluder] = [NoOcclusion(seed), RandomRectangle(seed=seed), RandomEllipse(seed=seed), RandomPolygon(seed=seed)]
    for kind, folder in (objects or {}).items():
        occ.append(RandomObject(folder, kind, seed=seed))
    return occ


def gaussian_light(h: int, w: int, rng: np.random.Generator, radius: float = 128.0, scale=(0.7, 1.4)) -> np.ndarray:
    """MSML's random Gaussian illumination: ``(h, w)`` float32 map ``exp(-d^2 / 2r^2) * s``
    around a random centre, ``s`` uniform in ``scale``; multiply an image in [0, 1] by it,
    then divide by the result's maximum (as ``FaceByRandOccMask._add_gauss_to_face``)."""
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d2 = (xx - cx) ** 2 + (yy - cy) ** 2
    return (np.exp(-0.5 * d2 / radius**2) * rng.uniform(*scale)).astype(np.float32)


__all__ = [
    "NoOcclusion",
    "Occluder",
    "RandomEllipse",
    "RandomFaceMask",
    "RandomObject",
    "RandomPolygon",
    "RandomRectangle",
    "default_occluders",
    "gaussian_light",
    "load_objects",
]
