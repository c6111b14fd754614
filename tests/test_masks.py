"""The mask renderer (facekit.vision.masks): geometry, exact occlusion mask, seeding, textures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facekit.vision.align import template_for
from facekit.errors import FacekitError
from facekit.vision.masks import STYLES, MaskRenderer, drawn_textures, encode_mask_png, face_anchors, fit_68, seeded_rng


def _face(seed=0, size=112):
    """A synthetic face-like crop: skin gradient with darker eyes and mouth."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), (120, 150, 190), np.uint8)
    img = np.clip(img.astype(int) + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    return img


def test_fit_68_lands_on_the_five_points():
    t = template_for(112)
    p = fit_68(t)
    five = np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])
    assert np.abs(five - t).max() < 6.0  # the mean shape fits the ArcFace template closely
    assert p[8, 1] > t[3:, 1].max() + 10  # chin below the mouth
    assert p[1, 0] < t[0, 0] and p[15, 0] > t[1, 0]  # jaw outside the eyes


@pytest.mark.parametrize("style", STYLES)
def test_every_style_covers_nose_and_mouth_not_eyes(style):
    r = MaskRenderer(styles=(style,))
    t = template_for(112)
    for k in range(10):
        res = r.render(_face(k), t, seeded_rng(0, style, k))
        assert res.name.startswith(style)
        m = res.mask
        x = lambda i: (int(round(t[i, 1])), int(round(t[i, 0])))  # noqa: E731
        assert m[x(2)] == 0 and m[x(3)] == 0 and m[x(4)] == 0, res.name
        assert m[x(0)] == 255 and m[x(1)] == 255, res.name
        assert 0.2 <= res.covered / 112**2 <= 0.45, (res.name, res.covered)


def test_mask_is_exactly_the_replaced_pixels():
    r = MaskRenderer()
    img = _face(3)
    for k in range(20):
        res = r.render(img, template_for(112), seeded_rng(1, k))
        changed = np.any(res.image != img, axis=2)
        occluded = res.mask == 0
        assert not np.any(changed & ~occluded)  # nothing drawn outside the mask
        assert changed[occluded].mean() > 0.95  # and the mask is what was drawn
        assert res.covered == int(occluded.sum())
        assert set(np.unique(res.mask)) <= {0, 255}
        png = cv2.imdecode(np.frombuffer(encode_mask_png(res.mask), np.uint8), cv2.IMREAD_UNCHANGED)
        assert png.ndim == 2 and np.array_equal(png, res.mask)


def test_same_seed_same_bytes_other_seed_other_mask():
    r = MaskRenderer()
    img, t = _face(1), template_for(112)
    a = r.render(img, t, seeded_rng(42, "a/b.jpg", 3, 0))
    b = MaskRenderer().render(img, t, seeded_rng(42, "a/b.jpg", 3, 0))
    c = r.render(img, t, seeded_rng(43, "a/b.jpg", 3, 0))
    assert a.image.tobytes() == b.image.tobytes() and a.mask.tobytes() == b.mask.tobytes()
    assert a.image.tobytes() != c.image.tobytes()


def test_mask_follows_the_landmarks():
    """Moving and scaling the landmarks moves and scales the mask with them."""
    r = MaskRenderer(styles=("surgical",), jitter=0.0)
    t = template_for(112)
    tex = r.drawn[0]
    base = r.render(_face(), t, seeded_rng(0), tex)
    shifted = r.render(_face(), t + [6, -4], seeded_rng(0), tex)
    ys, xs = np.nonzero(base.mask == 0)
    ys2, xs2 = np.nonzero(shifted.mask == 0)
    assert abs((xs2.mean() - xs.mean()) - 6) < 1 and abs((ys2.mean() - ys.mean()) + 4) < 1
    big = r.render(_face(size=224), template_for(224), seeded_rng(0), tex)
    assert abs(big.covered / (224**2) - base.covered / 112**2) < 0.03


def test_turned_face_moves_the_nose_ridge():
    t = template_for(112).copy()
    t[2, 0] += 8  # nose tip to the right: a face turned
    a = face_anchors(template_for(112))
    b = face_anchors(t)
    assert b[1, 0] - a[1, 0] > 5  # bridge follows the nose
    assert 0 < b[4, 0] - a[4, 0] < b[1, 0] - a[1, 0]  # chin follows part of the way


def test_at_least_four_styles_in_several_colours():
    names = [t.name for t in drawn_textures()]
    for s in STYLES:
        assert len({n.split("/")[1] for n in names if n.startswith(s + "/")}) >= 3, s
    assert len(STYLES) >= 4


def test_user_png_textures(tmp_path):
    rgba = np.zeros((60, 80, 4), np.uint8)
    rgba[:, :, :3] = (10, 200, 30)
    rgba[5:55, 5:75, 3] = 255
    cv2.imwrite(str(tmp_path / "green.png"), rgba)
    r = MaskRenderer(styles=(), textures=tmp_path)
    res = r.render(_face(), template_for(112), seeded_rng(0))
    assert res.name == "png/green"
    occ = res.mask == 0
    assert 0.15 < occ.mean() < 0.45
    assert res.image[occ][:, 1].mean() > res.image[occ][:, 0].mean() + 50  # green, shaded


def test_bad_texture_folders_name_the_file(tmp_path):
    with pytest.raises(FacekitError, match="no .png mask images"):
        MaskRenderer(textures=tmp_path)
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(FacekitError, match="rgb.png: not a readable PNG with an alpha channel"):
        MaskRenderer(textures=tmp_path)
    (tmp_path / "rgb.png").write_bytes(b"not a png")
    with pytest.raises(FacekitError, match="rgb.png"):
        MaskRenderer(textures=tmp_path)


def test_bad_inputs():
    r = MaskRenderer()
    with pytest.raises(ValueError, match="finite"):
        r.render(_face(), np.full((5, 2), np.nan), seeded_rng(0))
    with pytest.raises(ValueError, match="degenerate"):
        r.render(_face(), np.zeros((5, 2)), seeded_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        r.render(np.zeros((112, 112), np.uint8), template_for(112), seeded_rng(0))
    with pytest.raises(ValueError, match="unknown mask style"):
        MaskRenderer(styles=("bandana",))
