"""Hostile RecordIO input (issue 8, item 13 and friends): counts, labels, flags, offsets
and image headers inside a .rec/.idx are data, never trusted. Each case gives a one-line
error or a reject/problem naming file, key and offset, with memory bounded by what the
files hold; plus the mxrec sink's one-image-size rule, verify's "no images" and the mxrec
source's count()."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_config
from facekit.errors import FacekitError, RecordIOError
from facekit.formats.facerec import FaceRec, image_hw
from facekit.formats.rec_inspect import inspect
from facekit.formats.rec_verify import verify
from facekit.formats.idx import read_idx
from facekit.formats.recordio import IndexedRecordIOWriter, IRHeader, RecordIOReader, pack

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def imgs(data_dir) -> list[bytes]:
    return [p.read_bytes() for p in sorted((data_dir / "aligned_112").glob("*.jpg"))]


def face_rec(d: Path, imgs: list[bytes], labels: list, header=None, name: str = "train") -> Path:
    """insightface layout (header, images, one identity record per label run); ``header``
    replaces the header label; labels may be any float (1e30, inf)."""
    d.mkdir(parents=True, exist_ok=True)
    runs: list[list] = []
    for k, lab in enumerate(labels, 1):
        if runs and runs[-1][0] == lab:
            runs[-1][2] = k + 1
        else:
            runs.append([lab, k, k + 1])
    n = len(imgs)
    with IndexedRecordIOWriter(d / f"{name}.idx", d / f"{name}.rec") as w:
        w.write_idx(0, pack(IRHeader(0, header or [n + 1.0, n + 1.0 + len(runs)], 0, 0), b""))
        for k, (img, lab) in enumerate(zip(imgs, labels), 1):
            w.write_idx(k, pack(IRHeader(0, float(lab), k, 0), img))
        for j, (_, s, e) in enumerate(runs):
            w.write_idx(n + 1 + j, pack(IRHeader(0, [float(s), float(e)], 0, 0), b""))
    return d


def plain_rec(d: Path, imgs: list[bytes], labels: list, name: str = "train") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    with IndexedRecordIOWriter(d / f"{name}.idx", d / f"{name}.rec") as w:
        for k, (img, lab) in enumerate(zip(imgs, labels)):
            w.write_idx(k, pack(IRHeader(0, float(lab), k, 0), img))
    return d


def run_pipeline(tmp_path: Path, text: str):
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run

    return run(load_config(write_config(tmp_path, text, f"p{len(list(tmp_path.glob('p*.yaml')))}.yaml")), progress=False)


TRY = """
def attempt(fn):
    try:
        return {"ok": repr(fn())[:300]}
    except Exception as e:
        return {"error": type(e).__name__, "message": str(e)}
