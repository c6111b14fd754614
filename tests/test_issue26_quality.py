"""Quality signals without extra models (issue 26 part 2): blur, pose from five landmarks,
face size, brightness/contrast, the reject rules on them, and a learned quality model on
onnxruntime, on the shared real crops."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from facekit.clean import quality as q
from facekit.clean.quality_onnx import OnnxQuality
from facekit.eval.recognition import ModelError
from facekit.plugins import get_registry
from facekit.vision.align import ARCFACE_TEMPLATE, template_for
from facekit.vision.detection import FACE_TOO_SMALL

KZ = "aligned_identities/kz_celebs_112"


@pytest.fixture(scope="module")
def aligned(data_dir) -> list[np.ndarray]:
    """The eight real faces already on the ArcFace template (112x112)."""
    crops = [cv2.imread(str(p)) for p in sorted((data_dir / "aligned_112").glob("*.jpg"))]
    assert len(crops) == 8
    return crops


@pytest.fixture(scope="module")
def kz(data_dir) -> list[np.ndarray]:
    """Every fourth of the 2,298 real kz_celebs crops (loose 112x112 crops)."""
    files = sorted((data_dir / KZ).glob("*/*.png"))[::4]
    assert len(files) > 500
    return [cv2.imread(str(p)) for p in files]


@pytest.fixture(scope="module")
def detector(scrfd_model):
    cls = get_registry().get("detector", "retinaface")
    return cls(cls.Params(model=scrfd_model))


def _flip(lmk: np.ndarray, width: float) -> np.ndarray:
    """A landmark set mirrored left-right in an image ``width`` wide, in the standard order."""
    f = lmk.copy()
    f[..., 0] = width - f[..., 0]
    return f[..., [1, 0, 2, 4, 3], :]


def _rotate(R):
    yaw, pitch, roll = np.radians(R)
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    rz = np.array([[np.cos(roll), np.sin(roll), 0], [-np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    return rz @ rx @ ry


def _project(angles, distance=None) -> np.ndarray:
    """The 3-D face model turned by ``angles`` (yaw, pitch, roll) and projected: weak
    perspective, or a pinhole camera ``distance`` model units away (focal = distance)."""
    m = q.FACE_MODEL_3D - q.FACE_MODEL_3D.mean(0)
    x = m @ _rotate(angles).T
    xy = x[:, :2] if distance is None else x[:, :2] * distance / (distance - x[:, 2:3])
    return xy + 56.0


# ---------------------------------------------------------------- pose


def test_template_landmarks_give_frontal_pose():
    """issue 26 part 2: an aligned source's landmarks (the ArcFace template, at any crop
    size) give yaw, pitch and roll ~0."""
    for size in (112, 224, 128):
        yaw, pitch, roll = q.head_pose(template_for(size))
        assert abs(yaw) < 0.05 and abs(pitch) < 0.05 and abs(roll) < 0.5, (size, yaw, pitch, roll)
    # the template's own eye line rises 0.19 px over 35.2 px to the right: +0.32 degrees
    assert q.head_pose(ARCFACE_TEMPLATE)[2] == pytest.approx(math.degrees(math.atan2(0.1949, 35.2372)), abs=0.01)


def test_pose_recovers_known_rotations():
    """issue 26 part 2: the 3-D model turned by known angles and projected gives those
    angles back: exactly under weak perspective, within 1.5 degrees through a pinhole
    camera ~100 cm away; the batch call equals the single calls."""
    rng = np.random.default_rng(26)
    angles = rng.uniform([-60, -30, -45], [60, 30, 45], size=(200, 3))
    weak = np.stack([_project(a) for a in angles])
    np.testing.assert_allclose(q.head_pose(weak), angles, atol=1e-3)
    near = np.stack([_project(a, distance=600.0) for a in angles])  # IOD 35 px at 600: ~108 cm
    assert np.abs(q.head_pose(near) - angles).max() < 1.5
    np.testing.assert_array_equal(q.head_pose(weak)[17], q.head_pose(weak[17]))


def test_roll_of_a_rotated_crop(aligned, detector):
    """issue 26 part 2: a real aligned crop turned by +15 degrees (cv2's positive,
    counter-clockwise angle) with its template landmarks turned alike has roll +15 and yaw
    and pitch unchanged; -15 gives -15; and the landmarks SCRFD finds on the turned crops
    give a roll 15 degrees apart from the unturned crop's, within 5 degrees."""
    base = q.head_pose(ARCFACE_TEMPLATE)
    for angle in (15.0, -15.0):
        M = cv2.getRotationMatrix2D((56.0, 56.0), angle, 1.0)
        lmk = np.c_[ARCFACE_TEMPLATE, np.ones(5)] @ M.T
        yaw, pitch, roll = q.head_pose(lmk)
        assert roll - base[2] == pytest.approx(angle, abs=0.01)
        assert abs(yaw - base[0]) < 0.01 and abs(pitch - base[1]) < 0.01
        for crop in aligned:
            turned = cv2.warpAffine(crop, M, (112, 112), borderMode=cv2.BORDER_REPLICATE)
            before = q.head_pose(detector.find_faces(crop).landmarks[0])
            after = q.head_pose(detector.find_faces(turned).landmarks[0])
            assert after[2] - before[2] == pytest.approx(angle, abs=5.0)


