"""Verification sets end to end on the real photos and models: a bin built from
../shared/data/images/identities with SCRFD detection + arcface alignment, scored with the
MobileFaceNet model; bin -> folder -> bin; bin -> re-encoded baseline-JPEG bin; a pair
whose face is missing fails the run or, when asked, is left out whole and reported."""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, facekit_cli, write_config
from facekit.pipeline.config import load_config, parse_config
from facekit.pipeline.engine import run
from facekit.errors import FacekitError
from facekit.formats.evalbin import load_bin
from facekit.vision.images import decode_image
from facekit.formats.pairs import Pair, folder_pairs, write_pairs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def identities_bin(tmp_path_factory, data_dir, scrfd_model):
    """The identities folder -> pairs list (all positives + as many seeded negatives) ->
    retinaface (SCRFD-500m) -> arcface 112 -> ids.bin (build_eval_pack style)."""
    tmp = tmp_path_factory.mktemp("idsbin")
    root = data_dir / "images" / "identities"
    pairs = folder_pairs(root, seed=0)
    write_pairs(tmp / "pairs.txt", pairs)
    cfg = write_config(
        tmp,
        f"""
        output: out
        source: {{plugin: pairs, pairs: pairs.txt, root: {root}}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        aligner: {{plugin: arcface, size: 112}}
        encode: {{quality: 95}}
        sinks:
          - {{plugin: evalbin, path: ids.bin}}
        """,
    )
    summary = run(load_config(cfg), progress=False)
    return tmp / "out" / "ids.bin", pairs, summary


def _is_baseline_jpeg(data: bytes) -> bool:
    """A JPEG whose frame header is SOF0 (baseline DCT), not progressive (SOF2) or other."""
    if not data.startswith(b"\xff\xd8"):
        return False
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker in (0xC0,):
            return True
        if 0xC1 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return False
        i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return False


