"""Issue 29 part 1: content decides, not the name. The ``folders`` source admits any file
whose first bytes are an image format the decoder reads (JPEG, PNG, GIF, BMP, WebP, TIFF,
PBM/PGM/PPM, JPEG 2000), whatever its name (a PNG saved as ``.jpg``, Yale's
``subject01.glasses``, ``00000007.jpg?w=1200&h=0``, no extension); junk is
``not_an_image``; ``extensions:`` is an optional filter by name; a name without an image
extension is kept whole as the crop's stem; a junk-heavy run says so in one warning line.

Files are made here from the shared real photos (Pillow, OpenCV) and run through the real
pipeline (SCRFD-500m, arcface alignment)."""

from __future__ import annotations

import io
import logging
import os
import threading

import cv2
import numpy as np
import pytest
from conftest import facekit_cli, write_config
from PIL import Image

from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.stages import Reject, Sample
from facekit.vision import SNIFF_BYTES, image_format

IDS = "images/identities"
HOPKINS = [f"{IDS}/Anthony_Hopkins/Anthony_Hopkins_000{i}.jpg" for i in (1, 2)]
LOWE = [f"{IDS}/Rob_Lowe/Rob_Lowe_000{i}.jpg" for i in (1, 2)]
CLAPTON = [f"{IDS}/Eric_Clapton/Eric_Clapton_000{i}.jpg" for i in (1, 2)]

# junk a downloaded folder holds: Windows thumbnail cache (OLE2), macOS folder settings,
# a side file, a crawler log, a text that starts like a BMP and one like a PBM
JUNK = {
    "Thumbs.db": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(4088),
    ".DS_Store": b"\x00\x00\x00\x01Bud1" + bytes(2040),
    "subject01.info": b"subject01: Yale face database, 11 expressions\n",
    "download.log": b"2024-01-01 GET https://example.org/00000007.jpg?w=1200&h=0 200\n" * 50,
    "BMW_notes": b"BMW is not a bitmap, only two letters of its signature\n",
    "P1_notes": b"P1 is not a portable bitmap\n",
}


def _pil(data_dir, rel: str, fmt: str, mode: str = "RGB", **kw) -> bytes:
    im = Image.open(data_dir / rel).convert(mode)
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def _cv(data_dir, rel: str, ext: str, gray: bool = False) -> bytes:
    img = cv2.imread(str(data_dir / rel))
    if gray:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    ok, buf = cv2.imencode(ext, img)
    assert ok, ext
    return buf.tobytes()


def _images(data_dir) -> dict[str, dict[str, tuple[str, bytes]]]:
    """``{identity: {misleading name: (proper name, bytes)}}``: real photos in every format
    the decoder reads, under names that lie or say nothing, and the name each would have
    with its true extension."""

    def raw(rel: str) -> bytes:
        return (data_dir / rel).read_bytes()

    return {
        "Anthony_Hopkins": {  # Yale's naming: subject, then the expression as the "extension"
            "subject01.glasses": ("subject01_glasses.gif", _pil(data_dir, HOPKINS[0], "GIF")),
            "subject01.centerlight": ("subject01_centerlight.pgm", _cv(data_dir, HOPKINS[1], ".pgm", gray=True)),
            "subject01.happy": ("subject01_happy.jp2", _cv(data_dir, HOPKINS[0], ".jp2")),
        },
        "Eric_Clapton": {
            "Eric_Clapton_0001.image": ("Eric_Clapton_0001_image.bmp", _pil(data_dir, CLAPTON[0], "BMP")),
            "Eric_Clapton_0002.1": ("Eric_Clapton_0002_1.ppm", _pil(data_dir, CLAPTON[1], "PPM")),
        },
        "Rob_Lowe": {
            "Rob_Lowe_0001.jpg": ("Rob_Lowe_0001.png", _pil(data_dir, LOWE[0], "PNG")),  # a PNG saved as .jpg
            "00000007.jpg?w=1200&h=0": ("00000007.jpg", raw(LOWE[1])),  # a URL's query string in the name
            "Rob_Lowe_0002": ("Rob_Lowe_0002.webp", _pil(data_dir, LOWE[1], "WEBP", quality=90)),  # no extension
            "Rob_Lowe_0003.tiff": ("Rob_Lowe_0003.tif", _pil(data_dir, LOWE[0], "TIFF")),  # refused by name before
        },
    }


def _tree(root, files: dict[str, dict[str, bytes]]):
    for ident, named in files.items():
        (root / ident).mkdir(parents=True, exist_ok=True)
        for name, data in named.items():
            (root / ident / name).write_bytes(data)
    return root


