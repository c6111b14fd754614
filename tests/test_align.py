"""facekit's arcface aligner equals insightface.utils.face_align.norm_crop pixel for pixel."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from facekit.vision.align import box_crop, estimate_norm, norm_crop, template_for

GROUP = "images/group/insightface_t1.jpg"


@pytest.fixture(scope="module")
def real_faces(data_dir, scrfd_model):
    """Real images with SCRFD landmarks: the six faces of t1.jpg and one per identity."""
    from insightface.model_zoo import get_model

    det = get_model(str(scrfd_model), providers=["CPUExecutionProvider"])
    det.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=0.5)
    out = []
    paths = [data_dir / GROUP] + sorted((data_dir / "images" / "identities").glob("*/*_0001.jpg"))[:10]
    for p in paths:
        img = cv2.imread(str(p))
        _, kps = det.detect(img, input_size=(640, 640))
        out += [(img, k) for k in kps]
    assert len(out) >= 12
    return out


@pytest.mark.parametrize("size", [112, 224, 128, 256])
def test_norm_crop_equals_insightface(real_faces, size):
    from insightface.utils.face_align import norm_crop as reference

    for img, lmk in real_faces:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skimage's estimate() deprecation inside insightface
            want = reference(img, lmk, image_size=size)
        got = norm_crop(img, lmk, size)
        assert got.shape == (size, size, 3) and got.dtype == np.uint8
        assert np.array_equal(got, want), f"{int((got != want).sum())} values differ at size {size}"


def test_aligner_plugin_uses_same_crop(real_faces):
    from facekit.plugins import get_registry

    cls = get_registry().get("aligner", "arcface")
    aligner = cls(cls.Params(size=112))
    img, lmk = real_faces[0]
    assert np.array_equal(aligner.align(img, None, lmk), norm_crop(img, lmk, 112))


def test_template_rules():
    assert np.allclose(template_for(112)[0], [38.2946, 51.6963])
    assert np.allclose(template_for(224), template_for(112) * 2)
    t128 = template_for(128)
    assert np.allclose(t128[:, 0], template_for(112)[:, 0] + 8) and np.allclose(t128[:, 1], template_for(112)[:, 1])
    with pytest.raises(ValueError, match="multiple of 112 or 128"):
        template_for(100)
    # landmarks already on the template map to the identity transform
    M = estimate_norm(template_for(112), 112)
    assert np.allclose(M, [[1, 0, 0], [0, 1, 0]], atol=1e-4)
    with pytest.raises(ValueError):
        estimate_norm(np.zeros((4, 2)))


def test_box_crop_margin():
    img = np.zeros((200, 300, 3), np.uint8)
    img[50:150, 100:200] = 255
    crop = box_crop(img, np.array([100, 50, 200, 150], np.float32), size=112, margin=0)
    assert crop.shape == (112, 112, 3) and crop.min() == 255
    crop = box_crop(img, np.array([100, 50, 200, 150], np.float32), size=144, margin=44)
    assert crop[0, 0].max() == 0 and crop[72, 72].min() == 255


def test_aligners_report_their_transform_and_aligned_landmarks(real_faces):
    """Issue 9 item 5 (used by masks): the arcface aligner's crop still equals norm_crop, its
    transform is estimate_norm's, and the worker's aligned landmarks sit on the template; the
    boxcrop transform is the map its resize applies."""
    from facekit.plugins import get_registry

    reg = get_registry()
    arc = reg.get("aligner", "arcface")(reg.get("aligner", "arcface").Params(size=112))
    box = reg.get("aligner", "boxcrop")(reg.get("aligner", "boxcrop").Params(size=112, margin=44))
    dists = []
    for img, lmk in real_faces:
        crop, M = arc.align_face(img, None, lmk)
        assert np.array_equal(crop, norm_crop(img, lmk, 112))
        assert np.array_equal(M, estimate_norm(lmk, 112))
        aligned = lmk @ M[:, :2].T + M[:, 2]
        dists.append(np.linalg.norm(aligned - template_for(112), axis=1).mean())
        b = np.array([lmk[:, 0].min() - 20, lmk[:, 1].min() - 30, lmk[:, 0].max() + 20, lmk[:, 1].max() + 25])
        want = box_crop(img, b, 112, 44)
        Mb = box.transform(img.shape, b, lmk)
        got = cv2.warpAffine(img, Mb, (112, 112), flags=cv2.INTER_LINEAR)
        assert np.abs(got.astype(int) - want.astype(int))[4:-4, 4:-4].mean() < 2.0
    assert max(dists) < 10.0, dists  # crop coordinates: within a few pixels of the template


def test_worker_sets_aligned_landmarks(data_dir, scrfd_model, tmp_path):
    from conftest import write_config
    from facekit.pipeline.config import load_config
    from facekit.stages import Sample
    from facekit.pipeline.worker import ShardWorker

    (tmp_path / "root").mkdir()
    cfg = write_config(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: root}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        aligner: {{plugin: arcface}}
        sinks: [{{plugin: folders, path: faces}}]
        """)
    w = ShardWorker(load_config(cfg))
    path = str(data_dir / "images/identities/Anthony_Hopkins/Anthony_Hopkins_0001.jpg")
    (s,) = w.process([Sample(0, path, "a")])[0].samples
    assert s.transform.shape == (2, 3) and s.aligned_landmarks.shape == (5, 2)
    want = s.landmarks @ s.transform[:, :2].T + s.transform[:, 2]
    assert np.allclose(s.aligned_landmarks, want, atol=1e-4)
    assert np.linalg.norm(s.aligned_landmarks - template_for(112), axis=1).max() < 8


