"""issue 26 part 2 in the pipeline: a ``quality:`` stage measures every aligned face (blur,
pose, size, brightness, contrast, embedding norm; a learned model's score with ``plugin:
onnx``), writes the signals to ``results.parquet`` and rejects faces over its thresholds,
each with its own reason; on detected photos and on already aligned sources alike."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import config_error, link_aligned_112, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run

SIGNALS = ("blur", "yaw", "pitch", "roll", "inter_ocular", "face_size", "brightness", "contrast")


def _rows(out):
    return pq.read_table(out / "results.parquet").to_pylist()


def test_detected_photos_get_signals_and_blurred_or_dark_copies_are_rejected(tmp_path, data_dir, scrfd_model):
    """Real identity photos, each with a blurred and a darkened copy beside it: with
    ``min_blur`` and ``min_brightness`` the copies are rejected as ``blurry`` / ``too_dark``
    (their signals in the results, the originals kept); a mirrored copy's yaw is the
    original's negated."""
    src = data_dir / "images" / "identities" / "deepface_id04"
    photos = sorted(src.glob("*"))[:3]
    ident = tmp_path / "photos" / "id04"
    ident.mkdir(parents=True)
    for p in photos:
        img = cv2.imread(str(p))
        os.symlink(p, ident / p.name)
        cv2.imwrite(str(ident / f"{p.stem}_blur.png"), cv2.GaussianBlur(img, (0, 0), img.shape[1] / 60))
        cv2.imwrite(str(ident / f"{p.stem}_dark.png"), (img * 0.12).astype(np.uint8))
        cv2.imwrite(str(ident / f"{p.stem}_mirror.png"), img[:, ::-1])
    cfg = write_config(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: photos, min_images: 1}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        aligner: {{plugin: arcface}}
        quality: {{min_blur: 40, min_brightness: 40}}
        sinks: [{{plugin: folders, path: faces}}]
        """)
    run(load_config(cfg), progress=False)
    rows = {os.path.basename(r["path"]): r for r in _rows(tmp_path / "out")}
    for p in photos:
        orig = rows[p.name]
        assert orig["reason"] is None, orig
        assert all(orig[k] is not None for k in SIGNALS), orig
        assert rows[f"{p.stem}_blur.png"]["reason"] == "blurry", rows[f"{p.stem}_blur.png"]
        assert rows[f"{p.stem}_blur.png"]["blur"] < 40 <= orig["blur"]
        dark = rows[f"{p.stem}_dark.png"]
        assert dark["reason"] == "too_dark" and dark["brightness"] < 40 and dark["box"] is not None, dark
        mirror = rows[f"{p.stem}_mirror.png"]
        assert abs(mirror["yaw"] + orig["yaw"]) < 5 and abs(mirror["roll"] + orig["roll"]) < 5, (orig, mirror)
    lines = (tmp_path / "out" / "rejects.tsv").read_text().splitlines()
    assert sum("\tblurry\tblur " in ln for ln in lines) == 3 and sum("\ttoo_dark\t" in ln for ln in lines) == 3


def test_aligned_source_pose_is_the_template_and_norms_are_judged(tmp_path, data_dir, rec_model):
    """Already aligned crops with no detector: pose is that of the template (~0), the
    embedding norm comes from the recognizer, ``min_embedding_norm`` rejects with its own
    reason and every reason a face earns is in the detail."""
    link_aligned_112(data_dir, tmp_path / "aligned")
    cfg = write_config(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: aligned, min_images: 1}}
        recognizer: {{plugin: onnx, model: {rec_model}}}
        quality: {{min_embedding_norm: 14, min_blur: 100}}
        sinks: [{{plugin: embeddings, path: emb}}]
        """)
    run(load_config(cfg), progress=False)
    rows = _rows(tmp_path / "out")
    assert len(rows) == 8
    for r in rows:
        assert abs(r["yaw"]) < 0.1 and abs(r["pitch"]) < 0.1 and abs(r["roll"]) < 1, r
        low_norm, blurry = r["embedding_norm"] < 14, r["blur"] < 100
        if not (low_norm or blurry):
            assert r["reason"] is None
            continue
        assert r["reason"] == ("blurry" if blurry else "low_embedding_norm"), r
        assert ("min_embedding_norm 14" in r["detail"]) == low_norm and ("min_blur 100" in r["detail"]) == blurry
    assert any(r["reason"] for r in rows) and any(r["reason"] is None for r in rows)


