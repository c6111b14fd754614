"""issue 26 part 3 in the pipeline: a ``clean:`` stage decides per identity once a shard's
faces are embedded (duplicates by bytes, pixels or embedding; label noise; two people under
one name), each flagged or rejected by config, with ``duplicate_of``, ``similarity`` and
``cluster`` in ``results.parquet``; on an already aligned source with no detector."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pyarrow.parquet as pq

from conftest import config_error, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run


def _tree(tmp_path, data_dir):
    """``faces/mixed``: the woman's four shared aligned crops and two of the man's, an exact
    copy of man_1 and a PNG copy of woman_2 (other bytes, same pixels); ``faces/man``: the
    man's four."""
    src = data_dir / "aligned_112"
    mixed, man = tmp_path / "faces" / "mixed", tmp_path / "faces" / "man"
    mixed.mkdir(parents=True)
    man.mkdir()
    for f in sorted(src.glob("*.jpg")):
        if "_woman_" in f.name or f.stem[-1] in "12":
            shutil.copy(f, mixed / f.name)
        if "_man_" in f.name:
            shutil.copy(f, man / f.name)
    shutil.copy(src / "adaface_man_man_1.jpg", mixed / "zz_copy.jpg")
    cv2.imwrite(str(mixed / "zz_png.png"), cv2.imread(str(src / "adaface_woman_woman_2.jpg")))
    return tmp_path / "faces"


def _rows(out):
    return {r["path"].rsplit("/", 2)[-2] + "/" + r["path"].rsplit("/", 1)[-1]: r
            for r in pq.read_table(out / "results.parquet").to_pylist()}


def test_duplicates_and_label_noise_flagged_or_rejected(tmp_path, data_dir, rec_model):
    root = _tree(tmp_path, data_dir)
    for mode in ("flag", "reject"):
        cfg = write_config(tmp_path, f"""
            output: out-{mode}
            source: {{plugin: folders, root: {root}, min_images: 1}}
            recognizer: {{plugin: onnx, model: {rec_model}, flip: true}}
            clean: {{duplicates: reject, near_duplicate_above: 0.99, label_noise: {mode}, mixed: off}}  # off: ignore
            sinks: [{{plugin: mxrec, path: rec}}]
            """, f"{mode}.yaml")
        s = run(load_config(cfg), progress=False)
        rows = _rows(tmp_path / f"out-{mode}")
        copy, png = rows["mixed/zz_copy.jpg"], rows["mixed/zz_png.png"]
        assert copy["reason"] == "duplicate" and copy["duplicate_of"].endswith("mixed/adaface_man_man_1.jpg"), copy
        assert "the same file bytes" in copy["detail"]
        assert png["reason"] == "duplicate" and png["duplicate_of"].endswith("mixed/adaface_woman_woman_2.jpg"), png
        assert "the same pixels" in png["detail"]
        # in 'mixed' the woman's 4 crops outnumber the man's 2: his are far from its centre
        men = [rows[f"mixed/adaface_man_man_{i}.jpg"] for i in range(1, 3)]
        women = [rows[f"mixed/adaface_woman_woman_{i}.jpg"] for i in range(1, 5)]
        assert all(r["similarity"] < 0.30 for r in men) and all(r["similarity"] > 0.30 for r in women)
        assert all(r["reason"] is None and r["flag"] is None for r in women)
        if mode == "flag":
            assert all(r["flag"] == "label_noise" and r["reason"] is None for r in men), men
        else:
            assert all(r["reason"] == "label_noise" and "outlier_below 0.3" in r["detail"] for r in men), men
            assert s.rejects["label_noise"] == 2
        assert s.rejects["duplicate"] == 2
        assert all(r["reason"] is None for k, r in rows.items() if k.startswith("man/"))


def test_the_identity_cleaner_flags_or_cuts_a_two_people_identity():
    """A folder that is two people (two tight clusters of 12 and 8 faces, seeded): the
    smaller cluster's faces are flagged ``mixed_identity`` (cluster 1) or cut (rejected),
    the larger's kept in cluster 0; a one-person folder is not mixed."""
    from facekit.stages import Sample
    from facekit_plugins.clean import IdentityCleaner

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 128))
    emb = np.concatenate([a + 0.3 * rng.normal(size=(12, 128)), b + 0.3 * rng.normal(size=(8, 128))])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    faces = [Sample(i, f"p{i}.jpg", "x", embedding=e.astype(np.float32), embedding_norm=20.0) for i, e in enumerate(emb)]
    for mode in ("flag", "cut"):
        c = IdentityCleaner(IdentityCleaner.Params(mixed=mode, duplicates="ignore", label_noise="ignore"))
        d = c.clean("x", faces)
        assert [x.cluster for x in d] == [0] * 12 + [1] * 8
        if mode == "flag":
            assert [x.flag for x in d] == [""] * 12 + ["mixed_identity"] * 8 and not any(x.reject for x in d)
        else:
            assert [x.reject for x in d] == [""] * 12 + ["mixed_identity"] * 8
        assert "two people" in d[-1].detail
    one = IdentityCleaner(IdentityCleaner.Params(duplicates="ignore")).clean("x", faces[:12])
    assert all(x.cluster is None and not x.reject for x in one)


def test_a_clean_stage_needs_a_recognizer(tmp_path):
    (tmp_path / "faces" / "a").mkdir(parents=True)
    msg = config_error(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        clean: {duplicates: flag}
        sinks: [{plugin: folders, path: f}]
        """)
    assert "pipeline.yaml:4: clean (identity) compares the faces' embeddings: add 'recognizer:" in msg, msg
    msg = config_error(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        clean: {mixed: halve}
        sinks: [{plugin: folders, path: f}]
        """)
    assert "pipeline.yaml:4:" in msg and "mixed" in msg and "'split'" in msg, msg  # split: issue 26 part 3
