"""Issue 29 part 5: files trainers read besides the rec. The ``landmarks`` sink writes
CVLface's ``ldmk_5points.csv`` and insightface face2rec2's ``.lst`` with boxes and five
landmarks, from a real pipeline (folders source over the shared identities, SCRFD-500m,
arcface alignment, mxrec sink beside it).

The files are read back the way their consumers read them (the parsing steps re-done here,
sources cited at each reader); every line is checked against ``results.parquet``; the
``.lst`` re-aligned from the source photos gives the rec's crops bit for bit. A pipeline
without landmarks is a one-line config error naming the line."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import config_error, link_aligned_112, link_identities, write_config

import facekit
from facekit.formats import MARKER
from facekit.formats.recordio import IndexedRecordIOReader, unpack
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.pipeline.publish import Publication
from facekit.plugins import get_registry
from facekit.vision import norm_crop, template_for
from facekit.vision.images import decode_image, encode_jpeg

HEADER = ["idx"] + [f"ldmk_{i}" for i in range(10)]


def _pipeline(tmp_path, root, scrfd, select="largest_central", fmt="both"):
    cfg = write_config(
        tmp_path,
        f"""
        output: out
        workers: 0
        source: {{plugin: folders, root: {root}}}
        detector: {{plugin: retinaface, model: {scrfd}, input_size: 640, select: {select}}}
        aligner: {{plugin: arcface, size: 112}}
        sinks:
          - {{plugin: mxrec, path: rec}}
          - {{plugin: landmarks, path: lmk, root: {root}, format: {fmt}}}
        """,
    )
    summary = run(load_config(cfg), progress=False)
    return tmp_path / "out", summary


@pytest.fixture(scope="module")
def identities_run(data_dir, scrfd_model, tmp_path_factory):
    """One real run over the 21 shared identities (the 3 single-image ones dropped)."""
    base = tmp_path_factory.mktemp("lmk29")
    root = link_identities(data_dir, base / "root")
    out, summary = _pipeline(base, root, scrfd_model)
    return root, out, summary


def _kept(out):
    """The kept rows of results.parquet, in the order the sinks got them."""
    rows = [r for r in pq.read_table(out / "results.parquet").to_pylist() if r["label"] >= 0]
    return sorted(rows, key=lambda r: int(r["outputs"][1]))


def read_face2rec2_lst(path):
    """The lines of a face2rec2 ``.lst`` as face2rec2 reads them (insightface
    ``recognition/tools/face2rec2.py`` at d0112ed6a224abe8d5984ca9afbc6680752c3de3,
    ``parse_lst_line`` then ``read_list``): split on tabs after stripping; field 0 the
    aligned flag and field 2 the label through ``int()``; fields 3..6 the box through
    ``int()`` into int32; fields 7..16 through ``float()``, shaped ``(2, 5)`` and transposed
    (five x, then five y); a line neither aligned nor carrying landmarks is skipped."""
    items = []
    with open(path) as fin:
        for line in fin:
            vec = line.strip().split("\t")
            assert len(vec) >= 3
            aligned, image_path, label = int(vec[0]), vec[1], int(vec[2])
            bbox = landmark = None
            if len(vec) > 3:
                bbox = np.array([int(v) for v in vec[3:7]], dtype=np.int32)
                if len(vec) > 7:
                    landmark = np.array([float(v) for v in vec[7:17]]).reshape((2, 5)).T
            if not aligned and landmark is None:
                continue
            items.append((image_path, label, bbox, landmark, aligned))
    return items


def read_cvlface_csv(path):
    """``ldmk_5points.csv`` as CVLface reads it (mk-minchul/CVLface at
    d3d09c93e53c5d5db9ec5c5fa96e5d77fe7a78d8,
    ``cvlface/research/recognition/code/run_v1/dataset/repeated_dataset_with_ldmk_theta.py``):
    a comma-separated table with a header line, its first column the index
    (``read_csv(sep=',', index_col=0)``), a row looked up by that index and its values,
    ten of them, shaped ``(-1, 2)``. pandas is in none of the project's environments:
    pyarrow's CSV reader reads the same table (header, comma, typed columns). Returns the
    header and ``{idx: (5, 2) float64}``."""
    t = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=","))
    cols = t.column_names
    index = t.column(0).to_pylist()
    values = np.stack([np.asarray(t.column(c).to_numpy(), np.float64) for c in cols[1:]], axis=1)
    table = {}
    for i, row in zip(index, values):
        assert i not in table, f"index {i} twice"
        assert len(row) == 10
        table[i] = row.reshape(-1, 2)
    return cols, table


def _box_int(v: float) -> int:
    return math.floor(float(v) + 0.5)


def test_lst_lines_are_results_faces(identities_run):
    """Issue 29 part 5: one .lst line per kept face, as face2rec2 parses it: aligned 0, the
    path relative to root, the gate's label, the box in whole pixels (nearest), the five
    landmarks planar with the exact float32 values facekit aligned with."""
    root, out, summary = identities_run
    kept = _kept(out)
    assert len(kept) == summary.faces_kept == 91
    raw = (out / "lmk" / "train.lst").read_text().splitlines()
    items = read_face2rec2_lst(out / "lmk" / "train.lst")
    assert len(raw) == len(items) == len(kept)
    for k, (row, line, (path, label, bbox, landmark, aligned)) in enumerate(zip(kept, raw, items)):
        assert row["outputs"][1] == str(k) and row["outputs"][0] == str(k + 1)  # rec key k + 1: the same face
        assert len(line.split("\t")) == 17
        assert aligned == 0
        assert os.path.join(str(root), path) == row["path"] and not os.path.isabs(path)
        assert label == row["label"]
        assert bbox.tolist() == [_box_int(v) for v in row["box"]]
        lmk32 = np.asarray(row["landmarks"], np.float32).reshape(5, 2)
        assert landmark.shape == (5, 2) and landmark.dtype == np.float64
        assert np.array_equal(landmark, lmk32.astype(np.float64))  # exact: no digit lost
    labels = [it[1] for it in items]
    assert labels == sorted(labels) and len(set(labels)) == summary.identities_written == 18


def test_cvlface_rows_are_the_recs_crops(identities_run):
    """Issue 29 part 5: ldmk_5points.csv has CVLface's header and one row per rec image,
    row ``idx`` = the face at MXFaceDataset index ``idx`` (rec key ``idx + 1``), landmarks
    interleaved, in the aligned crop's pixels divided by its size (the rec's images are
    the crops: the points sit on the ArcFace template)."""
    _, out, summary = identities_run
    kept = _kept(out)
    text = (out / "lmk" / "ldmk_5points.csv").read_text()
    assert text.startswith(",".join(HEADER) + "\n")
    cols, table = read_cvlface_csv(out / "lmk" / "ldmk_5points.csv")
    assert cols == HEADER and sorted(table) == list(range(summary.faces_kept))
    rec = IndexedRecordIOReader(out / "rec" / "train.idx", out / "rec" / "train.rec")
    h0, _ = unpack(rec.read_idx(0))
    imgidx = list(range(1, int(h0.label[0])))  # MXFaceDataset: header flag > 0
    assert len(imgidx) == len(table)
    template = template_for(112) / 112.0
    for idx, row in enumerate(kept):
        header, payload = unpack(rec.read_idx(imgidx[idx]))
        assert int(header.label) == row["label"]
        h, w = decode_image(payload).shape[:2]
        aligned = np.asarray(row["aligned"], np.float32).reshape(5, 2).astype(np.float64)
        expect = aligned / np.array([w, h], np.float64)
        assert np.array_equal(table[idx], expect)
        assert np.abs(table[idx] - template).max() < 0.1  # crop coordinates, normalised (source ones are not)
        assert np.array_equal((table[idx] * [w, h]).astype(np.float32), aligned.astype(np.float32))


def test_lst_realigned_gives_the_recs_crops(identities_run, monkeypatch):
    """Issue 29 part 5: from the source root (face2rec2 opens the paths as written), each
    line's photo read as face2rec2 reads it (``cv2.imread(path, 1)``) and aligned with its
    landmarks at the float32 precision facekit holds them (facekit ``norm_crop`` and
    insightface's ``face_align.norm_crop`` alike) gives the rec's crop bit for bit, once
    encoded as the pipeline and ``mx.recordio.pack_img`` encode (OpenCV JPEG, quality 95).
    Read as face2rec2 keeps them (float64), the similarity transform is estimated in float64
    instead of float32: the crops differ in a few pixel values by a few grey levels."""
    from insightface.utils import face_align

    root, out, _ = identities_run
    items = read_face2rec2_lst(out / "lmk" / "train.lst")
    rec = IndexedRecordIOReader(out / "rec" / "train.idx", out / "rec" / "train.rec")
    monkeypatch.chdir(root)
    changed = []
    for k, (path, label, _, landmark, _) in enumerate(items):
        img = cv2.imread(path, 1)
        assert np.array_equal(img, decode_image(Path(path).read_bytes()))  # the pipeline's pixels
        header, payload = unpack(rec.read_idx(k + 1))
        assert int(header.label) == label
        lmk = landmark.astype(np.float32)
        crop = norm_crop(img, lmk, 112)
        assert np.array_equal(crop, face_align.norm_crop(img, lmk, 112))
        assert encode_jpeg(crop, 95) == payload, f"line {k + 1}: {path}"
        diff = np.abs(face_align.norm_crop(img, landmark, 112).astype(int) - crop.astype(int))
        assert diff.max() <= 4
        changed.append(int((diff > 0).sum()))
    assert max(changed) < 0.002 * 112 * 112 * 3


def test_several_faces_per_photo(data_dir, scrfd_model, tmp_path):
    """Issue 29 part 5: ``select: all`` keeps every face of a group photo: one line each,
    the same path, each face's own box and landmarks, in both files."""
    root = tmp_path / "root"
    (root / "group").mkdir(parents=True)
    for name in ("insightface_t1.jpg", "openface_longoria-cooper.jpg"):
        os.symlink(data_dir / "images" / "group" / name, root / "group" / name)
    out, summary = _pipeline(tmp_path, root, scrfd_model, select="all")
    kept = _kept(out)
    items = read_face2rec2_lst(out / "lmk" / "train.lst")
    _, table = read_cvlface_csv(out / "lmk" / "ldmk_5points.csv")
    assert len(items) == len(table) == len(kept) == summary.faces_kept
    per_path = {}
    for (path, label, bbox, landmark, _), row in zip(items, kept):
        assert os.path.join(str(root), path) == row["path"] and label == row["label"] == 0
        assert np.array_equal(landmark, np.asarray(row["landmarks"], np.float32).reshape(5, 2).astype(np.float64))
        per_path.setdefault(path, []).append(bbox.tolist())
    assert len(per_path["group/insightface_t1.jpg"]) == 6
    assert len(per_path["group/openface_longoria-cooper.jpg"]) >= 2
    assert all(len({tuple(b) for b in boxes}) == len(boxes) for boxes in per_path.values())


def test_one_format_one_file(data_dir, scrfd_model, tmp_path):
    """Issue 29 part 5: ``format: cvlface`` writes only ldmk_5points.csv; the summary names it."""
    root = link_identities(data_dir, tmp_path / "root", ["Anthony_Hopkins", "Rob_Lowe"])
    out, summary = _pipeline(tmp_path, root, scrfd_model, fmt="cvlface")
    assert sorted(os.listdir(out / "lmk")) == [MARKER, "ldmk_5points.csv"]
    entry = json.loads((out / "summary.json").read_text())["sinks"]["sinks[1] (landmarks)"]
    assert entry["files"] == ["ldmk_5points.csv"] and entry["faces"] == summary.faces_kept


def test_no_landmarks_is_a_config_error(tmp_path, data_dir):
    """Issue 29 part 5: a pipeline with no landmarks (already aligned crops, no detector;
    a box-only detector) refuses the landmarks sink in one line naming the config line."""
    link_aligned_112(data_dir, tmp_path / "faces")
    msg = config_error(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: faces}
        sinks:
          - {plugin: mxrec, path: rec}
          - {plugin: landmarks, path: lmk}
        """,
    )
    assert "pipeline.yaml:6: sinks[1] (landmarks) writes five landmarks, but no detector finds them" in msg
    assert msg.strip().splitlines()[0] == "invalid pipeline config:" and len(msg.strip().splitlines()) == 2
    msg = config_error(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: faces}
        detector: {plugin: haar}
        aligner: {plugin: boxcrop}
        sinks: [{plugin: landmarks, path: lmk, format: face2rec2}]
        """,
    )
    assert "pipeline.yaml:6: sinks[0] (landmarks) writes five landmarks, but detector (haar) gives boxes only" in msg


