"""Bad input never stops a run, is never dropped silently, and never corrupts output."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from conftest import write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.errors import SampleRejected
from facekit.vision.images import decode_image

FACE = "images/identities/Anthony_Hopkins/Anthony_Hopkins_0001.jpg"
FACE2 = "images/identities/Anthony_Hopkins/Anthony_Hopkins_0002.jpg"


def _rejects(out):
    lines = (out / "rejects.tsv").read_text().splitlines()[1:]
    return {os.path.basename(l.split("\t")[0]): l.split("\t")[2] for l in lines}


@pytest.fixture
def bad_root(tmp_path, data_dir):
    root = tmp_path / "root"
    ident = root / "Anthony_Hopkins"
    ident.mkdir(parents=True)
    good = (data_dir / FACE).read_bytes()
    os.symlink(data_dir / FACE, ident / "a_good.jpg")
    os.symlink(data_dir / FACE2, ident / "b_good.jpg")
    (ident / "c_truncated.jpg").write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    sos = good.find(b"\xff\xda")  # start of scan: destroy entropy-coded data after it
    corrupt[sos + 400 : sos + 2400] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    (ident / "d_corrupt.jpg").write_bytes(bytes(corrupt))
    (ident / "e_empty.jpg").write_bytes(b"")
    (ident / "f_text.jpg").write_text("this is not an image\n")
    (ident / "g_notes.txt").write_text("identity notes\n")
    (root / "stray.jpg").write_bytes(good)
    return root


def _detect_align_config(tmp_path, scrfd_model, sinks: str):
    return write_config(
        tmp_path,
        f"""
        output: out
        source: {{plugin: folders, root: root}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        aligner: {{plugin: arcface}}
        sinks: {sinks}
        """,
    )


def test_bad_files_go_to_rejects_with_reason(tmp_path, bad_root, scrfd_model):
    cfg = _detect_align_config(tmp_path, scrfd_model, "[{plugin: mxrec, path: rec}, {plugin: folders, path: faces}]")
    s = run(load_config(cfg), progress=False)
    rej = _rejects(tmp_path / "out")
    assert rej == {
        "stray.jpg": "not_in_identity_folder",
        "c_truncated.jpg": "truncated",
        "d_corrupt.jpg": "corrupt",
        "e_empty.jpg": "empty_file",
        "f_text.jpg": "not_an_image",
        "g_notes.txt": "not_an_image",  # issue 29 part 1: its first bytes are no image
    }
    assert s.faces_kept == 2 and s.identities_written == 1
    assert s.images_read == 6  # the stray file and the .txt are never read as images
    assert sum(s.rejects.values()) == 6


def test_passthrough_packing_rejects_bad_files(tmp_path, bad_root):
    """No detector: bytes are packed undecoded, but only after a header check, so empty,
    text and truncated files are rejects, not records. (Damaged entropy-coded data is only
    found by a full decode; OpenCV, hence mxnet, decodes it with a warning: kept.)"""
    cfg = write_config(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: root}
        sinks: [{plugin: mxrec, path: rec}]
        """,
    )
    s = run(load_config(cfg), progress=False)
    assert _rejects(tmp_path / "out") == {
        "stray.jpg": "not_in_identity_folder",
        "c_truncated.jpg": "truncated",
        "e_empty.jpg": "empty_file",
        "f_text.jpg": "not_an_image",
        "g_notes.txt": "not_an_image",  # issue 29 part 1: its first bytes are no image
    }
    assert s.faces_kept == 3 and s.images_read == 6


def test_decode_rejections():
    with pytest.raises(SampleRejected) as e:
        decode_image(b"")
    assert e.value.reason == "empty_file"
    with pytest.raises(SampleRejected) as e:
        decode_image(b"GIF89a not really")
    assert e.value.reason in ("not_an_image", "truncated")
    with pytest.raises(SampleRejected) as e:
        decode_image(b"hello world")
    assert e.value.reason == "not_an_image"


def _variants(data_dir) -> dict[str, bytes]:
    """The same real photo as grayscale, RGBA PNG, CMYK JPEG, BMP and EXIF-rotated JPEG."""
    im = Image.open(data_dir / FACE).convert("RGB")
    out = {}

    def save(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()

    out["gray.jpg"] = save(im.convert("L"), "JPEG", quality=95)
    rgba = im.convert("RGBA")
    rgba.putalpha(200)
    out["rgba.png"] = save(rgba, "PNG")
    out["cmyk.jpg"] = save(im.convert("CMYK"), "JPEG", quality=95)
    out["plain.bmp"] = save(im, "BMP")
    # pixels stored rotated 90 degrees clockwise; EXIF Orientation 6 says "rotate 90 CW to
    # display"... so store the image rotated counter-clockwise and tag it 6
    exif = Image.Exif()
    exif[0x0112] = 6
    out["exif6.jpg"] = save(im.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())
    return out


def test_image_modes_decode_upright(data_dir):
    ref = decode_image((data_dir / FACE).read_bytes())
    for name, data in _variants(data_dir).items():
        img = decode_image(data)
        assert img.dtype == np.uint8 and img.shape == ref.shape, name
        diff = np.abs(img.astype(int).mean(2) - ref.astype(int).mean(2)).mean()
        assert diff < 12, f"{name}: mean abs luminance difference {diff:.1f}"


def test_image_modes_through_pipeline(tmp_path, data_dir, scrfd_model):
    ident = tmp_path / "root" / "Anthony_Hopkins"
    ident.mkdir(parents=True)
    for name, data in _variants(data_dir).items():
        (ident / name).write_bytes(data)
    cfg = _detect_align_config(tmp_path, scrfd_model, "[{plugin: folders, path: faces}]")
    s = run(load_config(cfg), progress=False)
    assert s.faces_kept == 5 and s.rejects == {}
    crops = {p.name: decode_image(p.read_bytes()) for p in (tmp_path / "out/faces/0").glob("*.jpg")}
    base = crops["plain_0.jpg"].astype(int)
    for name, c in crops.items():
        assert np.abs(c.astype(int).mean(2) - base.mean(2)).mean() < 12, name


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, (1 << 20) + 65536, 3 * (1 << 20) + 7])
def test_read_file_reads_whole_files(tmp_path, size):
    """The pass-through reader (os.read until end of file) returns every byte, across its
    64 KiB first read and 1 MiB follow-up reads."""
    from facekit.vision.images import read_file

    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    (tmp_path / "f.jpg").write_bytes(data)
    assert read_file(str(tmp_path / "f.jpg")) == data


def test_read_file_errors_are_rejects(tmp_path):
    from facekit.vision.images import read_file

    with pytest.raises(SampleRejected) as e:
        read_file(str(tmp_path / "missing.jpg"))
    assert e.value.reason == "unreadable" and "FileNotFoundError" in e.value.detail
    with pytest.raises(SampleRejected) as e:
        read_file(str(tmp_path))  # a folder
    assert e.value.reason == "unreadable"