def test_yaw_sign_and_flipped_landmarks(data_dir, detector):
    """issue 26 part 2: yaw > 0 is a face turned towards the image's right: a model face
    turned +30 degrees gives +30 and its mirrored landmark set -30; on real kz_celebs
    profiles SCRFD's landmarks give yaw > 45 for a face looking right and < -45 for one
    looking left; mirroring any real landmark set negates yaw and roll, keeps pitch."""
    lmk = _project((30.0, 0.0, 0.0))
    assert q.head_pose(lmk)[0] == pytest.approx(30.0, abs=1e-3)
    assert q.head_pose(_flip(lmk, 112.0))[0] == pytest.approx(-30.0, abs=1e-3)
    right = cv2.imread(str(data_dir / KZ / "Asha_Matai" / "Asha_Matai_0082.png"))
    left = cv2.imread(str(data_dir / KZ / "Ali_Okapov" / "Ali_Okapov_0078.png"))
    l_right = detector.find_faces(right).landmarks[0]
    l_left = detector.find_faces(left).landmarks[0]
    assert q.head_pose(l_right)[0] > 45
    assert q.head_pose(l_left)[0] < -45
    for lm in (l_right, l_left):
        yaw, pitch, roll = q.head_pose(lm)
        fy, fp, fr = q.head_pose(_flip(lm, 112.0))
        assert (fy, fp, fr) == pytest.approx((-yaw, pitch, -roll), abs=1e-3)


def test_pose_of_bad_landmarks():
    """issue 26 part 2: landmarks that are not finite or all on one line give NaN (a
    face judged by max_yaw is then rejected); a wrong shape is a one-line ValueError."""
    lmk = np.stack([ARCFACE_TEMPLATE, ARCFACE_TEMPLATE, np.zeros((5, 2), np.float32)])
    lmk[1, 2, 0] = np.nan
    lmk[2, :, 0] = np.arange(5)  # collinear
    out = q.head_pose(lmk)
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all() and np.isnan(out[2]).all()
    with pytest.raises(ValueError, match=r"\(5, 2\) or \(N, 5, 2\)"):
        q.head_pose(np.zeros((4, 2)))


# ---------------------------------------------------------------- pixels


def test_blur_lower_on_blurred_copies(aligned, kz):
    """issue 26 part 2: the Laplacian variance of every real crop (8 aligned_112, 575
    kz_celebs) falls on its Gaussian-blurred copy (sigma 1.5 px), and the sharp aligned
    crops stay above what their blurred copies reach."""
    crops = aligned + kz
    sharp = q.pixel_signals(crops)[:, 0]
    blurred = q.pixel_signals([cv2.GaussianBlur(c, (0, 0), 1.5) for c in crops])[:, 0]
    assert (blurred < sharp).all(), np.nonzero(blurred >= sharp)[0]
    assert sharp[:8].min() > 50 > blurred[:8].max()


def test_pixel_signals_match_the_definition(aligned, kz):
    """issue 26 part 2: batch results (list or stacked array, mixed sizes) equal the
    per-crop definition: cv2.Laplacian CV_64F variance, grey mean and standard deviation
    inside the face window."""
    crops = aligned[:3] + kz[:5] + [cv2.resize(aligned[0], (224, 224))]
    got = q.pixel_signals(crops)
    for c, row in zip(crops, got):
        h, w = c.shape[:2]
        x0, y0, x1, y1 = q.FACE_WINDOW
        ys, xs = slice(round(y0 * h), round(y1 * h)), slice(round(x0 * w), round(x1 * w))
        grey = cv2.cvtColor(c, cv2.COLOR_BGR2GRAY)
        lap = cv2.Laplacian(grey, cv2.CV_64F)[ys, xs]
        win = grey[ys, xs].astype(np.float64)
        np.testing.assert_allclose(row, [lap.var(), win.mean(), win.std()], rtol=1e-5)
    np.testing.assert_array_equal(q.pixel_signals(np.stack(kz[:5])), got[3:8])


