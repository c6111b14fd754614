"""Face-mask renderer for aligned faces: no 3D model, no download, deterministic.

A mask is placed on an aligned face crop from its five landmarks (``(5, 2)`` crop pixels:
left eye, right eye, nose tip, left and right mouth corner; "left" = image left):

1. insightface's mean 68-point face shape (``insightface/data/objects/meanshape_68.pkl``,
   installed with the ``insightface`` wheel) is fitted to the five points by a
   least-squares similarity transform (Umeyama); its nose-tip residual shifts the centre
   line, so a slightly turned face gets an off-centre nose ridge and chin. This gives the
   jaw line (68-point indices 1-15), the nose bridge (28-29) and the chin (8).
2. A mask texture (BGR + binary alpha, drawn by facekit in a ``256 x 192`` canonical frame,
   or read from a user's PNG with alpha) is placed by the perspective warp (homography,
   least squares) from six canonical anchors to six face points: jaw 1, nose bridge,
   jaw 15 (top edge), jaw 5, chin, jaw 11 (bottom edge): MaskTheFace's placement.
3. The texture is shaded by the face's brightness: scaled by the mean brightness of the
   covered skin and modulated by its blurred local shading (light from one side stays).

The occlusion mask is exact: 0 for every pixel whose value the mask replaced, 255 for every
other pixel (MSML's convention: 255 clean, 0 occluded). Same inputs and same ``rng`` state,
same output bytes.

Styles drawn by facekit: ``surgical`` (pleats, nose wire), ``cloth`` (plain, stripes, dots,
checks; centre seam), ``n95`` (dome, moulded rim, optional valve), ``kn95`` (folded, pointed
at nose and chin, centre fold), each in several colours.
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from facekit.errors import FacekitError
from facekit.vision.align import umeyama

#: canonical texture frame (width, height) in pixels
TW, TH = 256, 192
#: canonical anchors (x, y) of the texture frame, in the order of :data:`FACE_ANCHORS`
CANON_ANCHORS = np.array(
    [[0, 0.22 * TH], [0.5 * TW, 0], [TW, 0.22 * TH], [0.17 * TW, 0.84 * TH], [0.5 * TW, TH], [0.83 * TW, 0.84 * TH]],
    np.float32,
)

STYLES = ("surgical", "cloth", "n95", "kn95")

#: BGR colours per style (name -> colour)
COLOURS = {
    "surgical": {"blue": (219, 190, 142), "white": (236, 238, 236), "green": (180, 205, 150), "black": (45, 45, 48), "pink": (205, 190, 240)},
    "cloth": {"navy": (90, 50, 30), "black": (35, 35, 38), "grey": (130, 130, 128), "red": (50, 40, 170), "olive": (60, 110, 100), "beige": (170, 200, 215)},
    "n95": {"white": (232, 235, 235), "grey": (190, 192, 190), "yellow": (170, 225, 238)},
    "kn95": {"white": (236, 238, 238), "black": (40, 40, 42), "pink": (200, 185, 235), "blue": (200, 150, 90)},
}
PATTERNS = ("plain", "stripes", "dots", "checks")

# five-point order in the 68-point scheme: eye centres (means), nose tip, mouth corners
_EYE_L, _EYE_R, _NOSE, _MOUTH_L, _MOUTH_R = list(range(36, 42)), list(range(42, 48)), 30, 48, 54


@functools.lru_cache(maxsize=1)
def meanshape_68() -> np.ndarray:
    """insightface's mean 68-point face shape, ``(68, 2)`` float64 (x right, y down).

    Raises:
        FacekitError: the installed insightface has no ``data/objects/meanshape_68.pkl``.
    """
    try:
        import insightface
    except ImportError as e:  # pragma: no cover - a core dependency
        raise FacekitError(f"the mask renderer needs the insightface package ({e})") from None
    path = Path(insightface.__file__).parent / "data" / "objects" / "meanshape_68.pkl"
    try:
        with open(path, "rb") as f:
            shape = np.asarray(pickle.load(f), np.float64)
    except (OSError, pickle.UnpicklingError, EOFError) as e:
        raise FacekitError(f"{path}: cannot read insightface's mean face shape ({e})") from None
    if shape.shape != (68, 3):
        raise FacekitError(f"{path}: expected a (68, 3) shape, got {shape.shape}")
    return shape[:, :2].copy()


@functools.lru_cache(maxsize=1)
def _mean5() -> np.ndarray:
    m = meanshape_68()
    return np.stack([m[_EYE_L].mean(0), m[_EYE_R].mean(0), m[_NOSE], m[_MOUTH_L], m[_MOUTH_R]])


def _placed(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(landmarks (5, 2) float64, 2x3 similarity from the mean face's five points to
    them)``. Raises ValueError for landmarks not a finite ``(5, 2)`` array or with both eyes
    at one point."""
    lmk = np.asarray(landmarks, np.float64)
    if lmk.shape != (5, 2) or not np.all(np.isfinite(lmk)):
        raise ValueError(f"landmarks must be a finite (5, 2) array, got shape {lmk.shape}")
    if np.linalg.norm(lmk[1] - lmk[0]) < 1e-3:
        raise ValueError("degenerate landmarks: both eyes at one point")
    return lmk, umeyama(_mean5(), lmk)[:2]