"""


def idents(folders: Path) -> list[str]:
    """The identity folders a folders sink wrote."""
    return sorted(p.name for p in folders.iterdir() if p.is_dir() and not p.name.startswith("."))


def bounded(code: str, *args, extra_mb: int = 768) -> dict:
    """Run ``code`` in a fresh python whose address space is capped at what it holds after
    its imports plus ``extra_mb``: an allocation sized by a hostile count or header fails
    there (MemoryError) instead of taking the machine's memory. ``code`` (which may call
    ``attempt(fn)``: ``{"ok": repr}`` or ``{"error": type, "message": str}``) prints JSON."""
    if not sys.platform.startswith("linux"):
        pytest.skip("address-space caps are checked on Linux (RLIMIT_AS, /proc/self/status)")
    prelude = textwrap.dedent(
        f"""
        import json, resource, sys
        import numpy, cv2, PIL.Image
        import facekit.formats.facerec, facekit.formats.rec_inspect, facekit.formats.rec_verify, facekit.torch
        vm = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + {extra_mb} * 2**20, resource.RLIM_INFINITY))
        """
    )
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    p = subprocess.run(
        [sys.executable, "-c", prelude + TRY + textwrap.dedent(code), *map(str, args)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.splitlines()[-1])


# ---------------------------------------------------------------- counts from the header



def test_header_counts_beyond_the_idx_allocate_nothing(tmp_path, imgs):
    """A header label [2e8, 2e8+2] over an 8-image file: FaceRec, inspect, verify and the
    torch dataset answer at once in bounded memory (they used to build 2e8-key ranges:
    7-9 GB, then MemoryError), naming file, key 0 and its offset."""
    d = face_rec(tmp_path / "d", imgs, [0] * 4 + [1] * 4, header=[2e8, 2e8 + 64])  # both exact in float32
    out = bounded(
        """
        from facekit.formats.facerec import FaceRec
        from facekit.formats.rec_inspect import inspect
        from facekit.formats.rec_verify import verify
        from facekit.torch import FaceRecDataset
        d = sys.argv[1]
        res = {
            "facerec": attempt(lambda: len(FaceRec(d))),
            "inspect": attempt(lambda: inspect(d)["images"]),
            "torch": attempt(lambda: len(FaceRecDataset(d))),
            "verify": attempt(lambda: verify(d, decode=False)["problems"]),
        }
        print(json.dumps(res))
        """,
        d,
    )
    for who in ("facerec", "inspect", "torch"):
        assert out[who].get("error") == "RecordIOError", (who, out[who])
        assert out[who]["message"] == (
            f"{d / 'train.rec'}: key 0, record at offset 0: header label [200000000, 200000064] needs keys "
            f"0..200000063, but {d / 'train.idx'} lists 11 records"
        )
    assert "header label [200000000, 200000064] needs keys up to 200000063, but the idx's keys end at 10" in out["verify"]["ok"]


def test_header_counts_beyond_the_idx_in_a_pipeline(tmp_path, imgs):
    d = face_rec(tmp_path / "d", imgs, [0] * 8, header=[2e8, 2e8 + 1])
    with pytest.raises(FacekitError, match=r"^mxrec source: .*train\.rec: key 0, record at offset 0: header label \[200000000"):
        run_pipeline(tmp_path, f"output: out\nsource: {{plugin: mxrec, path: {d}}}\nsinks: [{{plugin: folders, path: f}}]\n")


# ---------------------------------------------------------------- labels and flags

BAD_LABELS = [1e30, float("inf"), float("nan"), -1.0, 2.0**31, 2.5]


@pytest.mark.parametrize("bad", BAD_LABELS, ids=["1e30", "inf", "nan", "negative", "2**31", "fraction"])
def test_labels_that_are_not_class_ids(tmp_path, imgs, bad):
    """A label of 1e30/inf/nan/-1/2**31/2.5: inspect and verify report it (they raised a raw
    OverflowError), the mxrec source rejects the record (it made an identity folder named
    1000000015047466219876688855040), the torch dataset raises RecordIOError."""
    from facekit.torch import FaceRecDataset

    d = face_rec(tmp_path / "d", imgs, [0, 0, 0, 0, bad, 1, 1, 1])
    bad = float(np.float32(bad))  # as stored
    key5 = dict(read_idx(d / "train.idx"))[5]
    info = inspect(d)
    if bad != 2.5:  # a fraction is counted non-integral (and truncated), as before
        assert info["labels"]["invalid"] == 1
        assert info["labels"]["invalid_examples"] == [f"{d / 'train.rec'}: key 5, offset {key5}: label {bad}"]
        assert info["images"] == 8 and info["identities"] == 2
    rep = verify(d, decode=False)
    assert not rep["ok"]
    assert f"{d / 'train.rec'}: key 5, offset {key5}: label {bad} is not a class id (an integer in 0..2147483647)" in rep["problems"]
    with pytest.raises(RecordIOError, match=re.escape(f"train.rec: key 5, record at offset {key5}: label {bad} is not a class id")):
        FaceRecDataset(d)[4]
    assert int(FaceRecDataset(d)[5][1]) == 1
    for order in ("file", "label"):
        s = run_pipeline(
            tmp_path,
            f"output: out-{order}\nsource: {{plugin: mxrec, path: {d}, order: {order}}}\nsinks: [{{plugin: folders, path: f}}]\n",
        )
        assert s.faces_kept == 7 and s.rejects == {"bad_label": 1}, order
        assert idents(tmp_path / f"out-{order}" / "f") == ["0", "1"]
        rejects = (tmp_path / f"out-{order}" / "rejects.tsv").read_text()
        assert f"train.rec:5\t\tbad_label\t{d / 'train.rec'}: key 5, record at offset {key5}: label {bad} is not a class id" in rejects


def test_flag_0xffffffff_reads_nothing_more(tmp_path, imgs, monkeypatch):
    """An IRHeader flag of 0xFFFFFFFF (16 GB of labels): read_header fails from the record's
    own length, no read asks for more than the file holds; inspect raises one line,
    verify reports, the mxrec source rejects."""
    d = face_rec(tmp_path / "d", imgs, [0] * 4 + [1] * 4)
    off = dict(read_idx(d / "train.idx"))[3]
    b = bytearray((d / "train.rec").read_bytes())
    b[off + 8 : off + 12] = struct.pack("<I", 0xFFFFFFFF)
    (d / "train.rec").write_bytes(bytes(b))
    size = len(b)
    real = os.pread
    sizes = []
    monkeypatch.setattr(os, "pread", lambda fd, n, o: sizes.append(n) or real(fd, n, o))
    msg = rf"train\.rec: key 3, record at offset {off}: IRHeader flag=4294967295 needs 17179869180 label bytes, payload has \d+$"
    with RecordIOReader(d / "train.rec") as r, pytest.raises(RecordIOError, match=msg):
        r.read_header(off, 3)
    with pytest.raises(RecordIOError, match=msg):
        inspect(d)
    assert max(sizes) <= size
    rep = verify(d, decode=False)
    assert any(p.startswith(f"{d / 'train.rec'}: key 3, offset {off}: payload is not an image record: IRHeader flag=4294967295") for p in rep["problems"])
    monkeypatch.undo()
    for order in ("file", "label"):
        s = run_pipeline(tmp_path, f"output: o-{order}\nsource: {{plugin: mxrec, path: {d}, order: {order}}}\nsinks: [{{plugin: folders, path: f}}]\n")
        assert s.faces_kept == 7 and s.rejects == {"bad_record": 1}, order


def test_order_label_rejects_a_bad_record_and_goes_on(tmp_path, imgs):
    """order: label reads every header first; one damaged record is a reject there (as with
    order: file), not the end of the conversion."""
    d = plain_rec(tmp_path / "d", imgs, [1, 0, 1, 0, 1, 0, 1, 0])
    off = dict(read_idx(d / "train.idx"))[2]
    b = bytearray((d / "train.rec").read_bytes())
    b[off] ^= 0xFF  # bad magic
    (d / "train.rec").write_bytes(bytes(b))
    s = run_pipeline(tmp_path, f"output: out\nsource: {{plugin: mxrec, path: {d}, order: label}}\nsinks: [{{plugin: folders, path: f}}]\n")
    assert s.faces_kept == 7 and s.rejects == {"bad_record": 1}
    assert f"train.rec:2\t\tbad_record\t{d / 'train.rec'}: key 2, record at offset {off}: bad magic" in (tmp_path / "out" / "rejects.tsv").read_text()
    assert [len(list((tmp_path / "out" / "f" / i).iterdir())) for i in idents(tmp_path / "out" / "f")] == [4, 3]


# ---------------------------------------------------------------- idx: duplicates, empty

def test_idx_repeating_one_offset(tmp_path, imgs):
    """An idx listing one record under 3,000 keys: verify flags it once, inspect counts it,
    the mxrec source reads the record once and rejects each repeat with its reason (it used
    to write 3,000 copies)."""
    d = plain_rec(tmp_path / "d", imgs, [0] * 8)
    off = dict(read_idx(d / "train.idx"))[4]
    with open(d / "train.idx", "a") as f:
        f.write("".join(f"{k}\t{off}\n" for k in range(8, 3008)))
    rep = verify(d, decode=False)
    assert not rep["ok"] and rep["images"] == 8
    assert f"{d / 'train.idx'}: key 4, offset {off}: idx lists this offset under 3001 keys (4, 8, 9, 10, 11, ...): one record read 3001 times" in rep["problems"]
    info = inspect(d, sample=0)
    assert info["files"][0]["duplicate_offsets"] == 3000
    s = run_pipeline(tmp_path, f"output: out\nsource: {{plugin: mxrec, path: {d}}}\nsinks: [{{plugin: folders, path: f}}]\n")
    assert s.faces_kept == 8 and s.rejects == {"duplicate_record": 3000}
    assert len(list((tmp_path / "out" / "f" / "0").iterdir())) == 8
    assert f"train.rec:3007\t\tduplicate_record\tidx offset {off} is also listed as key 4: the record is read once" in (tmp_path / "out" / "rejects.tsv").read_text()


def test_empty_idx_beside_a_full_rec(tmp_path, imgs):
    d = plain_rec(tmp_path / "d", imgs, [0] * 8)
    (d / "train.idx").write_bytes(b"")
    size = (d / "train.rec").stat().st_size
    want = f"{d / 'train.idx'}: empty idx beside {d / 'train.rec'} ({size} bytes of records): rebuild it with 'facekit reindex --force'"
    with pytest.raises(RecordIOError) as e:
        FaceRec(d)
    assert str(e.value).startswith(want) and "\n" not in str(e.value)
    with pytest.raises(FacekitError, match="empty idx beside"):
        run_pipeline(tmp_path, f"output: out\nsource: {{plugin: mxrec, path: {d}}}\nsinks: [{{plugin: folders, path: f}}]\n")
    rep = verify(d, decode=False)
    assert not rep["ok"] and sum("record not listed in the idx" in p for p in rep["problems"]) == 8
    assert f"{d / 'train.idx'}: empty idx beside a {size}-byte .rec (facekit reindex --force rebuilds it)" in rep["problems"]
    # an empty idx beside an empty rec is an empty dataset (and verify says so)
    (d / "train.rec").write_bytes(b"")
    assert len(FaceRec(d)) == 0


# ---------------------------------------------------------------- image headers

def _claim_size(jpeg: bytes, w: int, h: int) -> bytes:
    """The JPEG with its SOF segment claiming ``w`` x ``h`` pixels (data unchanged)."""
    i = 2
    while True:
        assert jpeg[i] == 0xFF
        m = jpeg[i + 1]
        if 0xC0 <= m <= 0xC2:
            return jpeg[: i + 5] + struct.pack(">HH", h, w) + jpeg[i + 9 :]
        i += 2 + int.from_bytes(jpeg[i + 2 : i + 4], "big")


def test_jpeg_header_claiming_30000x30000(tmp_path, imgs):
    """A record whose JPEG header claims 30000x30000: the torch dataset checks the header
    before decoding (it used to allocate 5.8 GB) and raises RecordIOError naming file, key
    and offset; inspect's sample lists it unrecognised; verify reports it."""
    assert image_hw(_claim_size(imgs[0], 30000, 30000)) == (30000, 30000)
    big = [imgs[0], _claim_size(imgs[1], 30000, 30000)] + imgs[2:]
    d = face_rec(tmp_path / "d", big, [0] * 4 + [1] * 4)
    off = dict(read_idx(d / "train.idx"))[2]
    out = bounded(
        """
        from facekit.torch import FaceRecDataset
        ds = FaceRecDataset(sys.argv[1])
        print(json.dumps({"good": attempt(lambda: tuple(ds[0][0].shape)), "big": attempt(lambda: ds[1])}))
        """,
        d,
        extra_mb=1024,
    )
    assert out["good"] == {"ok": "(3, 112, 112)"}
    assert out["big"] == {
        "error": "RecordIOError",
        "message": f"{d / 'train.rec'}: key 2, record at offset {off}: image header claims 30000x30000 pixels (WxH), over the limit of 89478485",
    }
    info = inspect(d, sample=8)
    assert info["sample"]["encodings"] == {"JPEG": 7, "unrecognised": 1}
    assert info["sample"]["unrecognised"][0].startswith(f"{d / 'train.rec'}: key 2: DecompressionBombError")
    rep = verify(d)
    assert any(p.startswith(f"{d / 'train.rec'}: key 2, offset {off}: image not decodable") for p in rep["problems"])


