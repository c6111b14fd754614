"""End to end on real photos: folders source over ../shared/data/images/identities (plus
the negatives as one more folder) with the retinaface and mtcnn detectors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import link_identities, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.formats.recordio import IndexedRecordIOReader, unpack

SINGLE_IMAGE_IDENTITIES = {"Amy_Adams", "Nathalie_Baye", "mtcnn_ivan"}


@pytest.fixture(scope="module")
def dataset_root(data_dir, tmp_path_factory) -> Path:
    """ROOT/<identity>/ links to the shared identities, plus zz_negatives/ (face-free photos)."""
    root = link_identities(data_dir, tmp_path_factory.mktemp("seed") / "root")
    os.symlink(data_dir / "images" / "negatives", root / "zz_negatives")
    return root


def _pipeline(tmp_path, root, detector_yaml, workers=0):
    cfg = write_config(
        tmp_path,
        f"""
        output: out
        workers: {workers}
        source: {{plugin: folders, root: {root}}}
        detector: {detector_yaml}
        aligner: {{plugin: arcface, size: 112}}
        sinks:
          - {{plugin: mxrec, path: rec}}
          - {{plugin: folders, path: aligned, prefix: "id_"}}
        """,
    )
    return run(load_config(cfg), progress=False)


def _rejects(out: Path) -> list[dict]:
    lines = (out / "rejects.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, ln.split("\t"))) for ln in lines[1:]]


def _check_output(tmp_path, data_dir, summary):
    out = tmp_path / "out"
    identities = sorted(p.name for p in (data_dir / "images" / "identities").iterdir())
    n_images = sum(len(list((data_dir / "images" / "identities" / i).iterdir())) for i in identities)
    n_neg = len(list((data_dir / "images" / "negatives").iterdir()))
    assert summary.images_read == n_images + n_neg == 101
    rejects = _rejects(out)
    by_path = {r["path"]: r for r in rejects}
    # every negative is in the rejects file with reason no_face (or, where a detector
    # fires once on it, dropped with its one-image folder: never in the output)
    for neg in (data_dir / "images" / "negatives").iterdir():
        r = next(v for k, v in by_path.items() if k.endswith("/zz_negatives/" + neg.name))
        assert r["reason"] in ("no_face", "identity_too_small"), r
    assert sum(1 for r in rejects if r["identity"] == "zz_negatives" and r["reason"] == "no_face") >= 6
    # single-image identities are reported and left out of every sink
    dropped = {r["identity"] for r in rejects if r["reason"] == "identity_too_small"}
    assert SINGLE_IMAGE_IDENTITIES <= dropped
    summ = json.loads((out / "summary.json").read_text())
    assert summ["images_read"] == summary.images_read
    assert summ["faces_kept"] + sum(summ["rejects"].values()) == summary.images_read
    assert summ["rejects"].get("identity_too_small", 0) >= 3
    written = summ["identities_written"]
    assert written == len(identities) - len(SINGLE_IMAGE_IDENTITIES)
    # the aligned folders: one folder per admitted identity, ids contiguous from 0
    folders = sorted((out / "aligned").glob("id_*"), key=lambda p: int(p.name[3:]))
    assert [p.name for p in folders] == [f"id_{i}" for i in range(written)]
    jpgs = list((out / "aligned").glob("id_*/*.jpg"))
    assert len(jpgs) == summary.faces_kept
    lmk = (out / "aligned" / "landmarks.txt").read_text().splitlines()
    assert len(lmk) == summary.faces_kept and all(len(l.split(" ")) == 12 for l in lmk)
    assert not any(s in l for l in lmk for s in SINGLE_IMAGE_IDENTITIES)
    lst = (out / "aligned" / "label.txt").read_text().splitlines()
    # label.txt is the .lst of the crops beside it (dir2lst): 1, path relative to the folder, label
    assert sorted(l.split("\t")[1] for l in lst) == sorted(str(p.relative_to(out / "aligned")) for p in jpgs)
    assert all(len(l.split("\t")) == 3 and l.startswith("1\t") for l in lst)
    # the rec: header, images, identity records consistent with the folders
    rec = IndexedRecordIOReader(out / "rec" / "train.idx", out / "rec" / "train.rec")
    h0, _ = unpack(rec.read_idx(0))
    assert h0.flag == 2 and int(h0.label[0]) == summary.faces_kept + 1
    assert int(h0.label[1]) == summary.faces_kept + 1 + written
    labels = [unpack(rec.read_idx(k))[0].label for k in range(1, summary.faces_kept + 1)]
    assert labels == sorted(labels) and set(labels) == set(range(written))
    for k in range(summary.faces_kept + 1, summary.faces_kept + 1 + written):
        h, payload = unpack(rec.read_idx(k))
        start, end = map(int, h.label)
        assert payload == b"" and {labels[i - 1] for i in range(start, end)} == {k - summary.faces_kept - 1}
        assert end - start >= 2
    assert (out / "rec" / "property").read_text() == f"{written},112,112\n"
    return rejects


@pytest.mark.slow
def test_folders_retinaface_end_to_end(tmp_path, data_dir, dataset_root, scrfd_model):
    summary = _pipeline(
        tmp_path, dataset_root, f"{{plugin: retinaface, model: {scrfd_model}, input_size: 640}}"
    )
    rejects = _check_output(tmp_path, data_dir, summary)
    # observed on this material: SCRFD finds every face (tight John_* chips via padding)
    # and nothing on the negatives
    assert summary.faces_kept == 91 and summary.identities_written == 18
    assert summary.rejects == {"identity_too_small": 3, "no_face": 7}
    assert {r["identity"] for r in rejects if r["reason"] == "no_face"} == {"zz_negatives"}
    john = [p for p in (tmp_path / "out" / "aligned").rglob("John_Salley_*.jpg")]
    assert len(john) == 11  # 150x150 tight crops found after padding


@pytest.mark.slow
def test_folders_mtcnn_end_to_end(tmp_path, data_dir, dataset_root, has_mtcnn):
    summary = _pipeline(tmp_path, dataset_root, "{plugin: mtcnn}")
    rejects = _check_output(tmp_path, data_dir, summary)
    # observed: MTCNN (with the padded retry for the tight chips) finds every face too
    assert summary.faces_kept == 91 and summary.identities_written == 18
    assert summary.rejects == {"identity_too_small": 3, "no_face": 7}
    assert {r["identity"] for r in rejects if r["reason"] == "no_face"} == {"zz_negatives"}


@pytest.mark.slow
def test_process_pool_matches_serial(tmp_path, data_dir, scrfd_model):
    """workers: 2 gives the very same rec bytes as the in-process run."""
    root = link_identities(data_dir, tmp_path / "root", ["John_Salley", "Anthony_Hopkins", "Amy_Adams", "deepface_id01"])
    det = f"{{plugin: retinaface, model: {scrfd_model}}}"
    a, b = tmp_path / "serial", tmp_path / "pool"
    a.mkdir(), b.mkdir()
    s1 = _pipeline(a, root, det, workers=0)
    s2 = _pipeline(b, root, det, workers=2)
    assert s1.faces_kept == s2.faces_kept == 11 + 2 + 5
    for f in ("train.rec", "train.idx", "property", "train.lst"):
        assert (a / "out" / "rec" / f).read_bytes() == (b / "out" / "rec" / f).read_bytes(), f


def test_cli_run_with_worker_processes(tmp_path, data_dir):
    """`python -m facekit.cli run` with workers > 0: spawned workers re-import the CLI's
    modules under other names; the run must still work and match the in-process run."""
    from conftest import facekit_cli, link_aligned_112

    link_aligned_112(data_dir, tmp_path / "root")
    outs = []
    for workers in (0, 2):
        cfg = write_config(
            tmp_path,
            f"""
            output: out{workers}
            workers: {workers}
            source: {{plugin: folders, root: root}}
            sinks: [{{plugin: mxrec, path: rec}}]
            """,
            f"w{workers}.yaml",
        )
        r = facekit_cli("run", "-q", cfg)
        assert r.returncode == 0, r.stderr
        outs.append((tmp_path / f"out{workers}" / "rec" / "train.rec").read_bytes())
    assert outs[0] == outs[1] and len(outs[0]) > 8 * 1000