def test_darkened_copy_is_darker(aligned, kz):
    """issue 26 part 2: a real crop at half brightness has a lower brightness and contrast
    than the crop; a brightened one a higher brightness."""
    crops = aligned + kz[:100]
    base = q.pixel_signals(crops)
    dark = q.pixel_signals([(c * 0.5).astype(np.uint8) for c in crops])
    bright = q.pixel_signals([cv2.convertScaleAbs(c, alpha=1.0, beta=40) for c in crops])
    assert (dark[:, 1] < base[:, 1]).all() and (dark[:, 2] < base[:, 2]).all()
    assert (bright[:, 1] > base[:, 1]).all()
    assert 100 < base[:8, 1].min() and base[:8, 1].max() < 200


def test_bad_crops_are_named():
    """issue 26 part 2: a crop that is not an (H, W, 3) uint8 image is a one-line error
    naming its index."""
    good = np.zeros((112, 112, 3), np.uint8)
    with pytest.raises(ValueError, match="crop 1: expected an \\(H, W, 3\\) uint8"):
        q.pixel_signals([good, good.astype(np.float32)])
    with pytest.raises(ValueError, match="crop 0: 4x4 pixels"):
        q.pixel_signals([np.zeros((4, 4, 3), np.uint8)])


# ---------------------------------------------------------------- per face, size


def test_face_size_and_compute_quality(aligned):
    """issue 26 part 2: face size is the box's shorter side in source pixels (detection's
    min_size measure) or, without a box, BOX_PER_EYE_DISTANCE x the eye distance; a batch
    of aligned crops with template landmarks gets ~0 pose, and every signal as a float32
    column."""
    iod, side = q.face_size(ARCFACE_TEMPLATE, np.array([10, 20, 90, 120]))
    assert iod == pytest.approx(35.2377, abs=1e-3) and side == 80
    assert q.face_size(ARCFACE_TEMPLATE)[1] == pytest.approx(q.BOX_PER_EYE_DISTANCE * iod)
    lmk = np.repeat(ARCFACE_TEMPLATE[None], len(aligned), 0)
    faces = q.compute_quality(aligned, lmk, embedding_norms=np.full(8, 21.5))
    assert len(faces) == 8
    for f in faces:
        assert abs(f.yaw) < 0.05 and abs(f.pitch) < 0.05 and abs(f.roll) < 0.5
        row = f.as_row()
        assert tuple(row) == q.QUALITY_COLUMNS and row["embedding_norm"] == 21.5 and math.isnan(row["quality"])
    with pytest.raises(ValueError, match="landmarks has shape"):
        q.compute_quality(aligned, lmk[:3])


# ---------------------------------------------------------------- judge


def _face(**kw) -> q.FaceQuality:
    base = dict(blur=300.0, yaw=5.0, pitch=-3.0, roll=1.0, inter_ocular=40.0, face_size=90.0, brightness=130.0,
                contrast=40.0, embedding_norm=20.0, quality=0.5)
    return q.FaceQuality(**{**base, **kw})


ALL = q.QualityThresholds(min_blur=50, max_yaw=45, max_pitch=30, min_brightness=40, max_brightness=220,
                          min_contrast=15, min_embedding_norm=10, min_face_size=32, min_quality=0.2)


@pytest.mark.parametrize(
    "change, reason",
    [
        (dict(blur=49.9), "blurry"),
        (dict(yaw=-45.5), "extreme_pose"),
        (dict(pitch=31.0), "extreme_pose"),
        (dict(brightness=39.0), "too_dark"),
        (dict(brightness=221.0), "too_bright"),
        (dict(contrast=14.0), "low_contrast"),
        (dict(embedding_norm=9.0), "low_embedding_norm"),
        (dict(face_size=31.0), FACE_TOO_SMALL),
        (dict(quality=0.1), "low_quality"),
        (dict(embedding_norm=math.nan), "low_embedding_norm"),
    ],
)
def test_judge_reasons(change, reason):
    """issue 26 part 2: each threshold rejects with its own reason just past it, keeps at
    it, and a NaN signal under a set threshold is rejected, never kept unchecked."""
    assert q.judge(_face(), ALL) == []
    got = q.judge(_face(**change), ALL)
    assert [r for r, _ in got] == [reason], got
    key = next(iter(change))
    assert key in got[0][1]
    at = {"blur": 50.0, "yaw": -45.0, "pitch": 30.0, "contrast": 15.0, "embedding_norm": 10.0, "face_size": 32.0,
          "quality": 0.2, "brightness": 40.0 if reason == "too_dark" else 220.0}[key]
    assert q.judge(_face(**{key: at}), ALL) == []