def test_image_hw_reads_headers_as_pillow(tmp_path, data_dir):
    """image_hw (JPEG SOF / PNG IHDR parsed directly, else Pillow) gives Pillow's size for
    every shared image and for progressive JPEG, PNG, BMP and WebP encodings."""
    import io

    from PIL import Image

    files = [p for p in sorted(data_dir.rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp")]
    assert len(files) > 50
    for p in files:
        data = p.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            assert image_hw(data) == (im.size[1], im.size[0]), p
    with Image.open(files[0]) as im:
        im = im.convert("RGB").resize((131, 77))
    for fmt, kw in (("JPEG", {"progressive": True}), ("PNG", {}), ("BMP", {}), ("WEBP", {})):
        buf = io.BytesIO()
        im.save(buf, fmt, **kw)
        assert image_hw(buf.getvalue()) == (77, 131), fmt
    with pytest.raises(ValueError, match="no image size readable"):
        image_hw(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError):
        image_hw(b"")


# ---------------------------------------------------------------- the mxrec sink: one size

def test_mxrec_sink_refuses_mixed_sizes(tmp_path, data_dir):
    """Whole photos of several sizes into the mxrec sink (what a detector without an
    aligner produced: 2400x1702 photos in train.rec, property 9,1137,910): a one-line error
    naming the first image whose size differs, its size and the dataset's; no output."""
    from facekit_plugins.mxrec import MxrecSink

    assert MxrecSink.uniform_size is True
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir(parents=True)
    aligned = sorted((data_dir / "aligned_112").glob("*.jpg"))
    for p in aligned[:3]:
        os.symlink(p, root / "a" / p.name)
    photo = sorted((data_dir / "images" / "identities" / "Amy_Adams").iterdir())[0]
    os.symlink(aligned[3], root / "b" / "0.jpg")
    os.symlink(photo, root / "b" / "1.jpg")
    w, h = image_hw(photo.read_bytes())[::-1]
    with pytest.raises(FacekitError) as e:
        run_pipeline(tmp_path, f"output: out\nsource: {{plugin: folders, root: {root}, min_images: 1}}\nsinks: [{{plugin: mxrec, path: rec}}]\n")
    msg = str(e.value)
    assert msg == (
        f"mxrec: {root / 'b' / '1.jpg'}: image is {w}x{h} (WxH) but the dataset's images are 112x112 "
        f"(from {root / 'a' / aligned[0].name}); a RecordIO dataset holds one size: align the faces (an aligner) or resize them"
    )
    assert not (tmp_path / "out" / "rec").exists()
    # the CLI prints it as one line and exits 1
    from facekit.cli import main

    r = CliRunner().invoke(main, ["run", "-q", str(tmp_path / "p0.yaml")])
    assert r.exit_code == 1 and r.output.strip().splitlines() == [f"error: {msg}"]


# ---------------------------------------------------------------- verify: no images

@pytest.mark.parametrize("kind", ["empty files", "header only"])
def test_verify_calls_an_empty_dataset_a_problem(tmp_path, imgs, kind):
    from facekit.cli import main

    d = tmp_path / "d"
    if kind == "empty files":
        d.mkdir()
        (d / "train.rec").write_bytes(b"")
        (d / "train.idx").write_bytes(b"")
    else:  # what the sink writes for 0 images: header [1, 1], nothing else
        face_rec(d, [], [])
    rep = verify(d)
    assert not rep["ok"] and rep["images"] == 0
    assert rep["problems"] == [f"{d / 'train.rec'}: no images (an empty dataset)"]
    r = CliRunner().invoke(main, ["verify", str(d)])
    assert r.exit_code == 1 and "no images" in r.output and "1 PROBLEM(S)" in r.output


# ---------------------------------------------------------------- the mxrec source: count()

def test_mxrec_source_count(tmp_path, imgs):
    """count() is the number of image records, from the idx: what __iter__ yields (samples
    and rejects); None without an idx (counting would mean a scan) or when unreadable."""
    from facekit.plugins import get_registry

    cls = get_registry().get("source", "mxrec")

    def source(path, **kw):
        return cls(cls.Params(path=path, **kw))

    ins = face_rec(tmp_path / "ins", imgs, [0] * 4 + [1] * 4)
    pl = plain_rec(tmp_path / "pl", imgs[:5], [0, 0, 1, 1, 2])
    assert source(ins).count() == 8 and len(list(source(ins))) == 8
    assert source(pl).count() == 5 and source(pl, order="label").count() == 5
    # a damaged record and a repeated offset still yield one item each
    off = dict(read_idx(pl / "train.idx"))[1]
    b = bytearray((pl / "train.rec").read_bytes())
    b[off] ^= 0xFF
    (pl / "train.rec").write_bytes(bytes(b))
    with open(pl / "train.idx", "a") as f:
        f.write(f"5\t{dict(read_idx(pl / 'train.idx'))[3]}\n")
    items = list(source(pl))
    assert source(pl).count() == len(items) == 6
    assert sorted(type(x).__name__ for x in items) == ["Reject", "Reject", "Sample", "Sample", "Sample", "Sample"]
    # shards: the sum of the parts
    for i in range(2):
        face_rec(tmp_path / "sh", imgs[4 * i : 4 * i + 4], [i] * 4, name=f"train-{i:05d}-of-00002")
    assert source(tmp_path / "sh").count() == 8
    (tmp_path / "sh" / "train-00001-of-00002.idx").unlink()
    assert source(tmp_path / "sh").count() is None


def test_mxrec_sink_identity_split_across_calls_and_batches(tmp_path, imgs, monkeypatch):
    """write_many may get an identity in pieces, a batch flush between them (it raised
    IndexError when a flush fell inside an identity): the files equal one whole call's."""
    from facekit.stages import Sample
    from facekit_plugins.mxrec import MxrecParams, MxrecSink

    samples = [Sample(key=i, path=f"x/{i}.jpg", identity=str(i // 5), data=imgs[i % 8], label=i // 5) for i in range(15)]

    def write(name, chunk, batch):
        monkeypatch.setattr(MxrecSink, "BATCH", batch)
        from facekit.pipeline.publish import Publication

        sink = MxrecSink(MxrecParams(path=tmp_path / name))
        pub = Publication(tmp_path)
        sink.open(pub)
        for j in range(0, len(samples), chunk):
            sink.write_many(samples[j : j + chunk])
        stats = sink.close()
        pub.commit()
        return stats

    assert write("whole", 15, 256)["identities"] == 3
    assert write("split", 3, 4)["identities"] == 3
    for f in ("train.rec", "train.idx", "property", "train.lst", "train.identities.tsv"):
        assert (tmp_path / "split" / f).read_bytes() == (tmp_path / "whole" / f).read_bytes(), f