def _sink(tmp_path, **params):
    cls = get_registry().get("sink", "landmarks")
    out = tmp_path / "o"
    out.mkdir(exist_ok=True)
    p = cls.Params.model_validate({"path": "lmk", **params}, context={"output_dir": str(out), "config_dir": str(tmp_path)})
    sink = cls(p)
    pub = Publication(out)
    sink.open(pub)
    return sink, pub


def _face(path, **kw):
    lmk = np.array([[30, 40], [60, 40], [45, 55], [33, 70], [57, 70]], np.float32)
    crop = encode_jpeg(np.zeros((112, 112, 3), np.uint8))
    return facekit.Sample(key=0, path=path, identity="a", data=crop, box=np.array([10, 20, 80, 90], np.float32),
                          landmarks=lmk, aligned_landmarks=lmk, label=0, **kw)


def test_bad_faces_stop_the_run_in_one_line(tmp_path):
    """Issue 29 part 5: a face without landmarks, a face without crop landmarks (format
    cvlface) and a path outside ``root`` are one-line errors naming the image."""
    root = tmp_path / "src"
    (root / "a").mkdir(parents=True)
    sink, pub = _sink(tmp_path, root=str(root))
    with pytest.raises(facekit.FacekitError, match=r"^landmarks sink: .*/x\.jpg: not inside root .*src"):
        sink.write_many([_face(str(tmp_path / "x.jpg"))])
    with pytest.raises(facekit.FacekitError, match=r"a/b\.jpg: face 0 has no landmarks"):
        sink.write_many([_face(str(root / "a" / "b.jpg")).replace(landmarks=None)])
    with pytest.raises(facekit.FacekitError, match=r"a/b\.jpg: face 0 has no landmarks in its crop"):
        sink.write_many([_face(str(root / "a" / "b.jpg")).replace(aligned_landmarks=None)])
    assert sink.write_many([_face(str(root / "a" / "b.jpg"))]) == ["0"]
    sink.abort()
    pub.abort()
    # face2rec2 alone needs no crop landmarks
    sink, pub = _sink(tmp_path, root=str(root), format="face2rec2")
    assert sink.write_many([_face(str(root / "a" / "b.jpg")).replace(aligned_landmarks=None)]) == ["0"]
    sink.abort()
    pub.abort()


def test_paths_without_root_are_the_sources(tmp_path):
    """Issue 29 part 5: without ``root`` the .lst names each photo as the source gave it
    (an absolute path for the folders source); a tab in a name cannot split the line."""
    sink, pub = _sink(tmp_path)
    path = str(tmp_path / "src" / "a" / "tab\there.jpg")
    assert sink.write_many([_face(path), _face(path, face_id=1)]) == ["0", "1"]
    stats = sink.close()
    assert stats["faces"] == 2 and stats["files"] == ["ldmk_5points.csv", "train.lst"]
    items = read_face2rec2_lst(sink.dir.staging / "train.lst")
    assert [it[0] for it in items] == [path.replace("\t", "\\t")] * 2
    assert [it[2].tolist() for it in items] == [[10, 20, 80, 90]] * 2
    _, table = read_cvlface_csv(sink.dir.staging / "ldmk_5points.csv")
    assert sorted(table) == [0, 1] and np.array_equal(table[1] * 112, _face(path).aligned_landmarks)
    pub.abort()