def test_umeyama_bit_identical_to_scikit_image(real_faces):
    """estimate_norm's numpy Umeyama gives the very matrix scikit-image's
    SimilarityTransform (what insightface's estimate_norm calls) gives: on the real
    detections, on random float32 / float64 landmarks, mirrored and near-degenerate ones."""
    from skimage.transform import SimilarityTransform

    from facekit.vision.align import umeyama

    def reference(src, dst):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = SimilarityTransform()
            t.estimate(src, dst)
        return t.params

    rng = np.random.default_rng(13)
    cases = [lmk for _, lmk in real_faces]
    for _ in range(300):
        lmk = template_for(112) * rng.uniform(0.2, 30) + rng.uniform(-500, 3000, 2)
        lmk = lmk + rng.normal(0, rng.uniform(0, 20), (5, 2))
        cases.append(lmk.astype(rng.choice([np.float32, np.float64])))
    cases.append(cases[-1] * np.array([-1, 1], cases[-1].dtype))  # mirrored: det(A) < 0
    cases.append(np.tile(np.float32([[10, 20]]), (5, 1)) + np.float32([[0, 0]] * 4 + [[1e-3, 0]]))
    for lmk in cases:
        for size in (112, 224, 128):
            dst = template_for(size)
            want = reference(lmk, dst)
            got = umeyama(lmk, dst)
            assert np.array_equal(got, want, equal_nan=True), (lmk, got, want)
            assert got.dtype == want.dtype


def test_estimate_norm_does_not_import_scikit_image():
    """Aligning must not import scikit-image / SciPy (~0.1-0.2 s of start-up per worker)."""
    code = (
        "import sys, numpy as np\n"
        "from facekit.vision.align import norm_crop, template_for\n"
        "norm_crop(np.zeros((200, 200, 3), np.uint8), template_for(112) + 30)\n"
        "bad = [m for m in ('skimage', 'scipy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", code], check=True)


def test_estimate_norm_degenerate_landmarks():
    with pytest.raises(ValueError, match="degenerate"):
        estimate_norm(np.full((5, 2), 7.0, np.float32))