def test_identities_bin_is_built_in_pair_order(identities_bin, data_dir):
    path, pairs, summary = identities_bin
    assert summary.images_read == 2 * len(pairs) == 1148 and summary.rejects == {}
    st = next(iter(summary.sinks.values()))
    assert st == {"path": str(path), "protocol": 4, "pairs": 574, "positives": 287, "negatives": 287, "dropped": 0}
    raw = pickle.loads(path.read_bytes())
    assert type(raw) is tuple and all(type(b) is bytes for b in raw[0]) and all(type(s) is bool for s in raw[1])
    bins, issame = load_bin(path)
    assert issame == [p.issame for p in pairs]
    # every image an aligned 112x112 baseline JPEG; the same source photo always gives the
    # same bytes, different photos different bytes: the pair order is the list's order
    root = data_dir / "images" / "identities"
    by_source: dict[bytes, set] = {}  # keyed by the photo's content (the material has one duplicate file)
    for i, b in enumerate(bins):
        assert _is_baseline_jpeg(b), f"record {i}"
        photo = (root / (pairs[i // 2].b if i % 2 else pairs[i // 2].a)).read_bytes()
        by_source.setdefault(photo, set()).add(b)
    assert all(len(v) == 1 for v in by_source.values())
    assert len({next(iter(v)) for v in by_source.values()}) == len(by_source) == 93
    assert decode_image(bins[0]).shape == (112, 112, 3)


def test_mobilefacenet_accuracy_cli_and_python(identities_bin, rec_model, tmp_path):
    from facekit.cli.eval import embed_bin
    from facekit.eval.recognition import OnnxEmbedder
    from facekit.eval.verification import verify

    path, pairs, _ = identities_bin
    out = tmp_path / "scores.json"
    r = facekit_cli("eval", "-m", rec_model, "--std", "128", "-b", "32", "--json", out, "-q", path)
    assert r.returncode == 0, r.stderr
    assert re.search(r"ids\.bin\s+574\s+287\s+\d+\.\d\d ± \d+\.\d\d", r.stdout), r.stdout
    doc = json.loads(out.read_text())
    assert doc["preprocess"]["size"] == [112, 112] and doc["preprocess"]["color"] == "RGB"
    assert doc["preprocess"]["std"] == 128 and doc["preprocess"]["source"]["size"] == "model input shape"
    res = doc["results"][0]
    print(
        f"\nids.bin: accuracy {100 * res['accuracy']:.2f} ± {100 * res['accuracy_std']:.2f} %, "
        f"TAR@FAR=1e-3 {100 * res['tar']:.2f} ± {100 * res['tar_std']:.2f} % (FAR {res['far']:.4f}), "
        f"XNorm {res['xnorm']:.3f}"
    )
    assert res["pairs"] == 574 and res["positives"] == 287
    assert res["accuracy"] > 0.95  # chance is 0.5
    assert res["tar"] > 0.8 and res["xnorm"] > 0
    # from Python on precomputed embeddings: the same numbers
    emb = OnnxEmbedder(rec_model, std=128)
    bins, issame = load_bin(path)
    e, f = embed_bin(emb, bins, str(path), batch_size=64, progress=False)
    assert e.shape == f.shape == (1148, 128) and e.dtype == np.float32
    mine = verify(e, issame, f)
    for k in ("accuracy", "accuracy_std", "tar", "tar_std", "far"):
        assert getattr(mine, k) == pytest.approx(res[k], abs=1e-12), k
    assert mine.xnorm == pytest.approx(res["xnorm"], rel=1e-5)
    # flip helps or is neutral, and random labels are near chance
    no_flip = verify(e, issame)
    assert no_flip.accuracy > 0.9
    shuffled = verify(e, list(np.random.default_rng(0).permutation(issame)), f)
    assert shuffled.accuracy < 0.7


def test_preprocessing_read_from_model_matches_insightface(identities_bin, rec_model):
    from insightface.model_zoo import get_model

    from facekit.eval.recognition import OnnxEmbedder

    path, _, _ = identities_bin
    bins, _ = load_bin(path)
    ref_model = get_model(str(rec_model), providers=["CPUExecutionProvider"])
    ours = OnnxEmbedder(rec_model)  # everything from the model: 112x112, RGB, 127.5/127.5
    assert (ours.pre.size, ours.pre.color, ours.pre.mean, ours.pre.std) == ((112, 112), "RGB", 127.5, 127.5)
    e, f = ours.embed_encoded(bins[:6])
    want = np.concatenate([ref_model.get_feat([decode_image(b)]) for b in bins[:6]])
    want_flip = np.concatenate([ref_model.get_feat([decode_image(b)[:, ::-1]]) for b in bins[:6]])
    assert np.allclose(e, want, atol=1e-4) and np.allclose(f, want_flip, atol=1e-4)
    # a larger image is resized to the input (shorter side, bicubic) rather than refused
    big = cv2.imencode(".png", cv2.resize(decode_image(bins[0]), (224, 224)))[1].tobytes()
    e_big, _ = ours.embed_encoded([big], flip=False)
    cos = float(e_big[0] @ e[0] / np.linalg.norm(e_big[0]) / np.linalg.norm(e[0]))
    assert cos > 0.95


def test_bin_to_folder_and_back_is_identical(identities_bin, tmp_path):
    path, pairs, _ = identities_bin
    cfg = write_config(
        tmp_path,
        f"""
        output: out
        source: {{plugin: evalbin, path: {path}}}
        sinks:
          - {{plugin: pairs, path: folder}}
        """,
        "bin2folder.yaml",
    )
    summary = run(load_config(cfg), progress=False)
    folder = tmp_path / "out" / "folder"
    lines = (folder / "pairs.txt").read_text().splitlines()
    assert len(lines) == 574 and lines[0] == "images/00000_a.jpg\timages/00000_b.jpg\t" + str(int(pairs[0].issame))
    bins, issame = load_bin(path)
    for i in (0, 1, 287, 573):
        a, b, flag = lines[i].split("\t")
        assert (folder / a).read_bytes() == bins[2 * i] and (folder / b).read_bytes() == bins[2 * i + 1]
        assert flag == str(int(issame[i]))
    assert next(iter(summary.sinks.values()))["pairs"] == 574
    # and back: the folder's list through the pairs source, bytes passed through (lfw2pack style)
    cfg = write_config(
        tmp_path,
        f"""
        output: back
        source: {{plugin: pairs, pairs: {folder / "pairs.txt"}}}
        sinks:
          - {{plugin: evalbin, path: again.bin, protocol: 2}}
        """,
        "folder2bin.yaml",
    )
    run(load_config(cfg), progress=False)
    again = tmp_path / "back" / "again.bin"
    assert again.read_bytes()[:2] == b"\x80\x02"
    assert load_bin(again) == (bins, issame)


def _public_style_bin(src: Path, dst: Path) -> None:
    """A bin like the public ones: numpy uint8 elements, protocol 2, and images that strict
    decoders refuse or mis-handle (progressive JPEG, PNG)."""
    bins, issame = load_bin(src)
    out = []
    for i, b in enumerate(bins):
        img = decode_image(b)
        if i % 3 == 1:
            b = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
        elif i % 3 == 2:
            b = cv2.imencode(".png", img)[1].tobytes()
        out.append(np.frombuffer(b, np.uint8))
    dst.write_bytes(pickle.dumps((out, issame), protocol=2))


def test_bin_reencoded_as_baseline_jpeg(identities_bin, tmp_path):
    path, _, _ = identities_bin
    public = tmp_path / "public.bin"
    _public_style_bin(path, public)
    src_bins, src_issame = load_bin(public)
    assert not _is_baseline_jpeg(src_bins[1]) and src_bins[2].startswith(b"\x89PNG")
    cfg = write_config(
        tmp_path,
        f"""
        output: out
        workers: 2
        source: {{plugin: evalbin, path: {public}}}
        augmenters:
          - {{plugin: reencode}}
        encode: {{quality: 90}}
        sinks:
          - {{plugin: evalbin, path: fixed.bin}}
        """,
    )
    run(load_config(cfg), progress=False)
    bins, issame = load_bin(tmp_path / "out" / "fixed.bin")
    assert issame == src_issame and len(bins) == len(src_bins) == 1148
    for i, (new, old) in enumerate(zip(bins, src_bins, strict=True)):
        assert _is_baseline_jpeg(new), f"record {i}"
        im = Image.open(io.BytesIO(new))
        assert im.format == "JPEG" and im.mode == "RGB" and "progressive" not in im.info
        diff = np.abs(decode_image(new).astype(int) - decode_image(old).astype(int)).mean()
        assert diff < 4, f"record {i}: mean difference {diff:.1f} (order changed?)"
    # neighbours differ far more than a re-encode: the order check above has teeth
    assert np.abs(decode_image(bins[0]).astype(int) - decode_image(src_bins[2]).astype(int)).mean() > 10


def _mixed_pairs(tmp_path, data_dir) -> tuple[Path, Path]:
    root = data_dir / "images"
    neg = sorted(p.name for p in (root / "negatives").iterdir() if p.suffix == ".jpg")[0]
    pairs = [
        Pair(1, "identities/Rob_Lowe/Rob_Lowe_0001.jpg", "identities/Rob_Lowe/Rob_Lowe_0002.jpg", True),
        Pair(2, "identities/Eric_Clapton/Eric_Clapton_0001.jpg", f"negatives/{neg}", False),
        Pair(3, "identities/Eric_Clapton/Eric_Clapton_0001.jpg", "identities/Rob_Lowe/Rob_Lowe_0002.jpg", False),
    ]
    p = tmp_path / "pairs.txt"
    write_pairs(p, pairs)
    return p, root


def _config(tmp_path, pairs, root, scrfd_model, extra="", select="largest_central"):
    return write_config(
        tmp_path,
        f"""
        output: out
        source: {{plugin: pairs, pairs: {pairs}, root: {root}{extra}}}
        detector: {{plugin: retinaface, model: {scrfd_model}, select: {select}}}
        aligner: {{plugin: arcface}}
        sinks:
          - {{plugin: evalbin, path: set.bin}}
        """,
    )


def test_missing_face_drops_whole_pair_only_when_asked(tmp_path, data_dir, scrfd_model):
    pairs, root = _mixed_pairs(tmp_path, data_dir)
    # asked: the whole pair 1 is left out and both its images are reported
    summary = run(
        load_config(_config(tmp_path, pairs, root, scrfd_model, ", on_missing_face: drop_pair")), progress=False
    )
    out = tmp_path / "out"
    bins, issame = load_bin(out / "set.bin")
    assert issame == [True, False] and len(bins) == 4
    assert next(iter(summary.sinks.values()))["dropped"] == 1
    rows = [ln.split("\t") for ln in (out / "rejects.tsv").read_text().splitlines()[1:]]
    assert sorted((Path(r[0]).name, r[1], r[2]) for r in rows) == sorted(
        [
            (Path(pairs.read_text().splitlines()[1].split("\t")[1]).name, "pair00001", "no_face"),
            ("Eric_Clapton_0001.jpg", "pair00001", "identity_too_small"),
        ]
    )
    before = (out / "set.bin").read_bytes()
    # default: the run fails naming the line, and the previous output stays as it was
    with pytest.raises(FacekitError) as e:
        run(load_config(_config(tmp_path, pairs, root, scrfd_model)), progress=False)
    msg = str(e.value)
    assert f"{pairs}:2:" in msg and "no_face" in msg and "on_missing_face: drop_pair" in msg, msg
    assert (out / "set.bin").read_bytes() == before


def test_more_than_one_face_per_image_is_refused(tmp_path, data_dir, scrfd_model):
    root = data_dir / "images"
    p = tmp_path / "pairs.txt"
    write_pairs(p, [Pair(1, "group/insightface_t1.jpg", "identities/Rob_Lowe/Rob_Lowe_0001.jpg", False)])
    with pytest.raises(FacekitError, match=r"pair 0 image a gave more than one face"):
        run(load_config(_config(tmp_path, p, root, scrfd_model, select="all")), progress=False)
    assert not (tmp_path / "out" / "set.bin").exists()


def test_evalbin_sink_needs_a_pair_source(tmp_path, data_dir):
    from conftest import link_identities

    root = link_identities(data_dir, tmp_path / "root", ["Rob_Lowe"])
    cfg = write_config(
        tmp_path,
        f"""
        output: out
        source: {{plugin: folders, root: {root}}}
        sinks:
          - {{plugin: evalbin, path: set.bin}}
        """,
    )
    with pytest.raises(FacekitError, match=r"Rob_Lowe_0001.jpg is not part of a verification pair"):
        run(load_config(cfg), progress=False)


@pytest.mark.parametrize("name", ["lfw-bin.yaml", "bin2folders.yaml", "bin-reencode.yaml"])
def test_example_configs_validate(name, data_dir, tmp_path):
    text = (REPO / "configs" / name).read_text()
    doc = yaml.safe_load(text)
    # point the inputs at the test material, keep every other key as shipped
    src = doc["source"]
    if src["plugin"] == "pairs":
        src["pairs"] = str(data_dir / "eval" / "lfw_pairs.txt")
        src["root"] = str(data_dir / "images" / "identities")
    else:
        src["path"] = str(tmp_path / "x.bin")
        (tmp_path / "x.bin").write_bytes(b"")
    if "detector" in doc:
        doc["detector"]["model"] = str(data_dir / "models" / "detection" / "scrfd_500m_bnkps.onnx")
    spec = parse_config(yaml.safe_dump(doc), config_dir=tmp_path)
    assert spec.sinks and spec.source.name == src["plugin"]
