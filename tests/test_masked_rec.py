"""The masked_rec sink + facemask augmenter end to end, read back by the real mxnet with
MSML's ``FaceByRandOccMask`` reading logic (shared/docs/MASKS.md section 1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import facekit_cli, link_aligned_112, link_identities, write_config

from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.errors import FacekitError
from facekit.formats.recordio import IndexedRecordIOReader, unpack

# MSML datasets/load_dataset.py FaceByRandOccMask: __init__ (header of train.rec, img_idx)
# and _get_occluded_face_and_mask/_add_gauss_to_mask (offline branch: mxnet reads, the
# mask converted to grey as PIL's convert('L') and binarised at 128), for every key.
MSML_READ = """
import sys, json, numbers, os
import numpy as np
import mxnet as mx
root = sys.argv[1]
img_rec = mx.recordio.MXIndexedRecordIO(os.path.join(root, 'train.idx'), os.path.join(root, 'train.rec'), 'r')
mask_out_rec = mx.recordio.MXIndexedRecordIO(os.path.join(root, 'mask_out.idx'), os.path.join(root, 'mask_out.rec'), 'r')
mask_rec = mx.recordio.MXIndexedRecordIO(os.path.join(root, 'mask.idx'), os.path.join(root, 'mask.rec'), 'r')
s = img_rec.read_idx(0)
header, _ = mx.recordio.unpack(s)
assert header.flag > 0
img_idx = np.array(range(1, int(header.label[0])))
out = {}
for idx in img_idx.tolist():
    header, img = mx.recordio.unpack(img_rec.read_idx(idx))
    label = header.label
    if not isinstance(label, numbers.Number):
        label = label[0]
    face = mx.image.imdecode(img, to_rgb=1).asnumpy()
    h1, image = mx.recordio.unpack(mask_out_rec.read_idx(idx))
    img_masked = mx.image.imdecode(image, to_rgb=1).asnumpy()
    h2, image = mx.recordio.unpack(mask_rec.read_idx(idx))
    mask = mx.image.imdecode(image, to_rgb=1).asnumpy()
    # PIL Image.fromarray(mask).convert('L'): L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16
    m = mask.astype(np.uint32)
    grey = ((m[..., 0] * 19595 + m[..., 1] * 38470 + m[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)
    msk_tmp = np.ones(grey.shape) * 255
    msk_tmp[grey <= 128] = 0
    occ = np.pad(msk_tmp == 0, 4)
    near = np.zeros_like(msk_tmp, dtype=bool)  # occluded pixels dilated by 4 (JPEG blocks at the edge)
    for dy in range(9):
        for dx in range(9):
            near |= occ[dy:dy + grey.shape[0], dx:dx + grey.shape[1]]
    out[idx] = dict(label=float(label), out_label=float(h1.label), mask_label=float(h2.label),
                    out_id=int(h1.id), mask_id=int(h2.id), face_shape=list(face.shape),
                    masked_shape=list(img_masked.shape), mask_shape=list(mask.shape),
                    occluded=int((msk_tmp == 0).sum()),
                    changed_outside=int((np.abs(img_masked.astype(int) - face.astype(int)).max(2)[~near] > 40).sum()))
print(json.dumps({'keys_out': sorted(int(k) for k in mask_out_rec.keys), 'keys_mask': sorted(int(k) for k in mask_rec.keys),
                  'records': out}))
"""


def _tsv(path: Path) -> dict[int, tuple[int, str, int]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "key\tlabel\tkind\tcovered"
    return {int(k): (int(lab), kind, int(cov)) for k, lab, kind, cov in (ln.split("\t") for ln in lines[1:])}


def _check_msml(run_mxnet, folder: Path, n_expected: int):
    got = json.loads(run_mxnet(MSML_READ, folder))
    recs = {int(k): v for k, v in got["records"].items()}
    tsv = _tsv(folder / "mask.tsv")
    assert sorted(recs) == list(range(1, n_expected + 1))
    assert got["keys_out"] == got["keys_mask"] == sorted(recs) == sorted(tsv)
    for k, r in recs.items():
        label, kind, covered = tsv[k]
        assert r["label"] == r["out_label"] == r["mask_label"] == label, k
        assert r["out_id"] == r["mask_id"] == k
        assert r["face_shape"] == r["masked_shape"] == r["mask_shape"] == [112, 112, 3]
        assert r["occluded"] == covered, (k, kind)  # exactly the renderer's count (PNG: lossless)
        assert 0.2 * 112 * 112 <= covered <= 0.45 * 112 * 112, (k, kind, covered)
        assert r["changed_outside"] == 0, (k, r["changed_outside"])  # nothing drawn outside the mask
    return recs


@pytest.fixture(scope="module")
def photos_masked(tmp_path_factory, data_dir, scrfd_model):
    """Pipeline 1: photos -> retinaface -> arcface -> facemask -> masked_rec (one run)."""
    tmp = tmp_path_factory.mktemp("photos")
    link_identities(data_dir, tmp / "photos", ["Anthony_Hopkins", "Eric_Clapton", "John_Salley", "deepface_id01"])
    cfg = write_config(tmp, f"""
        output: out
        source: {{plugin: folders, root: photos}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        aligner: {{plugin: arcface}}
        augmenters: [{{plugin: facemask, seed: 7}}]
        sinks: [{{plugin: masked_rec, path: rec}}]
        """)
    summary = run(load_config(cfg), progress=False)
    return tmp / "out" / "rec", summary


def test_photos_to_train_and_mask_recs_read_by_mxnet_msml(photos_masked, run_mxnet):
    rec, summary = photos_masked
    n = summary.faces_kept
    assert n >= 10
    for f in ("train.rec", "train.idx", "property", "mask_out.rec", "mask_out.idx", "mask.rec", "mask.idx", "mask.tsv"):
        assert (rec / f).is_file(), f
    _check_msml(run_mxnet, rec, n)


def test_existing_rec_gets_mask_recs_beside_untouched_train_rec(photos_masked, run_mxnet, tmp_path):
    """Pipeline 2: the mxrec source of an existing dataset -> the two mask recs beside its
    train.rec (hard links, bytes and inode untouched), read by MSML's logic."""
    src, _ = photos_masked
    before = {f: (src / f).read_bytes() for f in ("train.rec", "train.idx", "property")}
    ino = (src / "train.rec").stat().st_ino
    cfg = write_config(tmp_path, f"""
        output: out
        source: {{plugin: mxrec, path: {src}, labels: keep, min_images: 1}}
        augmenters: [{{plugin: facemask, seed: 1}}]
        sinks: [{{plugin: masked_rec, path: masked, train: link}}]
        """)
    summary = run(load_config(cfg), progress=False)
    out = tmp_path / "out" / "masked"
    assert summary.sinks["sinks[0] (masked_rec)"]["linked"]["train.rec"] == "hardlink"
    assert (out / "train.rec").stat().st_ino == ino
    assert {f: (src / f).read_bytes() for f in before} == before
    recs = _check_msml(run_mxnet, out, summary.faces_kept)
    # the labels are the dataset's, key by key
    r = IndexedRecordIOReader(src / "train.idx", src / "train.rec")
    for k, v in recs.items():
        h, _ = unpack(r.read_idx(k))
        assert float(h.label) == v["label"]


def test_aligned_dataset_without_landmarks_uses_template(tmp_path, data_dir, run_mxnet):
    """The eight pre-aligned faces (no landmarks of their own) through both pipelines."""
    link_aligned_112(data_dir, tmp_path / "aligned")
    cfg = write_config(tmp_path, """
        output: out1
        source: {plugin: folders, root: aligned}
        augmenters: [{plugin: facemask}]
        sinks: [{plugin: masked_rec, path: rec}]
        """, "a.yaml")
    run(load_config(cfg), progress=False)
    _check_msml(run_mxnet, tmp_path / "out1" / "rec", 8)


def test_same_seed_same_bytes_any_worker_count(tmp_path, data_dir):
    link_aligned_112(data_dir, tmp_path / "aligned")
    outs = []
    # the default (threads, one per core; a shard an identity here) and 3 threads too
    runs = [(5, "workers: 0"), (5, "workers: 2"), (6, "workers: 0"), (5, "shard_size: 1"),
            (5, "executor: {plugin: threads, workers: 3}\n            shard_size: 1")]
    for i, (seed, where) in enumerate(runs):
        cfg = write_config(tmp_path, f"""
            output: out{i}
            {where}
            source: {{plugin: folders, root: aligned}}
            augmenters: [{{plugin: facemask, seed: {seed}}}]
            sinks: [{{plugin: masked_rec, path: rec}}]
            """, f"c{i}.yaml")
        run(load_config(cfg), progress=False)
        rec = tmp_path / f"out{i}" / "rec"
        outs.append([(rec / f).read_bytes() for f in ("mask_out.rec", "mask.rec", "mask_out.idx", "train.rec")])
    assert outs[0] == outs[1] == outs[3] == outs[4]
    assert outs[0][0] != outs[2][0] and outs[0][3] == outs[2][3]


def _aligned_rec(tmp_path, data_dir) -> Path:
    """train.rec of the aligned faces: identities a (4 faces), b (3), c (1 face, key 8)."""
    files = sorted((data_dir / "aligned_112").glob("*.jpg"))
    for ident, chunk in (("a", files[:4]), ("b", files[4:7]), ("c", files[7:])):
        (tmp_path / "aligned" / ident).mkdir(parents=True)
        for f in chunk:
            os.symlink(f, tmp_path / "aligned" / ident / f.name)
    cfg = write_config(tmp_path, """
        output: src
        source: {plugin: folders, root: aligned, min_images: 1}
        sinks: [{plugin: mxrec, path: rec}]
        """, "src.yaml")
    run(load_config(cfg), progress=False)
    return tmp_path / "src" / "rec"


def test_link_mode_missing_key_fails_and_keeps_previous_output(tmp_path, data_dir):
    """Every key of train.rec must get a masked record: a run that loses one (here an
    identity left out by min_images) fails with one line naming the key, and the previous
    output of that path stays as it was (atomic publication)."""
    src = _aligned_rec(tmp_path, data_dir)
    ok = write_config(tmp_path, f"""
        output: out
        source: {{plugin: mxrec, path: {src}, labels: keep, min_images: 1}}
        augmenters: [{{plugin: facemask}}]
        sinks: [{{plugin: masked_rec, path: masked, train: link}}]
        """, "ok.yaml")
    run(load_config(ok), progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out" / "masked").iterdir() if p.is_file()}
    bad = write_config(tmp_path, f"""
        output: out
        source: {{plugin: mxrec, path: {src}, labels: keep, min_images: 2}}
        augmenters: [{{plugin: facemask, seed: 9}}]
        sinks: [{{plugin: masked_rec, path: masked, train: link}}]
        """, "bad.yaml")
    r = facekit_cli("run", bad)
    assert r.returncode == 1
    assert "key 8 (label 2) has no masked face" in r.stderr and "Traceback" not in r.stderr
    after = {p.name: p.read_bytes() for p in (tmp_path / "out" / "masked").iterdir() if p.is_file()}
    assert after == before
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".partial")]


def test_link_mode_refuses_samples_not_from_mxrec(tmp_path, data_dir):
    link_aligned_112(data_dir, tmp_path / "aligned")
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: aligned}
        augmenters: [{plugin: facemask}]
        sinks: [{plugin: masked_rec, path: m, train: link}]
        """)
    with pytest.raises(FacekitError, match="train: link needs samples read by the mxrec source"):
        run(load_config(cfg), progress=False)


def test_masked_rec_without_facemask_is_one_line_error(tmp_path, data_dir):
    link_aligned_112(data_dir, tmp_path / "aligned")
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: aligned}
        sinks: [{plugin: masked_rec, path: m}]
        """)
    r = facekit_cli("run", cfg)
    assert r.returncode == 1 and "add the facemask augmenter" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "m").exists()