def test_quality_config_errors_name_the_line(tmp_path, scrfd_model):
    (tmp_path / "faces" / "a").mkdir(parents=True)
    msg = config_error(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        quality: {min_quality: 0.2}
        sinks: [{plugin: folders, path: f}]
        """)
    assert "pipeline.yaml:4: quality (signals): min_quality needs a learned quality model" in msg, msg
    msg = config_error(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        quality: {min_embedding_norm: 10}
        sinks: [{plugin: folders, path: f}]
        """)
    assert "min_embedding_norm needs a recognizer" in msg, msg
    msg = config_error(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: faces}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        quality: {{max_yaw: 40}}
        sinks: [{{plugin: folders, path: f}}]
        """)
    assert "quality (signals) measures aligned faces: add an aligner" in msg, msg
    msg = config_error(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        quality: {max_yawn: 40}
        sinks: [{plugin: folders, path: f}]
        """)
    assert "pipeline.yaml:4:" in msg and "max_yawn" in msg, msg


def test_a_learned_quality_model_scores_and_min_quality_rejects(tmp_path, data_dir):
    """``plugin: onnx``: a learned model's score (here a model built in the test: the mean
    of its normalised input) is the ``quality`` column, and ``min_quality`` rejects as
    ``low_quality``."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
         helper.make_node("Unsqueeze", ["m", "ax"], ["y"])],
        "mean", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor("ax", TensorProto.INT64, [1], [1])],
    )
    model = tmp_path / "q.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(model))
    root = link_aligned_112(data_dir, tmp_path / "aligned")
    files = sorted(root.glob("*/*.jpg"))
    expected = {}
    for f in files:
        img = cv2.imread(str(f))[:, :, ::-1].astype(np.float32)
        expected[str(f)] = float(((img - 127.5) / 127.5).mean())
    cut = float(np.median(list(expected.values())))
    cfg = write_config(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: aligned, min_images: 1}}
        quality: {{plugin: onnx, model: {model}, min_quality: {cut}}}
        sinks: [{{plugin: folders, path: f}}]
        """)
    run(load_config(cfg), progress=False)
    rows = _rows(tmp_path / "out")
    for r in rows:
        assert r["quality"] == pytest.approx(expected[r["path"]], abs=1e-4)
        assert (r["reason"] == "low_quality") == (expected[r["path"]] < cut), r
    assert sum(r["reason"] == "low_quality" for r in rows) == 4


def test_quality_survives_the_work_folder(tmp_path, data_dir):
    """A kept shard stores each face's quality: read back, the signals are the same."""
    from facekit.clean.quality import FaceQuality
    from facekit.pipeline.shards import Outcome, ShardResult
    from facekit.pipeline.work import result_table, table_outcomes
    from facekit.stages import Sample

    q = FaceQuality(12.5, -3.0, 4.0, 0.5, 35.0, 80.0, 120.0, 40.0, 17.0, float("nan"))
    res = ShardResult(0, [Outcome("a", [Sample(0, "p.jpg", "a", data=b"x", quality=q)], [], read=1)])
    got = table_outcomes(result_table(res), 1)[0].samples[0].quality
    assert [getattr(got, k) for k in ("blur", "yaw", "contrast", "embedding_norm")] == [12.5, -3.0, 40.0, 17.0]
    assert got.quality != got.quality  # NaN: not measured
