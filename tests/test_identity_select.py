"""``select: identity`` with the ``onnx`` recognizer on real photos: the person of the
folder is kept from a photo shared with someone else (where largest_central fails), a
photo of someone else is flagged, a photo of nobody of the folder is rejected."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run

pytestmark = pytest.mark.slow


def _side_by_side(small: np.ndarray, big: np.ndarray, small_h: int = 160, big_h: int = 420) -> np.ndarray:
    """``small`` scaled to ``small_h`` on the left, ``big`` scaled to ``big_h`` in the
    middle-right of a grey canvas: the larger, more central face is ``big``'s."""
    a = cv2.resize(small, (round(small.shape[1] * small_h / small.shape[0]), small_h), interpolation=cv2.INTER_AREA)
    b = cv2.resize(big, (round(big.shape[1] * big_h / big.shape[0]), big_h), interpolation=cv2.INTER_AREA)
    canvas = np.full((big_h + 40, a.shape[1] + b.shape[1] + 60, 3), 128, np.uint8)
    canvas[20 : 20 + a.shape[0], 10 : 10 + a.shape[1]] = a
    canvas[20 : 20 + b.shape[0], a.shape[1] + 50 : a.shape[1] + 50 + b.shape[1]] = b
    return canvas


@pytest.fixture(scope="module")
def folders(data_dir, tmp_path_factory):
    """root/John_Savage: his 11 photos, one photo of him beside a larger face of
    deepface_id02, one photo of John_Salley (label noise); root/deepface_id01: its 5 photos
    and a photo of two other people (nobody of the folder)."""
    ids = data_dir / "images" / "identities"
    root = tmp_path_factory.mktemp("identity") / "root"
    sav = root / "John_Savage"
    sav.mkdir(parents=True)
    for f in sorted((ids / "John_Savage").iterdir())[1:]:
        os.symlink(f, sav / f.name)
    first = cv2.imread(str(sorted((ids / "John_Savage").iterdir())[0]))
    other = cv2.imread(str(sorted((ids / "deepface_id02").iterdir())[0]))
    cv2.imwrite(str(sav / "zz_with_someone.jpg"), _side_by_side(first, other))
    os.symlink(sorted((ids / "John_Salley").iterdir())[0], sav / "zz_not_him.jpg")
    d1 = root / "deepface_id01"
    d1.mkdir()
    for f in sorted((ids / "deepface_id01").iterdir()):
        os.symlink(f, d1 / f.name)
    a = cv2.imread(str(sorted((ids / "deepface_id03").iterdir())[0]))
    b = cv2.imread(str(sorted((ids / "deepface_id04").iterdir())[0]))
    cv2.imwrite(str(d1 / "zz_strangers.jpg"), _side_by_side(a, b, 300, 420))
    return root


def _run(tmp_path, root, scrfd_model, rec_model, select):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = write_config(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: {root}}}
        detector: {{plugin: retinaface, model: {scrfd_model}, select: {select}}}
        aligner: {{plugin: arcface}}
        recognizer: {{plugin: onnx, model: {rec_model}}}
        sinks: [{{plugin: folders, path: faces}}]
        """, f"{select}.yaml")
    run(load_config(cfg), progress=False)
    return {Path(r["path"]).name: r for r in pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()}


def test_identity_choice_keeps_the_folders_person(tmp_path, folders, scrfd_model, rec_model):
    rows = _run(tmp_path / "id", folders, scrfd_model, rec_model, "identity")
    shared = rows["zz_with_someone.jpg"]
    assert shared["reason"] is None
    assert shared["box"][2] < 200, "kept the other, larger face instead of John Savage's (left)"
    assert shared["similarity"] > 0.3
    noise = rows["zz_not_him.jpg"]
    assert noise["reason"] is None and noise["flag"] == "far_from_identity", noise["similarity"]
    strangers = rows["zz_strangers.jpg"]
    assert strangers["reason"] == "identity_mismatch"
    assert len(strangers["box"]) == 4 and len(strangers["landmarks"]) == 10  # the face decided against
    own = [r for n, r in rows.items() if n.startswith("John_Savage_")]
    assert len(own) == 10 and all(r["flag"] is None and r["similarity"] > 0.3 for r in own)


def test_largest_central_takes_the_wrong_face(tmp_path, folders, scrfd_model, rec_model):
    cfg_rows = _run(tmp_path / "lc", folders, scrfd_model, rec_model, "largest_central")
    assert cfg_rows["zz_with_someone.jpg"]["box"][2] > 200  # the larger, central stranger
    assert cfg_rows["zz_strangers.jpg"]["reason"] is None  # kept under the wrong label


def test_select_identity_needs_a_recognizer(tmp_path, folders, scrfd_model):
    from conftest import config_error

    msg = config_error(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: {folders}}}
        detector: {{plugin: retinaface, model: {scrfd_model}, select: identity}}
        aligner: {{plugin: arcface}}
        sinks: [{{plugin: folders, path: faces}}]
        """)
    assert "select: identity compares faces with a recognition model" in msg


@pytest.mark.parametrize("reject_below", [None, 0.5])
def test_group_photos_pick_the_shared_person_and_a_stranger_is_flagged(reject_below):
    """The photos' shared person wins in each group photo even when a single-face photo
    of a stranger is in the folder; the stranger is flagged, or rejected under
    reject_below; a photo of strangers only is identity_mismatch."""
    from types import SimpleNamespace

    from facekit.pipeline.identity import choose_faces
    from facekit.pipeline.shards import Outcome
    from facekit.stages import Sample

    rng = np.random.default_rng(0)
    me = rng.normal(size=64)

    def face(vec, k):
        v = vec + rng.normal(scale=0.15 * np.linalg.norm(vec), size=64) / 8
        return Sample(k, f"p{k}.jpg", "me", box=np.array([0, 0, 10, 10], np.float32), embedding=(v / np.linalg.norm(v)).astype(np.float32))

    photos = [[face(rng.normal(size=64), k), face(me, k)] for k in range(3)]  # me second in each
    photos.append([face(rng.normal(size=64), 3)])  # a single-face photo of a stranger
    photos.append([face(rng.normal(size=64), 4), face(rng.normal(size=64), 4)])  # strangers only
    outs = [Outcome("me", list(p), [], 1) for p in photos]
    choose_faces(outs, SimpleNamespace(identity_min_similarity=0.3, flag_below=0.3, reject_below=reject_below))
    for oc, p in zip(outs[:3], photos[:3]):
        assert oc.samples == [p[1]] and oc.samples[0].similarity > 0.5 and not oc.samples[0].flag
    if reject_below is None:
        assert outs[3].samples[0].flag == "far_from_identity"
    else:
        assert not outs[3].samples and outs[3].rejects[0].reason == "label_noise"
    assert not outs[4].samples and outs[4].rejects[0].reason == "identity_mismatch"
