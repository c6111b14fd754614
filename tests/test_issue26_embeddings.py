"""issue 26 part 1: embeddings as data. The recognizer runs on already aligned sources (a
``mxrec`` source, folders of aligned crops with no detector) as after an aligner, in batches
of the size it is given across the photos of a shard; the ``embeddings`` sink writes the
L2-normalised vectors as Parquet parts keyed by record id or path, with identity and label;
the norm before normalisation goes to ``results.parquet``; a resumed run reuses the finished
shards' embeddings; bad models and NaN embeddings are one line or a reject."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from conftest import config_error, link_aligned_112, link_identities, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run

KZ = "aligned_identities/kz_celebs_112"


def _reference(model: Path, encoded: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The shared recognizer's embeddings of ``encoded`` images computed directly (no
    pipeline): ``(L2-normalised (N, D), raw norms (N,))``."""
    from facekit.eval.recognition import OnnxEmbedder
    from facekit.vision.images import decode_image

    m = OnnxEmbedder(model)
    raw = m.run(m.to_tensor(np.stack([m.prepare(decode_image(b)) for b in encoded])))
    n = np.linalg.norm(raw, axis=1)
    return raw / n[:, None], n


def _pack(tmp_path: Path, data_dir: Path) -> Path:
    """The eight ArcFace-aligned shared crops packed into ``packed/rec`` (pass-through)."""
    root = link_aligned_112(data_dir, tmp_path / "aligned")
    cfg = write_config(tmp_path, """
        output: packed
        source: {plugin: folders, root: aligned, min_images: 1}
        sinks: [{plugin: mxrec, path: rec}]
        """, "pack.yaml")
    run(load_config(cfg), progress=False)
    assert root.is_dir()
    return tmp_path / "packed" / "rec"