def test_facemask_replace_puts_masked_face_in_any_sink(tmp_path, data_dir):
    link_aligned_112(data_dir, tmp_path / "aligned")
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: aligned}
        augmenters: [{plugin: facemask, output: replace}]
        sinks: [{plugin: folders, path: faces}]
        """)
    run(load_config(cfg), progress=False)
    files = sorted((tmp_path / "out" / "faces").rglob("*.jpg"))
    assert len(files) == 8
    orig = cv2.imread(str(sorted((data_dir / "aligned_112").glob("*.jpg"))[0]))
    got = cv2.imread(str(files[0]))
    diff = np.abs(orig.astype(int) - got.astype(int)).max(2)
    assert (diff > 20).mean() > 0.15  # a mask is drawn over the lower face
    assert diff[:45].mean() < 8  # the eyes and forehead stay


def test_facemask_config_errors_name_the_line(tmp_path):
    (tmp_path / "a").mkdir()
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: a}
        augmenters: [{plugin: facemask, styles: [surgical, bandana]}]
        sinks: [{plugin: masked_rec, path: m, train: copy}]
        """)
    r = facekit_cli("validate", cfg)
    assert r.returncode == 2
    assert "pipeline.yaml:4: augmenters[0]" in r.stderr and "styles" in r.stderr
    assert "pipeline.yaml:5: sinks[0]" in r.stderr and "train" in r.stderr


