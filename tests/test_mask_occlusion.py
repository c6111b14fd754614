"""Online occlusions (facekit.vision.occlusion) and OccludedFaceDataset (facekit.torch)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import link_aligned_112, write_config

from facekit.vision.align import template_for
from facekit.vision.occlusion import (
    NoOcclusion,
    RandomEllipse,
    RandomFaceMask,
    RandomObject,
    RandomPolygon,
    RandomRectangle,
    default_occluders,
)


def _img(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (112, 112, 3)).astype(np.uint8)


def _check(img, out, msk):
    changed = np.any(out != img, axis=2)
    assert msk.dtype == np.uint8 and msk.shape == img.shape[:2]
    assert set(np.unique(msk)) <= {0, 255}
    assert not np.any(changed & (msk == 255))  # nothing changed outside the mask


def test_rectangle_mask_is_the_rectangle_not_the_image():
    """MSML's RandomRect paints its mask with the image's size instead of the rectangle's
    (the mask overstates the occlusion): here it is exactly the rectangle."""
    occ = RandomRectangle(seed=0)
    ratios = []
    for k in range(200):
        img = _img(k)
        out, msk = occ(img)
        _check(img, out, msk)
        ys, xs = np.nonzero(msk == 0)
        if len(ys):
            box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
            assert box == len(ys)  # a full axis-aligned rectangle
        ratios.append(len(ys) / 112**2)
    assert max(ratios) < 0.36 + 0.02 and min(ratios) < 0.05
    assert 0.12 < np.mean(ratios) < 0.24


@pytest.mark.parametrize("cls,lo,hi", [(RandomEllipse, 0.15, 0.42), (RandomPolygon, 0.15, 0.6)])
def test_ellipse_and_polygon_areas(cls, lo, hi):
    occ = cls(seed=1)
    areas = []
    for k in range(60):
        img = _img(k)
        out, msk = occ(img)
        _check(img, out, msk)
        areas.append((msk == 0).mean())
        n, _ = cv2.connectedComponents((msk == 0).astype(np.uint8))
        assert n == 2  # one connected occluder (plus background)
    assert lo < np.mean(areas) < hi


def test_face_mask_kind_and_pil_round_trip():
    from PIL import Image

    occ = RandomFaceMask(seed=0)
    pil = Image.fromarray(_img(2))
    out, msk = occ(pil)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and msk.mode == "L"
    m = np.array(msk)
    t = template_for(112)
    assert m[int(t[2, 1]), int(t[2, 0])] == 0 and m[int(t[0, 1]), int(t[0, 0])] == 255
    grey, gm = occ(pil.convert("L"))
    assert grey.mode == "L" and 0.2 < (np.array(gm) == 0).mean() < 0.45


def test_masks_accumulate_and_seed_repeats():
    img = _img(3)
    a, ma = RandomEllipse(seed=5)(img)
    b, mb = RandomRectangle(seed=6)(a, ma)
    assert np.all(mb[ma == 0] == 0)
    a2, _ = RandomEllipse(seed=5)(img)
    assert np.array_equal(a, a2)
    out, msk = NoOcclusion()(img)
    assert np.array_equal(out, img) and (msk == 255).all()


def _objects(tmp_path):
    for name, size in (("glasses", (30, 90)), ("scarf", (60, 100)), ("any", (40, 40))):
        d = tmp_path / name
        d.mkdir()
        rgba = np.zeros(size + (4,), np.uint8)
        rgba[:, :, :3] = (0, 0, 255)
        rgba[2:-2, 2:-2, 3] = 255
        cv2.imwrite(str(d / f"{name}.png"), rgba)
    return {k: tmp_path / k for k in ("glasses", "scarf", "any")}


def test_objects_placed_by_template_landmarks(tmp_path):
    objs = _objects(tmp_path)
    t = template_for(112)
    for k in range(10):
        img = _img(k)
        g_img, g = RandomObject(objs["glasses"], "glasses", seed=k)(img)
        _check(img, g_img, g)
        assert g[int(t[0, 1]), int(t[0, 0])] == 0 and g[int(t[1, 1]), int(t[1, 0])] == 0  # over both eyes
        assert g[int(t[3, 1]), int(t[3, 0])] == 255  # not the mouth
        assert (g_img[g == 0] == (255, 0, 0)).all()  # the object's pixels (RGB out)
        s_img, s = RandomObject(objs["scarf"], "scarf", seed=k)(img)
        assert s[int(t[3, 1]), int(t[3, 0])] == 0 and s[int(t[4, 1]), int(t[4, 0])] == 0  # mouth
        assert s[int(t[0, 1]), int(t[0, 0])] == 255  # not the eyes
        a_img, a = RandomObject(objs["any"], "any", seed=k)(img)
        _check(img, a_img, a)
    with pytest.raises(Exception, match="no .png object images"):
        RandomObject(tmp_path / "missing", "any")


@pytest.fixture(scope="module")
def masked_folder(tmp_path_factory, data_dir):
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run

    tmp = tmp_path_factory.mktemp("ds")
    link_aligned_112(data_dir, tmp / "aligned")
    cfg = write_config(tmp, """
        output: out
        source: {plugin: folders, root: aligned}
        augmenters: [{plugin: facemask}]
        sinks: [{plugin: masked_rec, path: rec}]
        """)
    run(load_config(cfg), progress=False)
    return tmp / "out" / "rec"


def test_dataset_offline_mask_and_labels(masked_folder):
    torch = pytest.importorskip("torch")
    from facekit.formats.recordio import IndexedRecordIOReader, unpack
    from facekit.torch import OccludedFaceDataset

    ds = OccludedFaceDataset(masked_folder, p_mask=1.0, flip=False, illumination=False, seed=0)
    assert len(ds) == 8
    mr = IndexedRecordIOReader(masked_folder / "mask.idx", masked_folder / "mask.rec")
    tsv = [ln.split("\t") for ln in (masked_folder / "mask.tsv").read_text().splitlines()[1:]]
    for i in range(8):
        x, m, y = ds[i]
        assert x.shape == (3, 112, 112) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        assert m.shape == (112, 112) and m.dtype == torch.int32
        assert int(y) == (0 if i < 4 else 1) == int(tsv[i][1])
        want = cv2.imdecode(np.frombuffer(unpack(mr.read_idx(i + 1))[1], np.uint8), cv2.IMREAD_GRAYSCALE) > 128
        assert np.array_equal(m.numpy() == 1, want)
        assert int((m == 0).sum()) == int(tsv[i][3])


def test_dataset_flips_image_and_mask_together(masked_folder):
    pytest.importorskip("torch")
    from facekit.torch import OccludedFaceDataset, RandomRectangle

    plain = OccludedFaceDataset(masked_folder, p_mask=1.0, flip=False, illumination=False, seed=3)
    flipped = 0
    for seed in range(8):
        ds = OccludedFaceDataset(masked_folder, p_mask=1.0, flip=True, illumination=False, seed=seed)
        ref = OccludedFaceDataset(masked_folder, p_mask=1.0, flip=False, illumination=False, seed=seed)
        x, m, _ = ds[2]
        x0, m0, _ = ref[2]
        if not np.array_equal(m.numpy(), m0.numpy()):
            flipped += 1
            assert np.array_equal(m.numpy(), m0.numpy()[:, ::-1])
            assert np.allclose(x.numpy(), x0.numpy()[:, :, ::-1])
    assert 0 < flipped < 8
    # an online kind only: the mask marks exactly the rectangle
    ds = OccludedFaceDataset(masked_folder, p_mask=0.0, occluders=[RandomRectangle(area=(0.1, 0.2))], flip=False, illumination=False, seed=1)
    x, m, _ = ds[0]
    ys, xs = np.nonzero(m.numpy() == 0)
    assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    assert plain[0][0].shape == x.shape


def test_dataset_mixing_rate_and_dataloader(masked_folder):
    torch = pytest.importorskip("torch")
    from facekit.torch import OccludedFaceDataset

    from facekit.torch import NoOcclusion

    # online kind "none" (mask all clean) vs the offline mask: count the offline draws
    ds = OccludedFaceDataset(masked_folder, p_mask=0.2, occluders=[NoOcclusion()], size=(96, 96), seed=0)
    offline, n = 0, 0
    for e in range(40):
        ds.set_epoch(e)
        for i in range(8):
            x, m, _ = ds[i]
            assert x.shape == (3, 96, 96) and m.shape == (96, 96)
            offline += bool((m == 0).any())
            n += 1
    assert 0.12 < offline / n < 0.28
    ds = OccludedFaceDataset(masked_folder, p_mask=0.2, size=(96, 96))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    xs, ms, ys = next(iter(loader))
    assert xs.shape == (4, 3, 96, 96) and ms.shape == (4, 96, 96) and ys.tolist() == [0, 0, 0, 0]


def test_default_occluders_kinds(tmp_path):
    objs = _objects(tmp_path)
    kinds = [type(o).__name__ for o in default_occluders(objs)]
    assert kinds == ["NoOcclusion", "RandomRectangle", "RandomEllipse", "RandomPolygon", "RandomObject", "RandomObject", "RandomObject"]


def test_dataset_pickles_without_open_files(masked_folder):
    """Spawned DataLoader workers get the dataset by pickle: open mask readers stay behind
    and each process reopens its own."""
    import pickle

    pytest.importorskip("torch")
    from facekit.torch import OccludedFaceDataset

    ds = OccludedFaceDataset(masked_folder, p_mask=1.0, flip=False, illumination=False, seed=0)
    x, m, y = ds[1]
    assert ds._readers is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._readers is None
    x2, m2, y2 = clone[1]
    assert np.array_equal(x.numpy(), x2.numpy()) and np.array_equal(m.numpy(), m2.numpy()) and int(y) == int(y2)