def fit_68(landmarks: np.ndarray) -> np.ndarray:
    """The mean 68-point shape fitted to five landmarks, ``(68, 2)`` float64, same pixels.

    Args:
        landmarks: ``(5, 2)`` float, the face's five points (facekit order).
    Returns:
        68 points; the nose line (27-35) moved by the nose-tip residual, the chin and lower
        jaw (6-10) by 60% of it (a turned face).
    Raises:
        ValueError: landmarks not a finite ``(5, 2)`` array or degenerate (eyes together).
    """
    lmk, M = _placed(landmarks)
    pts = meanshape_68() @ M[:, :2].T + M[:, 2]
    resid = lmk[2] - pts[_NOSE]
    resid[1] = 0.0  # vertical residual: face proportions, not pose
    pts[27:36] += resid
    pts[6:11] += 0.6 * resid
    return pts


def face_anchors(landmarks: np.ndarray) -> np.ndarray:
    """The six face points a mask is warped onto, ``(6, 2)`` float32 crop pixels: jaw 1,
    nose bridge (30% from 28 to 29), jaw 15, jaw 5, chin 8, jaw 11 (see :func:`fit_68`).

    Args:
        landmarks: ``(5, 2)`` float, the face's five points (facekit order), crop pixels.
    Raises:
        ValueError: landmarks not a finite ``(5, 2)`` array or degenerate (eyes together).
    """
    lmk, M = _placed(landmarks)
    p = _anchor_base() @ M[:, :2].T + M[:, 2]  # jaw 1, bridge, jaw 15, jaw 5, chin, jaw 11, nose tip
    resid = lmk[2] - p[6]
    p[1, 0] += resid[0]
    p[4, 0] += 0.6 * resid[0]
    return p[:6].astype(np.float32)


@functools.lru_cache(maxsize=1)
def _anchor_base() -> np.ndarray:
    m = meanshape_68()
    bridge = m[28] + 0.3 * (m[29] - m[28])
    return np.stack([m[1], bridge, m[15], m[5], m[8], m[11], m[_NOSE]])


# --------------------------------------------------------------------------- textures


_PAD = 2


@dataclass(frozen=True)
class Texture:
    """A mask design in the canonical frame: ``bgr`` ``(TH, TW, 3)`` uint8, ``alpha``
    ``(TH, TW)`` uint8 (0 or 255), ``name`` e.g. ``surgical/blue``."""

    name: str
    bgr: np.ndarray
    alpha: np.ndarray

    @functools.cached_property
    def bgra(self) -> np.ndarray:
        """BGR + alpha, padded by ``_PAD`` pixels (BGR replicated, alpha 0): one warp
        gives both, with no dark fringe from the border."""
        bgr = cv2.copyMakeBorder(self.bgr, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_REPLICATE)
        alpha = cv2.copyMakeBorder(self.alpha, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_CONSTANT, value=0)
        return np.dstack([bgr, alpha])


def _curve(p0, p1, p2, n=24) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0, float) + 2 * (1 - t) * t * np.asarray(p1, float) + t**2 * np.asarray(p2, float)


