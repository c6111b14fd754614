"""Detector plugins and the face-selection policies on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facekit.vision.detection import largest_central_index
from facekit.errors import SampleRejected
from facekit.plugins import get_registry

GROUP = "images/group/insightface_t1.jpg"


def _detector(name, **params):
    cls = get_registry().get("detector", name)
    return cls(cls.Params(**params))


@pytest.fixture(scope="module")
def group_image(data_dir):
    return cv2.imread(str(data_dir / GROUP))


def test_retinaface_finds_all_six(group_image, scrfd_model):
    det = _detector("retinaface", model=scrfd_model, select="all")
    faces = det.find_faces(group_image)
    assert len(faces) == 6
    assert faces.boxes.shape == (6, 4) and faces.landmarks.shape == (6, 5, 2)
    # standard landmark order: left eye (image left) before right eye, mouth below nose
    assert np.all(faces.landmarks[:, 0, 0] < faces.landmarks[:, 1, 0])
    assert np.all(faces.landmarks[:, 3, 1] > faces.landmarks[:, 2, 1])


def test_selection_policies(group_image, scrfd_model):
    every = _detector("retinaface", model=scrfd_model, select="all").find_faces(group_image)
    one = _detector("retinaface", model=scrfd_model).find_faces(group_image)
    assert len(one) == 1
    h, w = group_image.shape[:2]
    b = every.boxes
    values = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - 2 * (
        ((b[:, 0] + b[:, 2]) / 2 - w // 2) ** 2 + ((b[:, 1] + b[:, 3]) / 2 - h // 2) ** 2
    )
    assert np.allclose(one.boxes[0], b[int(np.argmax(values))])
    assert largest_central_index(b, group_image.shape) == int(np.argmax(values))
    with pytest.raises(SampleRejected) as e:
        _detector("retinaface", model=scrfd_model, select="reject").find_faces(group_image)
    assert e.value.reason == "multiple_faces" and "6 faces" in e.value.detail
    with pytest.raises(SampleRejected) as e:
        _detector("retinaface", model=scrfd_model, min_size=500).find_faces(group_image)
    assert e.value.reason == "face_too_small"


def test_tight_crop_needs_padding(data_dir, scrfd_model):
    chip = cv2.imread(str(data_dir / "images/identities/John_Salley/John_Salley_0001.jpg"))
    assert chip.shape[:2] == (150, 150)
    with pytest.raises(SampleRejected) as e:
        _detector("retinaface", model=scrfd_model, pad=0).find_faces(chip)
    assert e.value.reason == "no_face"
    faces = _detector("retinaface", model=scrfd_model).find_faces(chip)
    assert len(faces) == 1
    x1, y1, x2, y2 = faces.boxes[0]  # back in the chip's own coordinates
    assert -20 < x1 < 60 and -20 < y1 < 60 and 90 < x2 < 170 and 90 < y2 < 170


def test_haar_boxes_only(group_image):
    det = _detector("haar", select="all")
    assert det.provides_landmarks is False
    faces = det.find_faces(group_image)
    assert 4 <= len(faces) <= 8 and faces.landmarks is None
    assert np.all((faces.scores > 0) & (faces.scores < 1))


def test_mtcnn_landmarks(group_image, has_mtcnn):
    faces = _detector("mtcnn", select="all").find_faces(group_image)
    assert len(faces) >= 6
    assert np.all(faces.landmarks[:, 0, 0] < faces.landmarks[:, 1, 0])
    assert np.all(faces.landmarks[:, 3, 1] > faces.landmarks[:, 2, 1])
    # landmarks lie inside their boxes
    lm, bx = faces.landmarks, faces.boxes
    assert np.all((lm[..., 0] >= bx[:, None, 0] - 2) & (lm[..., 0] <= bx[:, None, 2] + 2))


def test_haar_boxcrop_pipeline(tmp_path, data_dir):
    from conftest import link_identities, write_config
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run

    link_identities(data_dir, tmp_path / "root", ["Anthony_Hopkins", "Rob_Lowe"])
    cfg = write_config(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: root}
        detector: {plugin: haar}
        aligner: {plugin: boxcrop, size: 112, margin: 44}
        sinks: [{plugin: folders, path: faces}]
        """,
    )
    s = run(load_config(cfg), progress=False)
    assert s.faces_kept == 4
    lst = (tmp_path / "out/faces/label.txt").read_text().splitlines()
    assert all(len(l.split("\t")) == 3 and l.startswith("1\t") for l in lst)  # the crops: aligned=1, path, label
    assert (tmp_path / "out/faces/landmarks.txt").read_text() == ""
