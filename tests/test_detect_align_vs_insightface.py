"""Issue 13: after the fast decode and pad-first changes, facekit's detect + align still gives
insightface's crops and landmarks: the same photos read with ``cv2.imread``, detected by
insightface's ``SCRFD.detect`` (padded first for a chip, with the same guard), the
largest-central face cropped by ``norm_crop``."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
from PIL import Image

from facekit.vision.detection import CHIP_MIN_INSIDE, inside_fraction, is_face_chip, largest_central_index, pad_image
from facekit.errors import SampleRejected
from facekit.vision.images import decode_image
from facekit.plugins import get_registry


def _stage(kind, name, **params):
    cls = get_registry().get(kind, name)
    return cls(cls.Params(**params))


def _reference(ref, img):
    """insightface SCRFD + the pad rule: (landmarks (5, 2)) of the kept face, or None."""
    h, w = img.shape[:2]

    def padded():
        p, dx, dy = pad_image(img, 0.5)
        b, k = ref.detect(p, input_size=(640, 640))
        b = b - np.array([dx, dy, dx, dy, 0], np.float32)
        k = k - np.array([dx, dy], np.float32)
        side = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        keep = side >= 0.3 * min(h, w)
        return b[keep], k[keep]

    if is_face_chip(img.shape):
        pb, pk = padded()
        inside = inside_fraction(pb[:, :4], img.shape) >= CHIP_MIN_INSIDE
        b, k = pb[inside], pk[inside]
        if not len(b):
            b, k = ref.detect(img, input_size=(640, 640))
            if not len(b):
                b, k = pb, pk
    else:
        b, k = ref.detect(img, input_size=(640, 640))
        if not len(b):
            b, k = padded()
    side = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) if len(b) else np.zeros(0)
    b, k = b[side >= 20], k[side >= 20]
    if not len(b):
        return None
    return k[largest_central_index(b[:, :4], img.shape)]


def test_crops_and_landmarks_equal_insightface(data_dir, scrfd_model, tmp_path):
    try:
        from insightface.model_zoo import scrfd as scrfd_ref
        from insightface.utils.face_align import norm_crop
    except ImportError:
        from conftest import _missing

        _missing("insightface (the reference) not installed")
    ref = scrfd_ref.SCRFD(model_file=str(scrfd_model))
    ref.prepare(-1, input_size=(640, 640), det_thresh=0.5, nms_thresh=0.4)
    det = _stage("detector", "retinaface", model=scrfd_model)
    aligner = _stage("aligner", "arcface")
    ids = sorted((data_dir / "images" / "identities").iterdir())
    paths = [sorted(d.iterdir())[0] for d in ids] + sorted((data_dir / "images" / "group").iterdir())
    # an EXIF-rotated JPEG too (orientation 6): cv2.imread applies it, so must facekit
    im = Image.open(paths[0]).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = tmp_path / "exif6.jpg"
    im.transpose(Image.Transpose.ROTATE_90).save(rotated, "JPEG", quality=95, exif=exif.tobytes())
    paths.append(rotated)
    chips = kept = 0
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        mine = decode_image(p.read_bytes())
        assert np.array_equal(mine, img), p.name
        want = _reference(ref, img)
        try:
            faces = det.find_faces(mine)
        except SampleRejected:
            assert want is None, p.name
            continue
        assert want is not None, p.name
        np.testing.assert_array_equal(faces.landmarks[0], want, err_msg=p.name)
        crop, _ = aligner.align_face(mine, faces.boxes[0], faces.landmarks[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skimage's estimate() deprecation inside insightface
            np.testing.assert_array_equal(crop, norm_crop(img, want, 112), err_msg=p.name)
        chips += is_face_chip(img.shape)
        kept += 1
    assert kept >= 20 and chips >= 4