def _outline(style: str) -> np.ndarray:
    """Outline polygon of a style in the canonical frame, ``(N, 2)`` float."""
    W, H = TW, TH
    if style == "surgical":
        top = np.vstack([_curve((0, 0.22 * H), (0.25 * W, 0.02 * H), (0.5 * W, 0.0)), _curve((0.5 * W, 0), (0.75 * W, 0.02 * H), (W, 0.22 * H))])
        bottom = np.vstack([_curve((W, 0.22 * H), (W, 0.75 * H), (0.83 * W, 0.86 * H)), _curve((0.83 * W, 0.86 * H), (0.5 * W, 1.08 * H), (0.17 * W, 0.86 * H)), _curve((0.17 * W, 0.86 * H), (0, 0.75 * H), (0, 0.22 * H))])
    elif style == "cloth":
        top = np.vstack([_curve((0.02 * W, 0.24 * H), (0.2 * W, 0.0), (0.5 * W, 0.0)), _curve((0.5 * W, 0), (0.8 * W, 0.0), (0.98 * W, 0.24 * H))])
        bottom = np.vstack([_curve((0.98 * W, 0.24 * H), (1.0 * W, 0.8 * H), (0.5 * W, 1.0 * H)), _curve((0.5 * W, 1.0 * H), (0.0, 0.8 * H), (0.02 * W, 0.24 * H))])
    elif style == "n95":
        top = np.vstack([_curve((0.04 * W, 0.3 * H), (0.2 * W, -0.02 * H), (0.5 * W, 0.0)), _curve((0.5 * W, 0), (0.8 * W, -0.02 * H), (0.96 * W, 0.3 * H))])
        bottom = np.vstack([_curve((0.96 * W, 0.3 * H), (1.02 * W, 0.9 * H), (0.5 * W, 0.98 * H)), _curve((0.5 * W, 0.98 * H), (-0.02 * W, 0.9 * H), (0.04 * W, 0.3 * H))])
    elif style == "kn95":
        top = np.array([(0.0, 0.24 * H), (0.28 * W, 0.06 * H), (0.5 * W, 0.0), (0.72 * W, 0.06 * H), (W, 0.24 * H)])
        bottom = np.array([(0.97 * W, 0.6 * H), (0.62 * W, 0.93 * H), (0.5 * W, 1.0 * H), (0.38 * W, 0.93 * H), (0.03 * W, 0.6 * H)])
    else:
        raise ValueError(f"unknown mask style {style!r} (known: {', '.join(STYLES)})")
    return np.vstack([top, bottom])


def _shade_line(img, p0, p1, factor, thick):
    """Draw a line darker (factor < 1) or lighter (> 1) than the texture under it."""
    m = np.zeros(img.shape[:2], np.uint8)
    cv2.line(m, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 255, thick, cv2.LINE_AA)
    w = (m.astype(np.float32) / 255.0)[..., None]
    img[:] = np.clip(img * (1 - w + w * factor), 0, 255)


