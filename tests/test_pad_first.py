"""Pad first when it is certain to be needed (issue 13, item 3): a tight face chip is
padded before its first detection, with the same small-face guard as the retry."""

from __future__ import annotations

import numpy as np
import pytest

from facekit.vision.detection import find_faces, is_face_chip
from facekit.errors import SampleRejected
from facekit.stages import DetectorParams, Detections


class _Stub:
    """A detector returning one face of ``side`` px centred in what it is given (or none)."""

    name = "stub"

    def __init__(self, side=None, on_padded=True, on_plain=True, **params):
        self.params = DetectorParams(**params)
        self.side, self.on_padded, self.on_plain = side, on_padded, on_plain
        self.calls: list[tuple[int, int]] = []

    def detect(self, image):
        self.calls.append(image.shape[:2])
        padded = len(self.calls) and image.shape[:2] != self.original
        if self.side is None or not (self.on_padded if padded else self.on_plain):
            return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), None)
        h, w = image.shape[:2]
        s = self.side / 2
        box = np.array([[w / 2 - s, h / 2 - s, w / 2 + s, h / 2 + s]], np.float32)
        return Detections(box, np.ones(1, np.float32), None)

    def run(self, shape):
        self.original = shape
        return find_faces(self, np.zeros((*shape, 3), np.uint8))


def test_is_face_chip_small_and_square_ish():
    assert is_face_chip((150, 150, 3)) and is_face_chip((112, 112)) and is_face_chip((224, 200, 3))
    assert not is_face_chip((250, 250, 3))  # LFW-size photos: the face is found unpadded
    assert not is_face_chip((100, 180, 3))  # not square-ish
    assert not is_face_chip((0, 0, 3))


def test_chip_is_detected_once_padded_first():
    d = _Stub(side=120)
    faces = d.run((150, 150))
    assert d.calls == [(300, 300)]  # one detection, on the padded chip (the old rule ran two)
    np.testing.assert_allclose(faces.boxes[0], [15, 15, 135, 135])  # in the chip's coordinates


def test_chip_padded_pass_finds_nothing_falls_back_to_plain():
    d = _Stub(side=120, on_padded=False)
    faces = d.run((150, 150))
    assert d.calls == [(300, 300), (150, 150)] and len(faces) == 1


def test_chip_keeps_the_small_face_guard():
    # a face of 30 px in a 150 px chip (< pad_min_face 0.3 x 150 = 45) seen only padded: dropped
    d = _Stub(side=30, on_plain=False)
    with pytest.raises(SampleRejected) as e:
        d.run((150, 150))
    assert e.value.reason == "no_face" and d.calls == [(300, 300), (150, 150)]


def test_photo_keeps_detect_then_retry():
    d = _Stub(side=100)
    d.run((480, 640))
    assert d.calls == [(480, 640)]
    d = _Stub(side=200, on_plain=False)
    d.run((480, 640))
    assert d.calls == [(480, 640), (960, 1280)]


def test_pad_zero_never_pads_a_chip():
    d = _Stub(side=120, pad=0)
    d.run((150, 150))
    assert d.calls == [(150, 150)]


def test_real_chip_one_detection(data_dir, scrfd_model):
    import cv2

    from facekit.plugins import get_registry

    chip = cv2.imread(str(data_dir / "images/identities/John_Salley/John_Salley_0001.jpg"))
    cls = get_registry().get("detector", "retinaface")
    det = cls(cls.Params(model=scrfd_model))
    shapes = []
    inner = det.detect
    det.detect = lambda im: shapes.append(im.shape[:2]) or inner(im)
    faces = det.find_faces(chip)
    assert len(faces) == 1 and shapes == [(300, 300)]


class _WholeFrame(_Stub):
    """Calls whatever it is given one face filling the frame (a detector for crops)."""

    def detect(self, image):
        self.calls.append(image.shape[:2])
        h, w = image.shape[:2]
        return Detections(np.array([[0, 0, w, h]], np.float32), np.ones(1, np.float32), None)


def test_chip_face_mostly_outside_the_chip_lets_the_plain_pass_decide():
    # the padded pass's face is the padded frame (25% of it inside the chip): not clear-cut,
    # so the unpadded pass runs and its face wins, as with detect-then-retry
    d = _WholeFrame()
    faces = d.run((112, 112))
    assert d.calls == [(224, 224), (112, 112)]
    np.testing.assert_allclose(faces.boxes[0], [0, 0, 112, 112])


def test_chip_plain_pass_empty_keeps_padded_faces():
    # padded face mostly outside, the unpadded pass finds nothing: the padded faces stand
    # (what the retry gives); here a 280 px face centred in the 300 px padded frame
    d = _Stub(side=280, on_plain=False)
    faces = d.run((150, 150))
    assert d.calls == [(300, 300), (150, 150)] and len(faces) == 1


def test_inside_fraction():
    from facekit.vision.detection import inside_fraction

    boxes = np.array([[0, 0, 10, 10], [-10, 0, 10, 10], [20, 20, 30, 30], [5, 5, 5, 5]], np.float32)
    np.testing.assert_allclose(inside_fraction(boxes, (10, 10, 3)), [1, 0.5, 0, 0])