def _config(tmp_path, root, scrfd_model, out="out", source_extra="", detector=True):
    det = f"detector: {{plugin: retinaface, model: {scrfd_model}}}\naligner: {{plugin: arcface}}" if detector else ""
    text = f"output: {out}\nsource: {{plugin: folders, root: {root}{source_extra}}}\n{det}\n"
    text += "sinks: [{plugin: folders, path: faces}]\n"
    return write_config(tmp_path, text, name=f"{out}.yaml")


def _rejects(out) -> dict[str, str]:
    lines = (out / "rejects.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return {os.path.basename(l.split("\t")[0]): l.split("\t")[2] for l in lines}


def _crops(out) -> dict[str, bytes]:
    faces = out / "faces"
    return {f"{d.name}/{f.name}": f.read_bytes() for d in sorted(faces.iterdir()) if d.is_dir() for f in d.iterdir()}


def test_image_format_knows_every_format_the_decoder_reads(data_dir):
    """issue 29 part 1: the signature of each format (as Pillow and OpenCV write it) is
    recognised from the first SNIFF_BYTES bytes; junk is not, even junk that starts with
    two letters of a signature (``BM``, ``P1``)."""
    made = {
        "JPEG": (data_dir / HOPKINS[0]).read_bytes(),
        "PNG": _pil(data_dir, HOPKINS[0], "PNG"),
        "GIF": _pil(data_dir, HOPKINS[0], "GIF"),
        "BMP": _pil(data_dir, HOPKINS[0], "BMP"),
        "WEBP": _pil(data_dir, HOPKINS[0], "WEBP"),
        "TIFF": _cv(data_dir, HOPKINS[0], ".tif"),
        "JPEG2000": _cv(data_dir, HOPKINS[0], ".jp2"),
    }
    for name, data in made.items():
        assert image_format(data[:SNIFF_BYTES]) == name
    pil_tiff = _pil(data_dir, HOPKINS[0], "TIFF")
    codestream = _pil(data_dir, HOPKINS[0], "JPEG2000", no_jp2=True)
    assert image_format(pil_tiff[:SNIFF_BYTES]) == "TIFF" and image_format(codestream[:SNIFF_BYTES]) == "JPEG2000"
    for mode, ext in (("1", ".pbm"), ("L", ".pgm"), ("RGB", ".ppm")):  # netpbm, binary and from OpenCV
        assert image_format(_pil(data_dir, HOPKINS[0], "PPM", mode=mode)[:SNIFF_BYTES]) == "PPM", mode
        assert image_format(_cv(data_dir, HOPKINS[0], ext, gray=mode != "RGB")[:SNIFF_BYTES]) == "PPM", ext
    assert image_format(b"P2\n# CREATOR: GIMP PNM Filter Version 1.1\n250 250\n") == "PPM"  # a comment first
    for name, data in JUNK.items():
        assert image_format(data[:SNIFF_BYTES]) is None, name
    assert image_format(b"") is None and image_format(b"\xff\xd8") is None


def test_misnamed_images_are_read_as_what_they_are(tmp_path, data_dir, scrfd_model):
    """issue 29 part 1: with the default settings every image is kept whatever its name
    (GIF, PGM, JPEG 2000 with Yale's expression suffixes; BMP, PPM with odd suffixes; a PNG
    saved as .jpg; a query string; no extension; .tiff), its crop bit for bit the crop of
    the same bytes under their proper name; names without an image extension are kept
    whole in the crop names; junk is ``not_an_image``, an empty file ``empty_file``; no
    warning (most items are images)."""
    images = _images(data_dir)
    junk = {**JUNK, "empty": b""}
    files = {i: {n: d for n, (_, d) in named.items()} for i, named in images.items()}
    files["Anthony_Hopkins"].update(junk)
    root = _tree(tmp_path / "root", files)
    proper = _tree(tmp_path / "proper", {i: dict(named.values()) for i, named in images.items()})
    s = run(load_config(_config(tmp_path, root, scrfd_model)), progress=False)
    ref = run(load_config(_config(tmp_path, proper, scrfd_model, out="ref")), progress=False)
    n_images = sum(len(v) for v in images.values())
    assert ref.faces_kept == n_images  # each photo, under its proper name, gives one face
    assert s.faces_kept == n_images and s.identities_written == 3
    assert s.images_read == n_images  # junk is refused from its first bytes, never read whole
    assert _rejects(tmp_path / "out") == {**{n: "not_an_image" for n in JUNK}, "empty": "empty_file"}
    assert s.rejects == {"empty_file": 1, "not_an_image": len(JUNK)}
    crops, ref_crops = _crops(tmp_path / "out"), _crops(tmp_path / "ref")
    # misleading name -> the crop written for it (a name without an image extension is
    # kept whole), and the same bytes' crop under their proper name
    want = {
        "subject01.glasses": ("0/subject01.glasses_0.jpg", "0/subject01_glasses_0.jpg"),
        "subject01.centerlight": ("0/subject01.centerlight_0.jpg", "0/subject01_centerlight_0.jpg"),
        "subject01.happy": ("0/subject01.happy_0.jpg", "0/subject01_happy_0.jpg"),
        "Eric_Clapton_0001.image": ("1/Eric_Clapton_0001.image_0.jpg", "1/Eric_Clapton_0001_image_0.jpg"),
        "Eric_Clapton_0002.1": ("1/Eric_Clapton_0002.1_0.jpg", "1/Eric_Clapton_0002_1_0.jpg"),
        "Rob_Lowe_0001.jpg": ("2/Rob_Lowe_0001_0.jpg", "2/Rob_Lowe_0001_0.jpg"),
        "00000007.jpg?w=1200&h=0": ("2/00000007.jpg?w=1200&h=0_0.jpg", "2/00000007_0.jpg"),
        "Rob_Lowe_0002": ("2/Rob_Lowe_0002_0.jpg", "2/Rob_Lowe_0002_0.jpg"),
        "Rob_Lowe_0003.tiff": ("2/Rob_Lowe_0003_0.jpg", "2/Rob_Lowe_0003_0.jpg"),
    }
    assert sorted(crops) == sorted(w[0] for w in want.values())
    assert sorted(ref_crops) == sorted(w[1] for w in want.values())
    for bad, (name, ref_name) in want.items():
        assert crops[name] == ref_crops[ref_name], bad  # the same bytes give the same crop under either name


def test_extensions_given_filter_by_name(tmp_path, data_dir, caplog):
    """issue 29 part 1: ``extensions:`` given admits by name as before (nothing opened, a
    PNG saved as .jpg still admitted: the decoder judges it), every other name is
    ``unsupported_file``; when that is most of the folder one warning line says how many
    and how to admit by content; an empty list is a configuration error."""
    from facekit_plugins.folders import FoldersSource

    images = _images(data_dir)
    root = _tree(tmp_path / "root", {i: {n: d for n, (_, d) in named.items()} for i, named in images.items()})
    caplog.set_level(logging.WARNING)
    items = list(FoldersSource(FoldersSource.Params(root=root, extensions=["jpg"])))
    samples = sorted(os.path.basename(i.path) for i in items if isinstance(i, Sample))
    assert samples == ["Rob_Lowe_0001.jpg"]
    assert {os.path.basename(i.path): i.reason for i in items if isinstance(i, Reject)} == {
        n: "unsupported_file" for named in images.values() for n in named if n != "Rob_Lowe_0001.jpg"
    }
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("folders source:")]
    assert len(warned) == 1, warned
    assert "8 of 9 items (88%) are not images: unsupported_file 8, not_an_image 0" in warned[0]
    assert "extensions: ['jpg']" in warned[0] and "leave it out" in warned[0]
    caplog.clear()
    default = list(FoldersSource(FoldersSource.Params(root=root)))
    assert all(isinstance(i, Sample) for i in default) and len(default) == 9
    assert not [r for r in caplog.records if r.getMessage().startswith("folders source:")]
    with pytest.raises(Exception, match="extensions"):
        FoldersSource.Params(root=root, extensions=[])


