"""facekit inspect / verify / reindex on real faces (aligned_112): correct reports on good
files, and each kind of damage named by file, key and offset with a non-zero exit."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import facekit_cli
from facekit.cli import main
from facekit.formats.rec_inspect import inspect
from facekit.formats.rec_verify import verify
from facekit.formats.idx import read_idx
from facekit.formats.recordio import IndexedRecordIOWriter, IRHeader, pack


def make_face_rec(d: Path, imgs: list[bytes], labels: list[int], ranges=None, prop="2,112,112", name="train"):
    """An insightface-layout file written record by record (so tests can break it)."""
    d.mkdir(parents=True, exist_ok=True)
    n = len(imgs)
    if ranges is None:
        ranges = []
        for k, lab in enumerate(labels, 1):
            if ranges and ranges[-1][0] == lab:
                ranges[-1][2] = k + 1
            else:
                ranges.append([lab, k, k + 1])
        ranges = [(s, e) for _, s, e in ranges]
    with IndexedRecordIOWriter(d / f"{name}.idx", d / f"{name}.rec") as w:
        w.write_idx(0, pack(IRHeader(0, [n + 1.0, n + 1.0 + len(ranges)], 0, 0), b""))
        for k, (img, lab) in enumerate(zip(imgs, labels), 1):
            w.write_idx(k, pack(IRHeader(0, float(lab), k, 0), img))
        for j, (s, e) in enumerate(ranges):
            w.write_idx(n + 1 + j, pack(IRHeader(0, [float(s), float(e)], 0, 0), b""))
    if prop is not None:
        (d / "property").write_text(prop + "\n")
    return d


@pytest.fixture(scope="module")
def imgs(data_dir) -> list[bytes]:
    return [p.read_bytes() for p in sorted((data_dir / "aligned_112").glob("*.jpg"))]


@pytest.fixture
def good(tmp_path, imgs) -> Path:
    return make_face_rec(tmp_path / "good", imgs, [0, 0, 0, 0, 1, 1, 1, 1])


def offsets(d: Path) -> dict[int, int]:
    return dict(read_idx(d / "train.idx"))


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_inspect_reports_the_dataset(good):
    info = inspect(good)
    assert info["layout"] == "insightface" and info["records"] == 11 and info["images"] == 8
    assert info["identities"] == 2 and info["identity_records"] == 2
    assert info["images_per_identity"] == {"min": 4, "max": 4, "mean": 4.0, "median": 4.0, "histogram": {"2-5": 2}}
    assert info["labels"]["kinds"] == {"scalar": 8} and info["labels"]["contiguous"]
    assert info["sample"]["encodings"] == {"JPEG": 8} and info["sample"]["sizes"] == {"112x112": 8}
    assert info["property"]["num_classes"] == 2
    r = cli("inspect", good, "--json")
    assert r.exit_code == 0 and json.loads(r.output)["images"] == 8
    r = cli("inspect", good)
    assert "layout            insightface" in r.output and "identities        2" in r.output


def test_cli_commands_under_python_m(good):
    """The commands are registered also when the CLI runs as ``python -m facekit.cli.main``."""
    p = facekit_cli("verify", good)
    assert p.returncode == 0, p.stderr
    assert "OK (1 file(s), layout insightface, 8 images, 2 identities, decoded)" in p.stdout


def test_verify_good_file_and_json(good):
    rep = verify(good)
    assert rep["ok"] and rep["problems"] == [] and rep["decoded_sizes"] == {"112x112": 8}
    r = cli("verify", good, "--json", "-j", "2")
    assert r.exit_code == 0 and json.loads(r.output)["ok"]


def _problems(d) -> list[str]:
    r = cli("verify", d)
    assert r.exit_code == 1, r.output
    return r.output.splitlines()


def test_verify_bad_magic(good):
    off = offsets(good)[3]
    b = bytearray((good / "train.rec").read_bytes())
    b[off] ^= 0xFF
    (good / "train.rec").write_bytes(bytes(b))
    out = _problems(good)
    assert any(f"train.rec: key 3, offset {off}: bad magic" in ln for ln in out)
    assert any(f"train.idx: key 3, offset {off}: idx offset points at a bad record" in ln for ln in out)
    assert out[-1].endswith("(1 file(s), layout insightface, 7 images, 2 identities, decoded)") and "PROBLEM" in out[-1]


def test_verify_truncated(good):
    off = offsets(good)[10]  # the last identity record
    data = (good / "train.rec").read_bytes()
    (good / "train.rec").write_bytes(data[: off + 6])
    out = _problems(good)
    assert any(f"train.rec: key 10, offset {off}: truncated" in ln for ln in out)


def test_verify_garbage_and_wrong_idx(good):
    lines = (good / "train.idx").read_text().splitlines()
    off4 = int(lines[4].split("\t")[1])
    lines[4] = f"4\t{off4 + 16}"
    (good / "train.idx").write_text("\n".join(lines) + "\n")
    out = _problems(good)
    assert any(f"train.idx: key 4, offset {off4 + 16}: idx offset is not the start of a record" in ln for ln in out)
    assert any(f"train.rec: offset {off4}: record not listed in the idx" in ln for ln in out)
    lines[4] = "4 garbage"
    (good / "train.idx").write_text("\n".join(lines) + "\n")
    out = _problems(good)
    assert any("train.idx:5: bad idx line b'4 garbage'" in ln for ln in out)


def test_verify_idx_with_more_rows_than_the_header(good):
    """insightface issue 1065: an idx with rows the header does not account for."""
    with open(good / "train.idx", "a") as f:
        f.write(f"11\t{offsets(good)[2]}\n")
    out = _problems(good)
    assert any("idx has 1 key(s) the header does not account for (header [9, 11], e.g. key 11)" in ln for ln in out)


def test_verify_identity_records_and_labels(tmp_path, imgs):
    d = make_face_rec(tmp_path / "a", imgs, [0, 0, 0, 0, 1, 1, 1, 1], ranges=[(1, 4), (5, 9)])
    out = _problems(d)
    assert any("key 10, offset" in ln and "identity range [5, 9) does not start where the previous ended (4)" in ln for ln in out)
    d = make_face_rec(tmp_path / "b", imgs, [0, 0, 1, 1, 0, 0, 1, 1], ranges=[(1, 9)])
    out = _problems(d)
    assert any("key 5, offset" in ln and "label 0 appears again after other labels" in ln for ln in out)
    assert any("key 9, offset" in ln and "identity range [1, 9) holds several labels [0, 1]" in ln for ln in out)


def test_verify_property(tmp_path, imgs):
    d = make_face_rec(tmp_path / "a", imgs, [0] * 4 + [1] * 4, prop="3,112,112")
    assert any("property: num_classes 3 but the data has labels 0..1" in ln for ln in _problems(d))
    d = make_face_rec(tmp_path / "b", imgs, [0] * 4 + [1] * 4, prop="2,120,112")
    out = _problems(d)
    assert sum("image is 112x112 (WxH) but property says 112x120" in ln for ln in out) == 8
    d = make_face_rec(tmp_path / "c", imgs, [0] * 4 + [1] * 4, prop="2;112;112")
    assert any("property must be one line 'num_classes,height,width'" in ln for ln in _problems(d))


def test_verify_undecodable_image(tmp_path, imgs):
    broken = list(imgs)
    broken[2] = imgs[2][: len(imgs[2]) // 3]  # a truncated JPEG, framing intact
    d = make_face_rec(tmp_path / "a", broken, [0] * 4 + [1] * 4)
    off = offsets(d)[3]
    out = _problems(d)
    assert any(f"train.rec: key 3, offset {off}: image not decodable: truncated" in ln for ln in out)
    assert cli("verify", d, "--no-decode").exit_code == 0


def test_verify_identity_split_across_shards(tmp_path, imgs):
    make_face_rec(tmp_path / "s", imgs[:4], [0, 0, 1, 1], prop="3,112,112", name="train-00000-of-00002")
    make_face_rec(tmp_path / "s", imgs[4:], [1, 1, 2, 2], prop="3,112,112", name="train-00001-of-00002")
    out = _problems(tmp_path / "s")
    assert any("train-00001-of-00002.rec: label 1 also in" in ln and "identity split across shards" in ln for ln in out)
    (tmp_path / "s" / "train-00001-of-00002.rec").unlink()
    r = cli("verify", tmp_path / "s")
    assert r.exit_code == 1 and "incomplete shard set, missing 1 of 2: train-00001-of-00002.rec" in r.output


def test_reindex(good):
    want = (good / "train.idx").read_bytes()
    r = cli("reindex", good / "train.rec")
    assert r.exit_code == 1 and "exists; use --force" in r.output
    (good / "train.idx").unlink()
    r = cli("reindex", good / "train.rec")
    assert r.exit_code == 0 and "11 records, keys by ordinal" in r.output
    assert (good / "train.idx").read_bytes() == want
    assert cli("verify", good).exit_code == 0
    # a damaged file: refused, or indexed up to the damage with --partial
    off = offsets(good)[6]
    data = bytearray((good / "train.rec").read_bytes())
    data[off + 4 : off + 8] = struct.pack("<I", 2 << 29)  # cflag 2 at a record start
    (good / "train.rec").write_bytes(bytes(data))
    r = cli("reindex", good / "train.rec", "--idx", good / "x.idx")
    assert r.exit_code == 1 and f"record at offset {off}: cflag 2" in r.output
    assert not (good / "x.idx").exists()
    r = cli("reindex", good / "train.rec", "--idx", good / "x.idx", "--partial")
    assert r.exit_code == 0 and "6 records" in r.output and "warning: stopped at a damaged record" in r.output
    assert (good / "x.idx").read_bytes() == b"".join(want.splitlines(keepends=True)[:6])


def _resized_identities(src: Path, dst: Path, size: int = 112) -> Path:
    """The identity folders of ``src`` with every photo resized to ``size`` x ``size`` JPEG
    (an mxrec dataset holds one image size)."""
    import cv2

    from facekit.vision.images import decode_image, encode_jpeg

    for f in sorted(src.glob("*/*")):
        (dst / f.parent.name).mkdir(parents=True, exist_ok=True)
        img = cv2.resize(decode_image(f.read_bytes()), (size, size), interpolation=cv2.INTER_AREA)
        (dst / f.parent.name / (f.stem + ".jpg")).write_bytes(encode_jpeg(img))
    return dst


def test_shards_read_as_one_dataset(tmp_path, data_dir):
    """The sink's shards of the 94 real photos (resized to one size): verify OK as a set,
    inspect sums the parts, and the set reads as the same image stream as the single file."""
    from conftest import write_config
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run
    from facekit.formats.facerec import FaceRec

    root = _resized_identities(data_dir / "images" / "identities", tmp_path / "faces")
    cfg = write_config(
        tmp_path,
        f"""
        output: out
        source: {{plugin: folders, root: {root}, min_images: 1}}
        sinks: [{{plugin: mxrec, path: one}}, {{plugin: mxrec, path: sh, shards: 4}}]
        """,
    )
    s = run(load_config(cfg), progress=False)
    per = s.sinks["sinks[1] (mxrec)"]["images_per_file"]
    assert len(per) == 4 and sum(per) == 94 and max(per) - min(per) <= 12  # identities of up to 11 images
    one, sh = FaceRec(tmp_path / "out" / "one"), FaceRec(tmp_path / "out" / "sh")
    assert len(sh.parts) == 4 and len(sh) == len(one) == 94
    assert [(h.label, h.id, img) for _, h, img in sh] == [(h.label, h.id, img) for _, h, img in one]
    rep = verify(tmp_path / "out" / "sh", decode=False)
    assert rep["ok"], rep["problems"]
    info = inspect(tmp_path / "out" / "sh", sample=10)
    assert info["images"] == 94 and info["identities"] == 21 and len(info["files"]) == 4
    assert info["images_per_identity"]["histogram"] == {"1": 3, "2-5": 14, "11-20": 4}


def test_plan_shards():
    from facekit_plugins.mxrec import plan_shards

    assert plan_shards([5, 5, 5, 5], 2) == [0, 2, 4]
    assert plan_shards([1, 1, 10, 1, 1], 2) == [0, 2, 5]  # tie: the earlier boundary
    assert plan_shards([1, 1, 10, 1, 1], 3) == [0, 2, 3, 5]
    assert plan_shards([3], 3) == [0, 0, 1, 1]  # more shards than identities: empty shards
    cuts = plan_shards([7] * 100, 8)
    assert cuts[0] == 0 and cuts[-1] == 100 and all(b - a in (12, 13) for a, b in zip(cuts, cuts[1:]))


def test_example_configs_validate(tmp_path, data_dir):
    """configs/rec2folders.yaml, folders2rec.yaml, rec2plain.yaml validate once their
    placeholder inputs exist (here: a real rec and real identity folders)."""
    from facekit.pipeline.config import parse_config

    repo = Path(__file__).resolve().parents[1]
    cfgdir = tmp_path / "configs"
    cfgdir.mkdir()
    make_face_rec(tmp_path / "faces_emore", [p.read_bytes() for p in sorted((data_dir / "aligned_112").glob("*.jpg"))], [0] * 4 + [1] * 4)
    (tmp_path / "rec2folders-out" / ".facekit").mkdir(parents=True)  # a facekit output folder
    os.symlink(data_dir / "images" / "identities", tmp_path / "rec2folders-out" / "folders")
    for name in ("rec2folders.yaml", "folders2rec.yaml", "rec2plain.yaml"):
        text = (repo / "configs" / name).read_text()
        spec = parse_config(text, source=name, config_dir=cfgdir)
        assert spec.sinks and spec.source


def test_more_shards_than_identities_and_param_checks(tmp_path, data_dir):
    """3 shards of 2 identities: one empty but valid shard; shuffle needs the plain layout."""
    from conftest import write_config
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run
    from facekit.errors import ConfigError
    from facekit.formats.facerec import FaceRec

    root = tmp_path / "root"
    for p in sorted((data_dir / "aligned_112").glob("*.jpg")):
        (root / p.stem.rsplit("_", 1)[0]).mkdir(parents=True, exist_ok=True)
        os.symlink(p, root / p.stem.rsplit("_", 1)[0] / p.name)
    cfg = write_config(tmp_path, "output: out\nsource: {plugin: folders, root: root}\nsinks: [{plugin: mxrec, path: sh, shards: 3}]\n")
    s = run(load_config(cfg), progress=False)
    assert s.sinks["sinks[0] (mxrec)"]["images_per_file"] == [4, 0, 4]
    rec = FaceRec(tmp_path / "out" / "sh")
    assert [len(p) for p in rec.parts] == [4, 0, 4] and rec.parts[1].header0 == (1, 1)
    assert verify(tmp_path / "out" / "sh")["ok"]
    bad = write_config(tmp_path, "output: o\nsource: {plugin: folders, root: root}\nsinks: [{plugin: mxrec, path: r, shuffle: true}]\n", "bad.yaml")
    with pytest.raises(ConfigError, match=r"sinks\[0\] \(mxrec\): parameter 'shuffle': shuffle needs layout: plain"):
        load_config(bad)