def _draw(style: str, colour: str, pattern: str = "plain") -> Texture:
    W, H = TW, TH
    base = np.array(COLOURS[style][colour], np.float32)
    img = np.empty((H, W, 3), np.float32)
    img[:] = base
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    if style == "surgical":
        for y in (0.36, 0.52, 0.68):  # three pleats: a dark fold line with a light edge
            _shade_line(img, (0, y * H), (W, y * H + 0.02 * H), 0.78, 3)
            _shade_line(img, (0, y * H + 4), (W, y * H + 0.02 * H + 4), 1.06, 2)
        _shade_line(img, (0.3 * W, 0.05 * H), (0.7 * W, 0.05 * H), 0.85, 3)  # nose wire
        _shade_line(img, (0.01 * W, 0.2 * H), (0.01 * W, 0.8 * H), 0.85, 4)  # side hems
        _shade_line(img, (0.99 * W, 0.2 * H), (0.99 * W, 0.8 * H), 0.85, 4)
    elif style == "cloth":
        light = np.clip(base * 1.35 + 40, 0, 255)
        if pattern == "stripes":
            sel = ((yy + 0.4 * xx) // 14) % 2 == 0
            img[sel] = light
        elif pattern == "dots":
            sel = ((xx % 24 - 12) ** 2 + (yy % 24 - 12) ** 2) < 20
            img[sel] = light
        elif pattern == "checks":
            sel = ((xx // 20 + yy // 20) % 2) == 0
            img[sel] = img[sel] * 0.8 + light * 0.2
        noise = np.sin(xx * 1.7) * np.sin(yy * 1.9) * 5  # woven fabric
        img += noise[..., None]
        _shade_line(img, (0.5 * W, 0), (0.5 * W, H), 0.8, 3)  # centre seam
    elif style == "n95":
        # dome: brighter centre, darker towards the rim
        d = ((xx - 0.5 * W) / (0.5 * W)) ** 2 + ((yy - 0.55 * H) / (0.55 * H)) ** 2
        img *= (1.05 - 0.18 * np.clip(d, 0, 1))[..., None]
        cv2.polylines(img, [_outline(style).astype(np.int32)], True, (base * 0.82).tolist(), 7, cv2.LINE_AA)
        _shade_line(img, (0.3 * W, 0.07 * H), (0.7 * W, 0.07 * H), 0.8, 4)
        if pattern == "valve":
            cv2.circle(img, (int(0.72 * W), int(0.6 * H)), 20, (base * 0.6).tolist(), -1, cv2.LINE_AA)
            cv2.circle(img, (int(0.72 * W), int(0.6 * H)), 13, (base * 0.45).tolist(), 2, cv2.LINE_AA)
    elif style == "kn95":
        # folded in two halves: the left half a little darker
        img[:, : W // 2] *= 0.9
        _shade_line(img, (0.5 * W, 0), (0.5 * W, H), 0.72, 3)
        cv2.polylines(img, [_outline(style).astype(np.int32)], True, (base * 0.85).tolist(), 5, cv2.LINE_AA)
    alpha = np.zeros((H, W), np.uint8)
    cv2.fillPoly(alpha, [np.round(_outline(style)).astype(np.int32)], 255)
    name = f"{style}/{colour}" + (f"/{pattern}" if pattern not in ("plain",) else "")
    return Texture(name, np.clip(img, 0, 255).astype(np.uint8), alpha)


def _variants(style: str) -> list[tuple[str, str]]:
    if style == "cloth":
        return [(c, p) for c in COLOURS["cloth"] for p in PATTERNS]
    if style == "n95":
        return [(c, p) for c in COLOURS["n95"] for p in ("plain", "valve")]
    return [(c, "plain") for c in COLOURS[style]]


@functools.lru_cache(maxsize=None)
def drawn_textures(styles: tuple = STYLES) -> tuple[Texture, ...]:
    """Every drawn texture of ``styles`` (cached per process): ``(Texture, ...)``."""
    for s in styles:
        if s not in STYLES:
            raise ValueError(f"unknown mask style {s!r} (known: {', '.join(STYLES)})")
    return tuple(_draw(s, c, p) for s in styles for c, p in _variants(s))


#: cut-out PNGs larger than this many pixels are refused (checked from the PNG header)
MAX_PNG_PIXELS = 1 << 24


def read_rgba_pngs(folder: str | os.PathLike, what: str) -> list[tuple[Path, np.ndarray]]:
    """Every ``.png`` of ``folder`` (sorted by name) as ``(path, (h, w, 4) uint8 BGRA)``.

    Args:
        what: what the images are, for messages (``"mask images"``, ``"object images"``).
    Raises:
        FacekitError: no PNG in the folder; a PNG that is unreadable, larger than
            :data:`MAX_PNG_PIXELS`, or without an alpha channel (names the file).
    """
    from facekit.formats.facerec import image_hw

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()) if folder.is_dir() else []
    if not files:
        raise FacekitError(f"{folder}: no .png {what} in this folder")
    out = []
    for f in files:
        try:
            with open(f, "rb") as fh:
                h, w = image_hw(fh.read(64))
        except (OSError, ValueError) as e:
            raise FacekitError(f"{f}: not a readable PNG ({e})") from None
        if h * w > MAX_PNG_PIXELS:
            raise FacekitError(f"{f}: {w}x{h} pixels is too large for a cut-out (limit {MAX_PNG_PIXELS})")
        img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        if img is None or img.ndim != 3 or img.shape[2] != 4:
            raise FacekitError(f"{f}: not a readable PNG with an alpha channel (RGBA)")
        if img.dtype != np.uint8:
            img = (img / 257).astype(np.uint8)
        out.append((f, img))
    return out


def load_textures(folder: str | os.PathLike) -> tuple[Texture, ...]:
    """A user's mask designs: every ``*.png`` with an alpha channel in ``folder`` (sorted by
    name), resized to the canonical frame. The PNG's frame is placed like the drawn ones:
    left and right edges at the jaw at cheek height, top centre at the nose bridge, bottom
    centre at the chin. Pixels with alpha >= 128 are mask, the rest face.

    Raises:
        FacekitError: the folder has no PNG, or a PNG is unreadable or has no alpha channel
            (names the file).
    """
    out = []
    for f, img in read_rgba_pngs(folder, "mask images"):
        img = cv2.resize(img, (TW, TH), interpolation=cv2.INTER_AREA)
        alpha = np.where(img[:, :, 3] >= 128, 255, 0).astype(np.uint8)
        if not alpha.any():
            raise FacekitError(f"{f}: fully transparent (no mask pixels)")
        out.append(Texture(f"png/{f.stem}", np.ascontiguousarray(img[:, :, :3]), alpha))
    return tuple(out)


# --------------------------------------------------------------------------- render


@dataclass
class MaskResult:
    """What :meth:`MaskRenderer.render` made: ``image`` ``(H, W, 3)`` uint8 BGR, the masked
    face; ``mask`` ``(H, W)`` uint8, 255 clean / 0 occluded (exactly the replaced pixels);
    ``covered`` the number of occluded pixels; ``name`` the texture (e.g. ``cloth/red/dots``)."""

    image: np.ndarray
    mask: np.ndarray
    covered: int
    name: str


class MaskRenderer:
    """Puts a face mask on aligned face crops.

    Args:
        styles: drawn styles to choose from (subset of :data:`STYLES`; empty with a
            ``textures`` folder: only the user's PNGs).
        textures: optional folder of the user's mask PNGs with alpha (:func:`load_textures`).
        texture_p: with ``textures`` and ``styles``, the probability of a user PNG.
        jitter: random variation of the placement, as a fraction of the jaw width.
    Raises:
        ValueError: unknown style or nothing to draw; FacekitError: bad texture folder.
    """

    def __init__(self, styles: Sequence[str] = STYLES, textures=None, texture_p: float = 0.5, jitter: float = 0.04):
        self.drawn = drawn_textures(tuple(styles)) if styles else ()
        self.user = load_textures(textures) if textures is not None else ()
        if not self.drawn and not self.user:
            raise ValueError("no mask style and no texture folder: nothing to draw")
        self.texture_p = 1.0 if not self.drawn else (0.0 if not self.user else float(texture_p))
        self.jitter = float(jitter)
        # the shared face shapes, made here (the main thread) rather than first in a worker
        # thread, where two threads would both make them
        _mean5()
        _anchor_base()

    def choose(self, rng: np.random.Generator) -> Texture:
        """One texture drawn with ``rng`` (user PNG with probability ``texture_p``)."""
        pool = self.user if rng.random() < self.texture_p else self.drawn
        return pool[int(rng.integers(len(pool)))]

    def render(self, image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator, texture: Optional[Texture] = None) -> MaskResult:
        """Mask one aligned face.

        Args:
            image: ``(H, W, 3)`` uint8 BGR aligned crop (not modified).
            landmarks: ``(5, 2)`` float, its five points in crop pixels (for crops without
                their own: :func:`facekit.vision.align.template_for`).
            rng: numpy Generator; the same state gives the same bytes.
            texture: a fixed texture instead of a random choice.
        Returns:
            :class:`MaskResult`.
        Raises:
            ValueError: bad image or landmarks.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        tex = texture if texture is not None else self.choose(rng)
        dst = face_anchors(landmarks)
        scale = float(np.linalg.norm(dst[2] - dst[0]))
        dst = dst + rng.normal(0.0, self.jitter * scale / 2, dst.shape).astype(np.float32)
        H = homography(CANON_ANCHORS, dst)
        # only the mask's bounding box (plus a margin) is warped and shaded
        frame = np.array([[0, 0], [TW, 0], [0, TH], [TW, TH], [TW / 2, 0], [TW / 2, TH], [0, TH / 2], [TW, TH / 2]], np.float64)
        q = frame @ H[:, :2].T + H[:, 2]
        z = frame @ H[2, :2] + H[2, 2]
        if np.any(z <= 1e-9):
            raise ValueError("degenerate landmarks: no placement for the mask")
        q = q[:, :2] / z[:, None]
        x0, y0 = (int(max(0, min(v, lim))) for v, lim in zip(np.floor(q.min(0)) - 2, (w, h)))
        x1, y1 = (int(max(0, min(v, lim))) for v, lim in zip(np.ceil(q.max(0)) + 3, (w, h)))
        out = image.copy()
        mask = np.full((h, w), 255, np.uint8)
        if x1 <= x0 or y1 <= y0:
            return MaskResult(out, mask, 0, tex.name)
        # canonical (padded texture) -> ROI pixels
        T = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64) @ H @ np.array([[1, 0, -_PAD], [0, 1, -_PAD], [0, 0, 1]], np.float64)
        warped = cv2.warpPerspective(tex.bgra, T, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        cover = warped[:, :, 3] >= 128
        n = int(np.count_nonzero(cover))
        if n:
            # brightness around the covered pixels (box blur on the ROI grown by the kernel)
            gx0, gy0, gx1, gy1 = max(0, x0 - 7), max(0, y0 - 7), min(w, x1 + 7), min(h, y1 + 7)
            grey = cv2.cvtColor(image[gy0:gy1, gx0:gx1], cv2.COLOR_BGR2GRAY)
            lum = cv2.blur(grey, (15, 15))[y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0]
            under = lum[cover].astype(np.float32)
            mean = float(under.mean())
            # global: the texture's brightness follows the face's (darker photo, darker
            # mask); local: the face's own shading, softened
            g = np.clip(0.45 + 0.55 * mean / 150.0, 0.35, 1.15)
            local = np.sqrt(np.clip(under * (1.0 / max(mean, 1.0)), 0.7, 1.25))
            shaded = warped[:, :, :3][cover].astype(np.float32) * (g * local)[:, None]
            out[y0:y1, x0:x1][cover] = np.clip(shaded + 0.5, 0, 255).astype(np.uint8)
            mask[y0:y1, x0:x1][cover] = 0
        return MaskResult(out, mask, n, tex.name)


def homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares homography ``(3, 3)`` float64 mapping ``src`` ``(N, 2)`` onto ``dst``
    (N >= 4; normalised DLT with ``h33 = 1``, as ``cv2.findHomography(src, dst, 0)``
    without its refinement step).

    Raises:
        ValueError: degenerate points (no finite solution).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)

    def norm(p):
        c = p.mean(0)
        s = np.sqrt(2) / max(np.sqrt(((p - c) ** 2).sum(1)).mean(), 1e-12)
        return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1]])

    Ts, Td = norm(src), norm(dst)
    a = src @ Ts[:2, :2].T + Ts[:2, 2]
    b = dst @ Td[:2, :2].T + Td[:2, 2]
    n = len(a)
    A = np.zeros((2 * n, 8))
    A[:n, 0:2], A[:n, 2] = a, 1
    A[n:, 3:5], A[n:, 5] = a, 1
    A[:n, 6:8] = -b[:, :1] * a
    A[n:, 6:8] = -b[:, 1:] * a
    h, *_ = np.linalg.lstsq(A, np.concatenate([b[:, 0], b[:, 1]]), rcond=None)
    Hn = np.append(h, 1.0).reshape(3, 3)
    H = np.linalg.inv(Td) @ Hn @ Ts
    if not np.all(np.isfinite(H)) or abs(H[2, 2]) < 1e-12:
        raise ValueError("degenerate landmarks: no placement for the mask")
    return H / H[2, 2]


def seeded_rng(seed: int, *parts) -> np.random.Generator:
    """A numpy Generator for one sample: ``default_rng([seed, *parts])`` with string parts
    hashed by CRC-32 (stable across processes and runs, unlike ``hash``)."""
    import zlib

    ints = [int(seed) & 0xFFFFFFFF]
    for p in parts:
        ints.append(zlib.crc32(p.encode("utf-8", "surrogateescape")) if isinstance(p, str) else int(p) & 0xFFFFFFFF)
    return np.random.default_rng(ints)


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Encode an ``(H, W)`` uint8 occlusion mask as single-channel PNG (lossless)."""
    ok, buf = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover
        raise ValueError("PNG encoding failed")
    return buf.tobytes()