def test_embeddings_of_an_aligned_rec_equal_the_model(tmp_path, data_dir, rec_model):
    """A ``mxrec`` source, no detector: every record is embedded as the model embeds its
    bytes; the parts load with plain pyarrow + numpy; keys are the record ids; the norms
    before normalisation are in the results table and the parts."""
    from facekit.formats import FaceRec

    rec = _pack(tmp_path, data_dir)
    cfg = write_config(tmp_path, f"""
        output: out
        source: {{plugin: mxrec, path: {rec}}}
        recognizer: {{plugin: onnx, model: {rec_model}}}
        sinks: [{{plugin: embeddings, path: emb}}]
        """)
    s = run(load_config(cfg), progress=False)
    assert s.faces_kept == 8
    meta = json.loads((tmp_path / "out" / "emb" / "embeddings.json").read_text())
    assert meta["dim"] == 128 and meta["rows"] == 8 and meta["dtype"] == "float32"
    # as a user loads them, without facekit
    t = pq.read_table(tmp_path / "out" / "emb" / meta["parts"][0])
    vec = np.asarray(t.column("embedding").combine_chunks().flatten()).reshape(-1, 128)
    fr = FaceRec(rec)
    keys = [fr.key(i)[1] for i in range(len(fr))]
    records = [fr.read(i) for i in range(len(fr))]
    fr.close()
    encoded = [img for _, img in records]
    labels = [int(np.ravel(h.label)[0]) for h, _ in records]
    ref, norms = _reference(rec_model, encoded)
    assert t.column("record").to_pylist() == keys
    assert t.column("label").to_pylist() == labels
    np.testing.assert_allclose(vec, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(t.column("norm").to_numpy(), norms, rtol=1e-5)
    res = pq.read_table(tmp_path / "out" / "results.parquet")
    np.testing.assert_allclose(np.asarray(res.column("embedding_norm").to_pylist(), np.float64), norms, rtol=1e-5)
    assert res.column("outputs").to_pylist() == [[f"part-00000.parquet:{i}"] for i in range(8)]


def test_folders_of_aligned_crops_float16_and_after_an_aligner(tmp_path, data_dir, rec_model, scrfd_model):
    """Folders of aligned crops with no detector give the same vectors as the files embedded
    directly (float16 storage within its precision; the files' bytes pass to a folders sink
    unchanged); after a detector and an aligner, one vector per kept face, in the results'
    order."""
    from facekit.formats import load_embeddings

    root = link_aligned_112(data_dir, tmp_path / "aligned")
    cfg = write_config(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: aligned, min_images: 1}}
        recognizer: {{plugin: onnx, model: {rec_model}}}
        sinks:
          - {{plugin: embeddings, path: emb, dtype: float16}}
          - {{plugin: folders, path: faces}}
        """)
    run(load_config(cfg), progress=False)
    e = load_embeddings(tmp_path / "out" / "emb")
    files = sorted(root.glob("*/*.jpg"))
    assert e.table.column("path").to_pylist() == [str(f) for f in files]
    ref, _ = _reference(rec_model, [f.read_bytes() for f in files])
    np.testing.assert_allclose(e.vectors, ref, atol=2e-3)
    assert e.vectors.dtype == np.float32
    written = sorted((tmp_path / "out" / "faces").glob("*/*.jpg"))
    assert [w.read_bytes() for w in written] == [f.read_bytes() for f in files]  # not re-encoded

    link_identities(data_dir, tmp_path / "photos", ["deepface_id04", "deepface_id05"])
    cfg = write_config(tmp_path, f"""
        output: out2
        source: {{plugin: folders, root: photos}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        aligner: {{plugin: arcface}}
        recognizer: {{plugin: onnx, model: {rec_model}, batch: 3}}
        sinks: [{{plugin: embeddings, path: emb}}]
        """, "photos.yaml")
    s = run(load_config(cfg), progress=False)
    e = load_embeddings(tmp_path / "out2" / "emb")
    res = [r for r in pq.read_table(tmp_path / "out2" / "results.parquet").to_pylist() if r["reason"] is None]
    assert len(e.vectors) == s.faces_kept == len(res) > 0
    assert e.table.column("path").to_pylist() == [r["path"] for r in res]
    assert e.table.column("label").to_pylist() == [r["label"] for r in res]
    np.testing.assert_allclose(e.table.column("norm").to_numpy(), [r["embedding_norm"] for r in res], rtol=1e-6)


def test_the_recognizer_embeds_its_batch_across_photos(tmp_path, data_dir, rec_model, monkeypatch):
    """``batch: N``: one model call per N faces across the photos of a shard, never more
    (the run's first batch of 8 images is embedded alone, so that a failing stage still
    stops the run after a few images); the outputs do not depend on the batch size."""
    from facekit_plugins.recognizer import OnnxRecognizer

    calls: list[int] = []
    real = OnnxRecognizer.embed_with_norms

    def spy(self, crops):
        calls.append(len(crops))
        return real(self, crops)

    monkeypatch.setattr(OnnxRecognizer, "embed_with_norms", spy)
    src = sorted((data_dir / KZ).glob("*/*.png"))[:30]
    for i, f in enumerate(src):
        (tmp_path / "faces" / f.parent.name).mkdir(parents=True, exist_ok=True)
        os.symlink(f, tmp_path / "faces" / f.parent.name / f.name)
    outs = {}
    for batch, expected in ((64, [8, 22]), (5, [5, 3, 5, 5, 5, 5, 2]), (1, [1] * 30)):
        calls.clear()
        cfg = write_config(tmp_path, f"""
            output: out{batch}
            workers: 0
            source: {{plugin: folders, root: faces, min_images: 1}}
            recognizer: {{plugin: onnx, model: {rec_model}, batch: {batch}}}
            sinks: [{{plugin: embeddings, path: emb}}]
            """, f"b{batch}.yaml")
        s = run(load_config(cfg), progress=False)
        assert s.faces_kept == 30 and calls == expected, (batch, calls)
        outs[batch] = (tmp_path / f"out{batch}" / "emb" / "part-00000.parquet").read_bytes()
    from facekit.formats import load_embeddings

    a, b = load_embeddings(tmp_path / "out64" / "emb"), load_embeddings(tmp_path / "out1" / "emb")
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)


def test_embeddings_sink_without_a_recognizer_is_refused(tmp_path):
    (tmp_path / "faces" / "a").mkdir(parents=True)
    msg = config_error(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        sinks:
          - {plugin: embeddings, path: emb}
        """)
    assert "pipeline.yaml:5: sinks[0] (embeddings) stores the faces' embeddings: add 'recognizer:" in msg, msg


def test_a_model_that_is_not_a_recognizer_is_one_line(tmp_path, data_dir, scrfd_model):
    """A detector given as the recognizer: its outputs are score maps, not one vector per
    image; the run stops before any work with one line naming the model."""
    link_aligned_112(data_dir, tmp_path / "aligned")
    cfg = write_config(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: aligned, min_images: 1}}
        recognizer: {{plugin: onnx, model: {scrfd_model}, input_size: 112}}
        sinks: [{{plugin: embeddings, path: emb}}]
        """)
    r = subprocess.run([sys.executable, "-m", "facekit.cli", "run", "-q", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(scrfd_model) in lines[0] and "not one embedding per image" in lines[0], r.stderr
    assert not (tmp_path / "out" / "emb").exists()


def test_nan_embeddings_are_rejects_with_a_reason(tmp_path, data_dir, rec_model, monkeypatch):
    """A face whose embedding comes back NaN (a broken model, an fp16 overflow) is rejected
    as ``bad_embedding``, never written; the other faces are kept."""
    from facekit_plugins.recognizer import OnnxRecognizer

    real = OnnxRecognizer.embed_with_norms

    def nan_for_the_second(self, crops):
        emb, norms = real(self, crops)
        emb[1], norms[1] = np.nan, np.nan
        return emb, norms

    monkeypatch.setattr(OnnxRecognizer, "embed_with_norms", nan_for_the_second)
    link_aligned_112(data_dir, tmp_path / "aligned")
    cfg = write_config(tmp_path, f"""
        output: out
        workers: 0
        source: {{plugin: folders, root: aligned, min_images: 1}}
        recognizer: {{plugin: onnx, model: {rec_model}}}
        sinks: [{{plugin: embeddings, path: emb}}]
        """)
    s = run(load_config(cfg), progress=False)
    assert s.faces_kept == 7 and s.rejects == {"bad_embedding": 1}
    line = (tmp_path / "out" / "rejects.tsv").read_text().splitlines()[-1].split("\t")
    assert line[2] == "bad_embedding" and "NaN" in line[3]
    meta = json.loads((tmp_path / "out" / "emb" / "embeddings.json").read_text())
    assert meta["rows"] == 7


KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from facekit.pipeline import work
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run

    save = work.WorkFolder.save

    def save_then_die(self, result, digest):
        save(self, result, digest)
        if result.index >= 1:
            os.kill(os.getpid(), signal.SIGKILL)

    work.WorkFolder.save = save_then_die
    run(load_config(sys.argv[1]), progress=False)
    """
)