def test_judge_unset_thresholds_and_config():
    """issue 26 part 2: unset thresholds check nothing (NaN signals pass), several
    failures give several reasons, face_too_small is detection's reason, and the
    thresholds model refuses unknown keys and negative limits."""
    nan = _face(blur=math.nan, yaw=math.nan, embedding_norm=math.nan, quality=math.nan)
    assert q.judge(nan, q.QualityThresholds()) == []
    bad = _face(blur=1.0, yaw=80.0, brightness=10.0)
    assert [r for r, _ in q.judge(bad, ALL)] == ["too_dark", "blurry", "extreme_pose"]  # exposure first
    assert q.FACE_TOO_SMALL == FACE_TOO_SMALL == "face_too_small"
    with pytest.raises(ValidationError, match="max_yaws"):
        q.QualityThresholds(max_yaws=30)
    with pytest.raises(ValidationError, match="min_blur"):
        q.QualityThresholds(min_blur=-1)


# ---------------------------------------------------------------- learned quality model


def _quality_model(path: Path, outputs=1, width=1, size=112) -> Path:
    """An ONNX 'quality model': the mean of its normalised input (N x 3 x size x size) per
    face, as N x ``width`` (``outputs`` copies)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1, 2, 3], keepdims=0)]
    nodes.append(helper.make_node("Unsqueeze", ["m", "ax"], ["m1"]))
    nodes.append(helper.make_node("Tile", ["m1", "reps"], ["score"]))
    inits = [helper.make_tensor("ax", TensorProto.INT64, [1], [1]),
             helper.make_tensor("reps", TensorProto.INT64, [2], [1, width])]
    outs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", width])]
    for k in range(1, outputs):
        nodes.append(helper.make_node("Identity", ["score"], [f"score{k}"]))
        outs.append(helper.make_tensor_value_info(f"score{k}", TensorProto.FLOAT, ["N", width]))
    graph = helper.make_graph(nodes, "mean_quality", [x], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_onnx_quality_model(tmp_path, aligned):
    """issue 26 part 2: OnnxQuality runs a one-input, one-score ONNX model on aligned crops
    with the recognizer's preprocessing (RGB, (x - 127.5) / 127.5): here the score is the
    mean of that tensor, checked by hand; crops of another size are resized."""
    model = OnnxQuality(_quality_model(tmp_path / "mean.onnx"))
    scores = model.score(aligned)
    assert scores.shape == (8,) and scores.dtype == np.float32
    expected = [((c[:, :, ::-1].astype(np.float32) - 127.5) / 127.5).mean() for c in aligned]
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    dark = model.score([(c * 0.5).astype(np.uint8) for c in aligned])
    assert (dark < scores).all()
    big = model.score([cv2.resize(aligned[0], (224, 224), interpolation=cv2.INTER_CUBIC)])
    assert big[0] == pytest.approx(expected[0], abs=0.02)
    assert model.score([]).shape == (0,)
    faces = q.compute_quality(aligned, np.repeat(ARCFACE_TEMPLATE[None], 8, 0), scores=scores)
    assert [f.quality for f in faces] == pytest.approx(scores.tolist())


def test_onnx_quality_refuses_other_models(tmp_path, rec_model):
    """issue 26 part 2: a model with two outputs, or one giving several values per face
    (an embedding model such as the shared MobileFaceNet), is a one-line ModelError."""
    with pytest.raises(ModelError, match="one output"):
        OnnxQuality(_quality_model(tmp_path / "two.onnx", outputs=2))
    with pytest.raises(ModelError, match="not one score per face"):
        OnnxQuality(_quality_model(tmp_path / "wide.onnx", width=4))
    with pytest.raises(ModelError, match="not one score per face"):
        OnnxQuality(rec_model)
