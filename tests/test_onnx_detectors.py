"""The ONNX detectors on real photos and real models: SCRFD decoded by facekit (identical to
insightface's), the RetinaFace-MobileNet0.25 export, YuNet (against cv2.FaceDetectorYN), and
the validate-time checks of model, threads and providers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import _missing, _model, facekit_cli, write_config
from facekit.errors import SampleRejected
from facekit.plugins import get_registry

GROUP = "images/group/insightface_t1.jpg"
PHOTO_FOLDERS = ("identities", "group", "negatives", "edge_cases")


def _detector(name, **params):
    cls = get_registry().get("detector", name)
    return cls(cls.Params(**params))


def _photos(data_dir: Path) -> list[Path]:
    files = []
    for folder in PHOTO_FOLDERS:
        files += sorted(p for p in (data_dir / "images" / folder).rglob("*") if p.is_file())
    return files


@pytest.fixture(scope="module")
def group_image(data_dir):
    return cv2.imread(str(data_dir / GROUP))


@pytest.fixture(scope="module")
def retinaface_export(data_dir) -> Path:
    return _model(data_dir, "detection/retinaface_mbnet0.25.onnx")


@pytest.fixture(scope="module")
def yunet_model(data_dir) -> Path:
    return _model(data_dir, "detection/yunet_s_640_640.onnx")


def _match(boxes_a, boxes_b):
    """For each box of ``a``, the index of the ``b`` box with the highest IoU, and that IoU."""
    x1 = np.maximum(boxes_a[:, None, 0], boxes_b[None, :, 0])
    y1 = np.maximum(boxes_a[:, None, 1], boxes_b[None, :, 1])
    x2 = np.minimum(boxes_a[:, None, 2], boxes_b[None, :, 2])
    y2 = np.minimum(boxes_a[:, None, 3], boxes_b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    iou = inter / (area(boxes_a)[:, None] + area(boxes_b)[None, :] - inter)
    j = iou.argmax(1)
    return j, iou[np.arange(len(j)), j]


def _landmarks_agree(faces, reference, tolerance):
    """Both find the same faces; each landmark within ``tolerance`` x the reference box's
    shorter side of the reference's (so the order is the same: swapped eyes are ~0.4 apart)."""
    j, iou = _match(reference.boxes, faces.boxes)
    assert len(set(j)) == len(reference) and iou.min() > 0.5
    side = np.minimum(reference.boxes[:, 2] - reference.boxes[:, 0], reference.boxes[:, 3] - reference.boxes[:, 1])
    dist = np.linalg.norm(faces.landmarks[j] - reference.landmarks, axis=2)  # (N, 5) pixels
    assert np.all(dist <= tolerance * side[:, None]), (dist / side[:, None]).max()
    return dist.max()


# --------------------------------------------------------------------------- SCRFD


@pytest.mark.parametrize("shape", [(1, 1), (7, 1000), (1000, 7), (640, 640), (641, 639), (480, 853), (1200, 900)])
@pytest.mark.parametrize("size", [(640, 640), (320, 480)])
def test_letterbox_blob_equals_blob_from_image_of_the_letterbox(shape, size, monkeypatch):
    """The fused letterbox + input conversion SCRFD uses = blobFromImage on the canvas, bit
    for bit. The blob starts uninitialised (``np.empty``): here NaN-filled, so a part left
    unwritten cannot pass by chance."""
    from facekit.vision.onnxdet import letterbox, letterbox_blob

    empty = np.empty

    def nan_empty(shape, dtype=float, *a, **k):
        out = empty(shape, dtype, *a, **k)
        if np.issubdtype(out.dtype, np.floating):
            out.fill(np.nan)
        return out

    monkeypatch.setattr(np, "empty", nan_empty)

    img = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    canvas, scale = letterbox(img, size)
    ref = cv2.dnn.blobFromImage(canvas, 1.0 / 128.0, size, (127.5, 127.5, 127.5), swapRB=True)
    blob, scale2 = letterbox_blob(img, size)
    assert blob.dtype == np.float32 and blob.shape == ref.shape == (1, 3, size[1], size[0])
    assert scale2 == scale
    assert np.array_equal(blob, ref)


@pytest.mark.parametrize("model", ["scrfd_500m_bnkps.onnx", "scrfd_2.5g_bnkps_dynamic.onnx"])
def test_scrfd_identical_to_insightface_on_every_photo(data_dir, model):
    """facekit's SCRFD decoding = insightface SCRFD.detect at one input size, to the bit."""
    try:
        from insightface.model_zoo import scrfd as scrfd_ref
    except ImportError:
        _missing("insightface (the reference) not installed: pip install -e '.[test]'")
    path = _model(data_dir, f"detection/{model}")
    ref = scrfd_ref.SCRFD(model_file=str(path))
    ref.prepare(-1, input_size=(640, 640), det_thresh=0.5, nms_thresh=0.4)
    det = _detector("retinaface", model=path)
    photos = _photos(data_dir)
    assert len(photos) >= 100
    total = 0
    for p in photos:
        img = cv2.imread(str(p))
        assert img is not None, p
        bboxes, kpss = ref.detect(img, input_size=(640, 640))
        got = det.detect(img)
        assert len(got) == len(bboxes), p
        assert np.array_equal(got.boxes, bboxes[:, :4]), p
        assert np.array_equal(got.scores, bboxes[:, 4]), p
        assert np.array_equal(got.landmarks, kpss.reshape(-1, 5, 2)), p
        total += len(bboxes)
    assert total > 90