def test_a_resumed_run_reuses_the_finished_shards_embeddings(tmp_path, data_dir, rec_model):
    """kill -9 after two shards, rerun: the kept shards are reused (their embeddings and
    norms come from the work folder) and the outputs equal an uninterrupted run's bytes."""
    src = sorted((data_dir / KZ).glob("*/*.png"))
    idents = sorted({f.parent.name for f in src})[:4]
    for ident in idents:
        (tmp_path / "faces" / ident).mkdir(parents=True)
        for f in [f for f in src if f.parent.name == ident][:6]:
            os.symlink(f, tmp_path / "faces" / ident / f.name)
    body = f"""
        shard_size: 6
        workers: 0
        source: {{plugin: folders, root: faces}}
        recognizer: {{plugin: onnx, model: {rec_model}, batch: 4}}
        sinks: [{{plugin: embeddings, path: emb}}]
        """
    cfg = write_config(tmp_path, "output: out\n" + textwrap.dedent(body), "p.yaml")
    r = subprocess.run([sys.executable, "-c", KILLED, str(cfg)], capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    s = run(load_config(cfg), progress=False)
    assert s.shards["reused"] == 2, s.shards
    ref = write_config(tmp_path, "output: ref\n" + textwrap.dedent(body), "ref.yaml")
    run(load_config(ref), progress=False)
    for name in ("emb/part-00000.parquet", "emb/embeddings.json", "results.parquet"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_a_batch_of_one_model_is_made_batchable_or_left_with_the_reason(tmp_path, rec_model):
    """The shared MobileFaceNet is exported with a batch of 1 (a Reshape to [1, -1]): the
    recognizer rewrites it to take any batch and embeds a batch in one call, equal to one
    face at a time; a graph whose batch is baked into another shape is left as it is, with
    the reason."""
    import onnx
    from onnx import TensorProto, helper

    from facekit.eval.recognition import OnnxEmbedder
    from facekit.vision.onnxbatch import batchable

    fixed = OnnxEmbedder(rec_model)
    assert fixed.batch == 1
    m = OnnxEmbedder(rec_model, rebatch=True)
    assert m.rebatched and m.batch is None and m.session.get_inputs()[0].shape[0] == "N"
    x = np.random.default_rng(0).uniform(-1, 1, (5, 3, 112, 112)).astype(np.float32)
    np.testing.assert_allclose(m.run(x), fixed.run(x), rtol=1e-4, atol=1e-4)

    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor("s", TensorProto.INT64, [2], [2, 2])],
    )
    path = tmp_path / "baked.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    data, why = batchable(path, (4,), ["CPUExecutionProvider"])
    assert data is None and why, why


def test_flip_sums_the_mirror_image_as_insightface_evaluates(tmp_path, data_dir, rec_model):
    """``flip: true``: each face's embedding is the normalised sum of the model's outputs on
    the face and on its mirror image (what ``facekit eval`` and insightface's verification
    do, and what facekit.clean's thresholds were calibrated on); the norm is the sum's."""
    from facekit.eval.recognition import OnnxEmbedder
    from facekit.formats import load_embeddings

    root = link_aligned_112(data_dir, tmp_path / "aligned")
    cfg = write_config(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: aligned, min_images: 1}}
        recognizer: {{plugin: onnx, model: {rec_model}, flip: true}}
        sinks: [{{plugin: embeddings, path: emb}}]
        """)
    run(load_config(cfg), progress=False)
    e = load_embeddings(tmp_path / "out" / "emb")
    files = sorted(root.glob("*/*.jpg"))
    emb, emb_flip = OnnxEmbedder(rec_model).embed_encoded([f.read_bytes() for f in files], flip=True)
    total = emb + emb_flip
    norms = np.linalg.norm(total, axis=1)
    np.testing.assert_allclose(e.vectors, total / norms[:, None], atol=1e-5)
    np.testing.assert_allclose(e.table.column("norm").to_numpy(), norms, rtol=1e-5)
    plain, _ = _reference(rec_model, [f.read_bytes() for f in files])
    assert np.abs(e.vectors - plain).max() > 1e-3  # the mirror image changes the vector