def test_junk_heavy_run_prints_one_warning(tmp_path, data_dir, scrfd_model):
    """issue 29 part 1: ``facekit run`` on a folder that is mostly junk (a Windows/macOS
    download: Thumbs.db, .DS_Store, a side file, a log, ...) exits 0 with its faces and
    prints one warning line with the count of ``not_an_image`` rejects; a folder that is
    half junk prints none."""
    files = {"Anthony_Hopkins": {**JUNK}, "Rob_Lowe": {}}
    for rel in HOPKINS:
        files["Anthony_Hopkins"][os.path.basename(rel)] = (data_dir / rel).read_bytes()
    for rel in LOWE:
        files["Rob_Lowe"][os.path.basename(rel)] = (data_dir / rel).read_bytes()
    files["Rob_Lowe"].update({"Thumbs.db": JUNK["Thumbs.db"], "desktop.ini": b"[.ShellClassInfo]\r\n"})
    root = _tree(tmp_path / "root", files)
    r = facekit_cli("run", "-q", _config(tmp_path, root, scrfd_model))
    assert r.returncode == 0, r.stderr[-3000:]
    junk = len(JUNK) + 2
    warned = [l for l in r.stderr.splitlines() if "folders source:" in l]
    assert len(warned) == 1, r.stderr
    assert f"{junk} of {junk + 4} items ({100 * junk // (junk + 4)}%) are not images" in warned[0]
    assert f"unsupported_file 0, not_an_image {junk}" in warned[0] and "rejects.tsv" in warned[0]
    assert "faces kept         4" in r.stdout and f"  not_an_image         {junk}" in r.stdout
    # half junk (2 photos, Thumbs.db, desktop.ini) is not "mostly": no warning
    clean = _tree(tmp_path / "half", {"Rob_Lowe": files["Rob_Lowe"]})
    r = facekit_cli("run", "-q", _config(tmp_path, clean, scrfd_model, out="clean"))
    assert r.returncode == 0 and "folders source:" not in r.stderr, r.stderr


