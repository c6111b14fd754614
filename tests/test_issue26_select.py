"""issue 26 part 3: face choice in group photos (``select: identity``) is part of the
``clean`` stage kind, out of the detector: ``clean: {select: identity}`` (every cleaner's
parameter, facekit.params.FaceChoiceParams) runs it in the worker before the cleaner's
decisions; ``detector: {select: identity, ...}``, the older spelling, is mapped onto the
clean stage by config validation and writes the same bytes; without a detector each image
is one face: nothing to choose, the similarity to the identity's other photos is judged."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import pyarrow.parquet as pq

from conftest import config_error, link_aligned_112, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from test_identity_select import folders  # noqa: F401  (the fixture: group photos, a stranger, label noise)

OFF = "duplicates: off, label_noise: off, mixed: off"


def _outputs(out: Path) -> dict[str, bytes]:
    """Every file the sinks wrote, the results table and the rejects file, by path."""
    files = [p for d in ("faces", "rec") for p in sorted((out / d).rglob("*")) if p.is_file()]
    files += [out / "results.parquet", out / "rejects.tsv"]
    return {str(p.relative_to(out)): p.read_bytes() for p in files}


def test_the_detector_spelling_and_the_clean_spelling_write_the_same_bytes(tmp_path, folders, scrfd_model, rec_model):  # noqa: F811
    """``detector: {select: identity, <thresholds>}`` and ``clean: {select: identity,
    <thresholds>}`` (other decisions off): byte-identical folders and mxrec sinks, results
    table and rejects file, with a group photo's face chosen, a stranger flagged or rejected
    and a photo of nobody of the folder rejected as identity_mismatch."""
    keys = "identity_min_similarity: 0.25, flag_below: 0.35, reject_below: 0.15"
    stages = {
        "old": f"detector: {{plugin: retinaface, model: {scrfd_model}, select: identity, {keys}}}",
        "new": f"detector: {{plugin: retinaface, model: {scrfd_model}}}\nclean: {{select: identity, {keys}, {OFF}}}",
    }
    got = {}
    for name, text in stages.items():
        cfg = write_config(tmp_path, f"""
output: out-{name}
source: {{plugin: folders, root: {folders}}}
{text}
aligner: {{plugin: arcface}}
recognizer: {{plugin: onnx, model: {rec_model}}}
sinks: [{{plugin: folders, path: faces}}, {{plugin: mxrec, path: rec}}]
""", f"{name}.yaml")
        spec = load_config(cfg)
        assert spec.cleaner is not None and spec.cleaner.params.select == "identity"
        assert spec.cleaner.params.flag_below == 0.35 and spec.cleaner.params.reject_below == 0.15
        run(spec, progress=False)
        got[name] = _outputs(tmp_path / f"out-{name}")
    assert sorted(got["old"]) == sorted(got["new"]) and len(got["old"]) > 20
    assert [k for k in got["old"] if got["old"][k] != got["new"][k]] == []
    rows = {Path(r["path"]).name: r for r in pq.read_table(tmp_path / "out-new" / "results.parquet").to_pylist()}
    assert rows["zz_with_someone.jpg"]["reason"] is None and rows["zz_with_someone.jpg"]["box"][2] < 200
    assert rows["zz_strangers.jpg"]["reason"] == "identity_mismatch"
    assert rows["zz_not_him.jpg"]["flag"] == "far_from_identity" or rows["zz_not_him.jpg"]["reason"] == "label_noise"


def _config(tmp_path, folders, scrfd_model, rec_model, detector="", clean=""):  # noqa: F811
    return f"""
        output: out
        source: {{plugin: folders, root: {folders}}}
        detector: {{plugin: retinaface, model: {scrfd_model}{detector}}}
        aligner: {{plugin: arcface}}
        recognizer: {{plugin: onnx, model: {rec_model}}}
        {clean}
        sinks: [{{plugin: folders, path: faces}}]
        """


def test_config_moves_the_detector_spelling_onto_the_clean_stage(tmp_path, folders, scrfd_model, rec_model):  # noqa: F811
    """The detector's select: identity and its thresholds become the clean stage's (an
    identity cleaner making no other decision, or the config's clean stage); clean:
    {select: identity} has the detector keep every face (select: all); a detector told to
    keep one face, or the choice given twice, is a config error naming the line."""
    args = (tmp_path, folders, scrfd_model, rec_model)
    spec = load_config(write_config(tmp_path, _config(*args, ", select: identity, flag_below: 0.4")))
    cp = spec.cleaner.params
    assert spec.cleaner.name == "identity" and cp.select == "identity" and cp.flag_below == 0.4
    assert (cp.duplicates, cp.label_noise, cp.mixed) == ("ignore", "ignore", "ignore")
    spec = load_config(write_config(tmp_path, _config(*args, ", select: identity", "clean: {mixed: cut}")))
    cp = spec.cleaner.params
    assert cp.select == "identity" and cp.mixed == "cut" and cp.duplicates == "reject"  # the config's clean stage
    spec = load_config(write_config(tmp_path, _config(*args, "", "clean: {select: identity}")))
    assert spec.detector.params.select == "all" and spec.cleaner.params.select == "identity"
    msg = config_error(tmp_path, _config(*args, ", select: largest_central", "clean: {select: identity}"))
    assert "pipeline.yaml:4:" in msg and "select: largest_central keeps one face per photo" in msg, msg
    msg = config_error(tmp_path, _config(*args, ", select: identity", "clean: {select: identity, flag_below: 0.2}"))
    assert "pipeline.yaml:4:" in msg and "give it once, on clean" in msg, msg
    spec = load_config(write_config(tmp_path, _config(*args, "", "clean: {select: off}")))
    assert spec.cleaner.params.select is None and spec.detector.params.select == "largest_central"


def test_face_choice_without_a_detector(tmp_path, data_dir, rec_model):
    """Already aligned crops, no detector: each image is one face, so nothing is chosen;
    each face's similarity to its identity's other photos is stored, a crop of another
    person is flagged far_from_identity, and an identity of one photo is kept as it is."""
    root = link_aligned_112(data_dir, tmp_path / "faces")
    man, woman = root / "adaface_man_man", root / "adaface_woman_woman"
    os.symlink(os.readlink(sorted(woman.iterdir())[0]), man / "zz_not_him.jpg")
    (root / "solo").mkdir()
    cv2.imwrite(str(root / "solo" / "one.png"), cv2.imread(str(sorted(woman.iterdir())[1])))
    cfg = write_config(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: {root}, min_images: 1}}
        recognizer: {{plugin: onnx, model: {rec_model}}}
        clean: {{select: identity, {OFF}}}
        sinks: [{{plugin: folders, path: f}}]
        """)
    s = run(load_config(cfg), progress=False)
    assert s.faces_kept == 10 and not s.rejects, s
    rows = {Path(r["path"]).parent.name + "/" + Path(r["path"]).name: r
            for r in pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()}
    stranger = rows["adaface_man_man/zz_not_him.jpg"]
    assert stranger["flag"] == "far_from_identity" and stranger["similarity"] < 0.3, stranger
    own = [r for k, r in rows.items() if k.startswith("adaface_man_man/adaface")]
    assert len(own) == 4 and all(r["flag"] is None and r["similarity"] > 0.3 for r in own)
    assert rows["solo/one.png"]["reason"] is None and rows["solo/one.png"]["similarity"] is None