def test_retinaface_detector_runs_without_insightface(scrfd_model, retinaface_export, data_dir):
    """The detector decodes SCRFD itself: insightface (whose 0.7.3 routes these models to
    another class) is not imported at all."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["insightface"] = None  # any import of it fails
        import cv2
        from facekit.plugins import get_registry
        cls = get_registry().get("detector", "retinaface")
        img = cv2.imread(sys.argv[3])
        for model in sys.argv[1:3]:
            print(len(cls(cls.Params(model=model, select="all")).find_faces(img)))
        assert not any(m == "insightface" or m.startswith("insightface.") for m in sys.modules if sys.modules[m])
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(scrfd_model), str(retinaface_export), str(data_dir / GROUP)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["6", "6"]


def test_threads_and_providers_reach_onnxruntime(scrfd_model, group_image):
    one = _detector("retinaface", model=scrfd_model, threads=1, select="all")
    so = one.model.session.get_session_options()
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
    assert one.model.session.get_providers() == ["CPUExecutionProvider"]
    default = _detector("retinaface", model=scrfd_model, select="all")
    assert default.model.session.get_session_options().intra_op_num_threads == 0
    a, b = one.find_faces(group_image), default.find_faces(group_image)
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.landmarks, b.landmarks)


# --------------------------------------------------------------------------- RetinaFace export


def test_retinaface_export_finds_six_faces_landmarks_match_scrfd(retinaface_export, scrfd_model, group_image):
    faces = _detector("retinaface", model=retinaface_export, select="all").find_faces(group_image)
    assert len(faces) == 6 and faces.landmarks.shape == (6, 5, 2)
    assert np.all(faces.scores > 0.9)
    assert np.all(faces.landmarks[:, 0, 0] < faces.landmarks[:, 1, 0])  # left eye (image left) first
    assert np.all(faces.landmarks[:, 3, 0] < faces.landmarks[:, 4, 0])
    assert np.all(faces.landmarks[:, 3, 1] > faces.landmarks[:, 2, 1])  # mouth below nose
    reference = _detector("retinaface", model=scrfd_model, select="all").find_faces(group_image)
    # measured: at most 8.9 px on faces ~100 px wide (0.088 of the box side; mean 3.7 px)
    assert _landmarks_agree(faces, reference, 0.12) < 12


def test_retinaface_export_negatives_and_tight_crops(retinaface_export, data_dir):
    det = _detector("retinaface", model=retinaface_export, select="all")
    for p in sorted((data_dir / "images" / "negatives").iterdir()):
        with pytest.raises(SampleRejected) as e:
            det.find_faces(cv2.imread(str(p)))
        assert e.value.reason == "no_face", p
    chip = cv2.imread(str(data_dir / "images/identities/John_Salley/John_Salley_0001.jpg"))
    assert len(det.find_faces(chip)) == 1


# --------------------------------------------------------------------------- YuNet


def test_yunet_matches_opencv_facedetectoryn(yunet_model, data_dir):
    """facekit's YuNet decoding on onnxruntime = cv2.FaceDetectorYN on the same letterboxed
    input (same faces and order; coordinates to float32 rounding of two runtimes)."""
    from facekit.vision.onnxdet import letterbox

    ref = cv2.FaceDetectorYN.create(str(yunet_model), "", (640, 640), 0.6, 0.3, 5000)
    det = _detector("yunet", model=yunet_model)
    total = 0
    for p in _photos(data_dir):
        img = cv2.imread(str(p))
        canvas, scale = letterbox(img, (640, 640))
        _, faces = ref.detect(canvas)
        faces = np.zeros((0, 15), np.float32) if faces is None else faces
        got = det.detect(img)
        assert len(got) == len(faces), p
        boxes = np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4]], axis=1) / scale
        np.testing.assert_allclose(got.boxes, boxes, atol=0.01, err_msg=str(p))
        np.testing.assert_allclose(got.landmarks, faces[:, 4:14].reshape(-1, 5, 2) / scale, atol=0.01)
        np.testing.assert_allclose(got.scores, faces[:, 14], atol=1e-4)
        total += len(got)
    assert total > 90


def test_yunet_landmarks_in_facekit_order(yunet_model, scrfd_model, group_image):
    faces = _detector("yunet", model=yunet_model, select="all").find_faces(group_image)
    assert len(faces) == 6
    assert np.all(faces.landmarks[:, 0, 0] < faces.landmarks[:, 1, 0])
    assert np.all(faces.landmarks[:, 3, 0] < faces.landmarks[:, 4, 0])
    reference = _detector("retinaface", model=scrfd_model, select="all").find_faces(group_image)
    assert _landmarks_agree(faces, reference, 0.2) < 20  # measured: at most 17.1 px (0.168 of the box side)


def test_yunet_detector_rules(yunet_model, group_image, data_dir):
    with pytest.raises(SampleRejected) as e:
        _detector("yunet", model=yunet_model, select="reject").find_faces(group_image)
    assert e.value.reason == "multiple_faces" and "6 faces" in e.value.detail
    with pytest.raises(SampleRejected) as e:
        _detector("yunet", model=yunet_model, min_size=500).find_faces(group_image)
    assert e.value.reason == "face_too_small"
    assert len(_detector("yunet", model=yunet_model).find_faces(group_image)) == 1
    for p in sorted((data_dir / "images" / "negatives").iterdir()):
        with pytest.raises(SampleRejected):
            _detector("yunet", model=yunet_model).find_faces(cv2.imread(str(p)))
    chip = cv2.imread(str(data_dir / "images/identities/John_Salley/John_Salley_0001.jpg"))
    faces = _detector("yunet", model=yunet_model, threads=1).find_faces(chip)
    x1, y1, x2, y2 = faces.boxes[0]
    assert -20 < x1 < 60 and -20 < y1 < 60 and 90 < x2 < 170 and 90 < y2 < 170


# --------------------------------------------------------------------------- validate time


def _validate(tmp_path, detector_yaml):
    (tmp_path / "photos").mkdir(exist_ok=True)
    cfg = write_config(
        tmp_path,
        f"""
        output: out
        source: {{plugin: folders, root: {tmp_path / "photos"}}}
        detector:
          {textwrap.indent(detector_yaml.strip(), "          ").strip()}
        sinks: [{{plugin: folders, path: faces}}]
        """,
    )
    r = facekit_cli("validate", cfg)
    return r.returncode, [ln.strip() for ln in r.stderr.splitlines() if "pipeline.yaml:" in ln]


@pytest.mark.parametrize(
    "plugin, rel, expected",
    [
        ("retinaface", "recognition/photo_analyze_mobilefacenet_128d.onnx", "has one 128-d output; the retinaface detector needs SCRFD outputs"),
        ("retinaface", "detection/yunet_s_640_640.onnx", "has 12 outputs (cls_8 [1, 6400, 1]"),
        ("yunet", "detection/scrfd_500m_bnkps.onnx", "has 9 outputs (score_8"),
        ("yunet", "recognition/photo_analyze_mobilefacenet_128d.onnx", "the yunet detector needs a YuNet export"),
    ],
)
def test_validate_rejects_a_model_that_does_not_fit(tmp_path, data_dir, plugin, rel, expected):
    model = _model(data_dir, rel)
    rc, lines = _validate(tmp_path, f"plugin: {plugin}\nmodel: {model}")
    assert rc == 2 and len(lines) == 1, lines
    assert "pipeline.yaml:6: " in lines[0] and f"parameter 'model': {model}" in lines[0]
    assert expected in lines[0]


@pytest.mark.parametrize("plugin", ["retinaface", "yunet"])
def test_validate_rejects_a_file_that_is_not_onnx(tmp_path, plugin):
    bad = tmp_path / "det.onnx"
    bad.write_bytes(b"this is not a protobuf")
    rc, lines = _validate(tmp_path, f"plugin: {plugin}\nmodel: {bad}")
    assert rc == 2 and len(lines) == 1 and "is not an ONNX model onnxruntime can load" in lines[0], lines


@pytest.mark.parametrize("plugin, rel", [("retinaface", "scrfd_500m_bnkps.onnx"), ("yunet", "yunet_s_640_640.onnx")])
def test_validate_rejects_an_unavailable_provider(tmp_path, data_dir, plugin, rel):
    model = _model(data_dir, f"detection/{rel}")
    rc, lines = _validate(tmp_path, f"plugin: {plugin}\nmodel: {model}\nproviders: [NoSuchExecutionProvider]")
    assert rc == 2 and len(lines) == 1, lines
    assert "pipeline.yaml:7: " in lines[0] and "NoSuchExecutionProvider is not available" in lines[0]
    assert "installed: " in lines[0] and "CPUExecutionProvider" in lines[0]


@pytest.mark.parametrize(
    "plugin, rel",
    [("retinaface", "scrfd_500m_bnkps.onnx"), ("retinaface", "retinaface_mbnet0.25.onnx"), ("yunet", "yunet_s_640_640.onnx")],
)
def test_validate_accepts_the_shared_detectors(tmp_path, data_dir, plugin, rel):
    model = _model(data_dir, f"detection/{rel}")
    rc, lines = _validate(tmp_path, f"plugin: {plugin}\nmodel: {model}\nthreads: 1")
    assert rc == 0 and not lines