def test_sniffing_reads_a_bounded_head_and_keeps_the_safety_checks(tmp_path, data_dir):
    """issue 29 part 1: a file whose name says nothing is judged from one read of its first
    SNIFF_BYTES bytes (never the whole file), a file with an image extension is not opened
    by the source; special files, links, sizes and names under odd names are refused as
    before, without blocking: FIFO, link loop, /dev/zero, dangling link (``unreadable``),
    over ``max_file_mb`` (``too_large``), sub-folder (``unsupported_file``), a control
    character (``bad_name``)."""
    from facekit_plugins.folders import FoldersSource

    jpeg = (data_dir / HOPKINS[0]).read_bytes()
    ident = tmp_path / "root" / "Anthony_Hopkins"
    ident.mkdir(parents=True)
    (ident / "a.jpg").write_bytes(jpeg)
    (ident / "big_photo").write_bytes(jpeg + bytes(3 << 20))  # a JPEG head, 3 MiB: over the limit
    (ident / "photo.original").write_bytes(jpeg + bytes(1 << 20))  # 1.2 MiB: admitted from 32 bytes
    os.mkfifo(ident / "pipe.glasses")
    os.symlink("loop.happy", ident / "loop.happy")
    os.symlink("/dev/zero", ident / "zero")
    os.symlink(tmp_path / "gone", ident / "gone.sad")
    os.mkdir(ident / "sub.d")
    (ident / "tab\tname.glasses").write_bytes(jpeg)
    calls = {"open": [], "read": []}
    real_open, real_read = os.open, os.read

    def spy_open(path, *a, **k):
        calls["open"].append(os.path.basename(os.fsdecode(path)))
        return real_open(path, *a, **k)

    def spy_read(fd, n):
        calls["read"].append(n)
        return real_read(fd, n)

    done = {}

    def listing():
        os.open, os.read = spy_open, spy_read
        try:
            done["items"] = list(FoldersSource(FoldersSource.Params(root=tmp_path / "root", max_file_mb=2)))
        finally:
            os.open, os.read = real_open, real_read

    t = threading.Thread(target=listing, daemon=True)
    t.start()
    t.join(60)
    assert "items" in done, "the folders source blocked (or failed) on a special file"
    items = done["items"]
    assert sorted(os.path.basename(i.path) for i in items if isinstance(i, Sample)) == ["a.jpg", "photo.original"]
    assert {os.path.basename(i.path): i.reason for i in items if isinstance(i, Reject)} == {
        "big_photo": "too_large",
        "pipe.glasses": "unreadable",
        "loop.happy": "unreadable",
        "zero": "unreadable",
        "gone.sad": "unreadable",
        "sub.d": "unsupported_file",
        "tab\tname.glasses": "bad_name",
    }
    assert "a.jpg" not in calls["open"] and "photo.original" in calls["open"]
    assert calls["read"] and max(calls["read"]) <= SNIFF_BYTES  # one head read per sniffed file


def test_passthrough_keeps_the_formats_opencv_reads_under_any_name(tmp_path, data_dir):
    """issue 29 part 1: without a detector the bytes pass through undecoded: WebP, TIFF,
    PGM, JPEG 2000 under names that say nothing are kept and written with the extension of
    their content; a GIF (OpenCV, hence mxnet, does not decode it) is ``not_an_image``."""
    files = {
        "Anthony_Hopkins": {
            "subject01.glasses": _pil(data_dir, HOPKINS[0], "GIF"),
            "subject01.centerlight": _cv(data_dir, HOPKINS[1], ".pgm", gray=True),
            "subject01.happy": _cv(data_dir, HOPKINS[0], ".jp2"),
            "subject01.sad": _cv(data_dir, HOPKINS[1], ".webp"),
            "subject01.wink": _cv(data_dir, HOPKINS[0], ".tif"),
        }
    }
    root = _tree(tmp_path / "root", files)
    s = run(load_config(_config(tmp_path, root, None, detector=False)), progress=False)
    assert s.faces_kept == 4
    assert _rejects(tmp_path / "out") == {"subject01.glasses": "not_an_image"}
    crops = _crops(tmp_path / "out")
    assert sorted(crops) == [
        "0/subject01.centerlight_0.pgm",
        "0/subject01.happy_0.jp2",
        "0/subject01.sad_0.webp",
        "0/subject01.wink_0.tif",
    ]
    for name, data in crops.items():
        stem = name.split("/")[1].rsplit("_", 1)[0]
        assert data == files["Anthony_Hopkins"][stem]  # the bytes as they were
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
