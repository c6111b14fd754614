"""The fast JPEG decode path (issue 13, item 2): same pixels as Pillow and cv2.imread,
EXIF orientation as Pillow applies it, Pillow still deciding every odd or damaged file."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from facekit.vision import images
from facekit.errors import SampleRejected
from facekit.vision.images import apply_orientation, decode_image, jpeg_orientation


def _jpegs(data_dir):
    return sorted(p for p in (data_dir / "images").rglob("*.jpg"))


def _no_pillow(monkeypatch):
    def refuse(data):
        raise AssertionError("Pillow path used for a plain JPEG")

    monkeypatch.setattr(images, "_decode_pil", refuse)


def test_fast_path_pixels_equal_pillow_and_cv2(data_dir, monkeypatch):
    files = _jpegs(data_dir)
    assert len(files) > 50
    pil = {p: images._decode_pil(p.read_bytes()) for p in files}
    _no_pillow(monkeypatch)  # every shared photo takes the fast path
    for p in files:
        img = decode_image(p.read_bytes())
        assert img.dtype == np.uint8 and img.flags.c_contiguous and img.shape[2] == 3, p.name
        np.testing.assert_array_equal(img, pil[p], err_msg=p.name)
        np.testing.assert_array_equal(img, cv2.imread(str(p), cv2.IMREAD_COLOR), err_msg=p.name)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_exif_orientations_as_pillow(orientation, byteorder, monkeypatch):
    rng = np.random.default_rng(orientation)
    im = Image.fromarray(cv2.resize(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8), (80, 48)))
    # an EXIF block in either byte order: IFD0 with another SHORT tag before the orientation
    tiff = (b"II*\x00" if byteorder == "<" else b"MM\x00*") + struct.pack(byteorder + "IH", 8, 2)
    for tag, value in ((0x0100, 80), (0x0112, orientation)):
        tiff += struct.pack(byteorder + "HHIH", tag, 3, 1, value) + b"\x00\x00"
    b = io.BytesIO()
    im.save(b, "JPEG", quality=95, exif=b"Exif\x00\x00" + tiff + struct.pack(byteorder + "I", 0))
    data = b.getvalue()
    assert jpeg_orientation(data) == orientation
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))[:, :, ::-1]
    _no_pillow(monkeypatch)
    np.testing.assert_array_equal(decode_image(data), ref)


def test_orientation_helpers_tolerate_junk():
    assert jpeg_orientation(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00XX\x00\x00") == 1
    assert jpeg_orientation(b"\xff\xd8") == 1
    a = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert apply_orientation(a, 1) is a and apply_orientation(a, 9) is a
    np.testing.assert_array_equal(apply_orientation(a, 6), np.rot90(a, -1))
    np.testing.assert_array_equal(apply_orientation(a, 8), np.rot90(a, 1))


def test_odd_jpegs_go_to_pillow(data_dir):
    im = Image.open(data_dir / "images/identities/Anthony_Hopkins/Anthony_Hopkins_0001.jpg").convert("RGB")
    for mode in ("CMYK", "L"):
        b = io.BytesIO()
        im.convert(mode).save(b, "JPEG", quality=95)
        data = b.getvalue()
        np.testing.assert_array_equal(decode_image(data), images._decode_pil(data), err_msg=mode)
    assert images._decode_jpeg_fast(b.getvalue()) is not None  # grayscale: fast path
    b = io.BytesIO()
    im.convert("CMYK").save(b, "JPEG")
    assert images._decode_jpeg_fast(b.getvalue()) is None  # CMYK (Adobe inverted): Pillow


def test_damaged_jpegs_keep_pillow_reasons(data_dir):
    good = (data_dir / "images/identities/Anthony_Hopkins/Anthony_Hopkins_0001.jpg").read_bytes()
    with pytest.raises(SampleRejected) as e:
        decode_image(good[: len(good) // 2])
    assert e.value.reason == "truncated"
    corrupt = bytearray(good)
    sos = good.find(b"\xff\xda")
    corrupt[sos + 400 : sos + 2400] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    assert images._decode_jpeg_fast(bytes(corrupt)) is None  # libjpeg's warning: strict
    with pytest.raises(SampleRejected) as e:
        decode_image(bytes(corrupt))
    assert e.value.reason == "corrupt"


def test_mutated_jpegs_decode_or_reject(data_dir):
    """Damaged headers and data (seeded): an image or a SampleRejected, never another error."""
    good = (data_dir / "images/identities/John_Salley/John_Salley_0001.jpg").read_bytes()
    rng = np.random.default_rng(13)
    for _ in range(150):
        data = bytearray(good)
        for pos in rng.integers(2, min(len(data), 700), rng.integers(1, 6)):
            data[pos] = int(rng.integers(0, 256))
        cut = len(data) if rng.random() < 0.7 else int(rng.integers(3, len(data)))
        try:
            img = decode_image(bytes(data[:cut]))
        except SampleRejected as e:
            assert e.reason in ("truncated", "corrupt", "not_an_image"), e.reason
        else:
            assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8


def test_images_over_pillows_pixel_limit_are_refused_whatever_the_warning_filters(monkeypatch):
    """Between 1x and 2x Image.MAX_IMAGE_PIXELS Pillow only warns: facekit refuses by the
    size itself, so another thread's warnings filters (the worker reads ahead in a second
    thread) cannot let such an image through."""
    import io
    import warnings

    from PIL import Image

    from facekit.errors import SampleRejected
    from facekit.vision.images import decode_image

    buf = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buf, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # 60,000 pixels: warning range
    for action in ("ignore", "default", "error"):
        with warnings.catch_warnings(record=True):  # "default" shows Pillow's warning: kept off the log
            warnings.simplefilter(action)
            with pytest.raises(SampleRejected) as e:
                decode_image(buf.getvalue())
        assert e.value.reason == "not_an_image" and "60000 pixels" in e.value.detail
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 70_000)
    assert decode_image(buf.getvalue()).shape == (200, 300, 3)