def test_mask_sheet_command_draws_every_panel(tmp_path, data_dir):
    link_aligned_112(data_dir, tmp_path / "aligned")
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: aligned}
        augmenters: [{plugin: facemask}]
        sinks: [{plugin: masked_rec, path: rec}]
        """)
    run(load_config(cfg), progress=False)
    r = facekit_cli("mask-sheet", tmp_path / "out" / "rec", "-o", tmp_path / "s.png", "-n", "8", "--cols", "4")
    assert r.returncode == 0, r.stderr
    sheet = cv2.imread(str(tmp_path / "s.png"))
    assert sheet.shape == (2 * (128 + 6) + 6, 4 * (340 + 6) + 6, 3)
    mask_panel = sheet[6 : 6 + 112, 6 + 228 : 6 + 340]
    assert 0.2 < (mask_panel.mean(2) < 128).mean() < 0.45
    r = facekit_cli("mask-sheet", tmp_path / "aligned")
    assert r.returncode == 1 and "not a masked dataset folder" in r.stderr and "Traceback" not in r.stderr


def test_facemask_rejects_crops_without_landmarks_of_odd_size(tmp_path, data_dir):
    """A face crop that is not an ArcFace-aligned size and has no landmarks is a reject
    line (no_landmarks), the others are masked."""
    link_aligned_112(data_dir, tmp_path / "aligned")
    cv2.imwrite(str(tmp_path / "aligned" / "adaface_man_man" / "odd.jpg"), np.full((150, 100, 3), 128, np.uint8))
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: aligned}
        augmenters: [{plugin: facemask, output: replace}]
        sinks: [{plugin: folders, path: faces}]
        """)
    summary = run(load_config(cfg), progress=False)
    assert summary.faces_kept == 8 and summary.rejects == {"no_landmarks": 1}
    assert "odd.jpg\tadaface_man_man\tno_landmarks\t100x150 crop without aligned landmarks" in (tmp_path / "out" / "rejects.tsv").read_text()


def test_facemask_empty_styles_without_textures_is_a_config_error(tmp_path):
    (tmp_path / "a").mkdir()
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: a}
        augmenters: [{plugin: facemask, styles: []}]
        sinks: [{plugin: masked_rec, path: m}]
        """)
    r = facekit_cli("validate", cfg)
    assert r.returncode == 2 and "nothing to draw" in r.stderr
