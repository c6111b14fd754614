"""Issue 29 part 3: the ``list`` source. An im2rec / face2rec2 ``.lst``, a CSV/TSV with
named columns and VGGFace2's landmark + box CSVs name the images, their identities and,
optionally, five landmarks and a box; a row with landmarks is aligned with them and never
detected; lists are streamed (flat memory), identities must be contiguous (else a one-line
error naming the line), every row is kept or a reject naming ``<list>:<line>``.

The lists are made here from a real folders run (SCRFD-500m + arcface on the shared
identities): its ``results.parquet`` landmarks (source pixels) written back as a list must
give the folder run's crops bit for bit, with the detector's ``detect`` counted in-process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import config_error, facekit_cli, link_identities, write_config

import facekit_plugins.retinaface as retinaface
from facekit.errors import FacekitError
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run


def _crops(folder: Path) -> dict[str, bytes]:
    """The folders sink's JPEG crops: ``<label>/<stem>_<face>.jpg`` -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.jpg"))}


def _num(v: float) -> str:
    """A float32 value written so that it reads back exactly."""
    return repr(float(v))


@pytest.fixture
def detect_calls(monkeypatch):
    """Counts ``RetinafaceDetector.detect`` calls in this process (detect_batch calls it)."""
    calls = [0]
    orig = retinaface.RetinafaceDetector.detect

    def counted(self, image):
        calls[0] += 1
        return orig(self, image)

    monkeypatch.setattr(retinaface.RetinafaceDetector, "detect", counted)
    return calls


def _run(tmp: Path, name: str, source: str, detector: str = "", extra: str = "") -> Path:
    """Run ``source`` -> [detector] -> arcface -> folders sink in-process; the output folder."""
    cfg = write_config(tmp, f"""
        output: out_{name}
        source: {source}
        {detector}
        aligner: {{plugin: arcface}}
        sinks: [{{plugin: folders, path: crops}}]
        workers: 0
        {extra}
        """, f"{name}.yaml")
    run(load_config(cfg), progress=False)
    return tmp / f"out_{name}"


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, data_dir, scrfd_model):
    """The reference: folders -> SCRFD -> arcface -> folders sink on the 21 shared identities;
    ``(tmp, detector line, kept rows of results.parquet, crops, detect calls)``."""
    tmp = tmp_path_factory.mktemp("lists")
    link_identities(data_dir, tmp / "ids")
    det = f"detector: {{plugin: retinaface, model: {scrfd_model}}}"
    calls = [0]
    orig = retinaface.RetinafaceDetector.detect

    def counted(self, image):
        calls[0] += 1
        return orig(self, image)

    retinaface.RetinafaceDetector.detect = counted
    try:
        out = _run(tmp, "folders", "{plugin: folders, root: ids}", det)
    finally:
        retinaface.RetinafaceDetector.detect = orig
    rows = pq.read_table(out / "results.parquet").to_pylist()
    kept = [r for r in rows if r["reason"] is None]
    assert len(kept) >= 80 and all(r["landmarks"] is not None for r in kept)
    return tmp, det, kept, _crops(out / "crops"), calls[0]


def _vggface2_lists(tmp: Path, kept: list[dict]) -> None:
    """``loose_landmark_train.csv`` (NAME_ID,P1X..P5Y) and ``loose_bb_train.csv``
    (NAME_ID,X,Y,W,H) of the kept faces, VGGFace2 style: NAME_ID = ``<identity>/<stem>``
    (the .jpg left out, as VGGFace2 writes it; the one PNG keeps its extension)."""
    lmk = ["NAME_ID," + ",".join(f"P{i}{a}" for i in range(1, 6) for a in "XY")]
    bb = ["NAME_ID,X,Y,W,H"]
    for r in kept:
        rel = os.path.relpath(r["path"], tmp / "ids")
        assert not rel.startswith("..")
        nid = rel[:-4] if rel.endswith(".jpg") else rel
        lmk.append(",".join([nid] + [_num(v) for v in r["landmarks"]]))
        x1, y1, x2, y2 = r["box"]
        bb.append(",".join([nid, _num(x1), _num(y1), _num(x2 - x1), _num(y2 - y1)]))
    (tmp / "loose_landmark_train.csv").write_text("\n".join(lmk) + "\n")
    (tmp / "loose_bb_train.csv").write_text("\n".join(bb) + "\n")


def _face2rec2_lst(path: Path, kept: list[dict]) -> None:
    """face2rec2's layout: ``aligned path label x1 y1 x2 y2 x0..x4 y0..y4`` (planar)."""
    lines = []
    for r in kept:
        lm = r["landmarks"]
        fields = ["0", os.path.relpath(r["path"], path.parent), str(r["label"])] + [_num(v) for v in r["box"]]
        fields += [_num(v) for v in lm[0::2]] + [_num(v) for v in lm[1::2]]
        lines.append("\t".join(fields))
    path.write_text("\n".join(lines) + "\n")


def test_listed_landmarks_give_the_folder_runs_crops_with_no_detector_call(folder_run, detect_calls):
    """issue 29 part 3: a VGGFace2-style CSV pair and a face2rec2 .lst holding the folder
    run's landmarks give its crops bit for bit, with a detector configured (counted: zero
    calls) and without one."""
    tmp, det, kept, reference, folder_calls = folder_run
    assert folder_calls >= len(kept)  # the counter sees detection when it happens
    _vggface2_lists(tmp, kept)
    _face2rec2_lst(tmp / "train.lst", kept)
    vgg = "{plugin: list, path: loose_landmark_train.csv, boxes: loose_bb_train.csv, root: ids}"
    for name, source, detector in (
        ("vgg_det", vgg, det),
        ("vgg", vgg, ""),
        ("lst_det", "{plugin: list, path: train.lst}", det),
        ("lst", "{plugin: list, path: train.lst}", ""),
    ):
        detect_calls[0] = 0
        out = _run(tmp, name, source, detector)
        assert detect_calls[0] == 0, name
        assert _crops(out / "crops") == reference, name
        rows = pq.read_table(out / "results.parquet").to_pylist()
        assert [r["landmarks"] for r in rows] == [r["landmarks"] for r in kept], name
        assert all(r["score"] is None for r in rows), name  # not detected
    # the VGGFace2 boxes came through, as X,Y,W,H -> x1,y1,x2,y2
    rows = pq.read_table(tmp / "out_vgg" / "results.parquet").to_pylist()
    for r, k in zip(rows, kept):
        assert r["box"] == pytest.approx(k["box"], abs=1e-3)


def test_a_plain_path_identity_csv_is_detected_as_usual(folder_run, detect_calls):
    """issue 29 part 3: a ``path,identity`` CSV (AdaFace/CVLface style, no geometry) runs
    the detector on every image and gives the folder run's crops."""
    tmp, det, kept, reference, _ = folder_run
    ids = tmp / "ids"
    lines = ["path,identity"] + [
        f"ids/{d.name}/{f.name},{d.name}" for d in sorted(ids.iterdir()) for f in sorted(d.iterdir())
    ]
    (tmp / "plain.csv").write_text("\n".join(lines) + "\n")
    out = _run(tmp, "plain", "{plugin: list, path: plain.csv}", det)
    assert detect_calls[0] >= len(lines) - 1
    assert _crops(out / "crops") == reference


def test_rows_are_kept_or_rejects_naming_file_and_line(folder_run):
    """issue 29 part 3: missing file, bad number, wrong column count, no finite number,
    bad label, a name with a control character: each a reject whose detail names
    ``<list>:<line>``; a row without landmarks in a pipeline without a detector is a
    no_landmarks reject; count() equals the items yielded."""
    tmp, _, kept, _, _ = folder_run
    a, b = [r for r in kept if r["identity"] == "Anthony_Hopkins"][:2]
    va, vb = [_num(v) for v in a["landmarks"]], [_num(v) for v in b["landmarks"]]
    bad_number, not_finite = vb.copy(), vb.copy()
    bad_number[3], not_finite[0] = "abc", "inf"
    head = "path,identity," + ",".join(f"{c}{i}" for i in range(1, 6) for c in "xy")
    rows = [
        head,
        ",".join([a["path"], "hopkins", *va]),                          # 2 kept
        ",".join(["ids/Anthony_Hopkins/nope.jpg", "hopkins", *va]),     # 3 missing_file
        ",".join([b["path"], "hopkins", *bad_number]),                  # 4 bad_row
        ",".join([b["path"], "hopkins", "1", "2"]),                     # 5 bad_row
        ",".join([b["path"], "hopkins", *not_finite]),                  # 6 bad_row
        "",                                                             # 7 blank: skipped
        ",".join(["ids/Anthony_Hopkins/bad\x01name.jpg", "hopkins", *va]),  # 8 bad_name
        ",".join([b["path"], "hopkins", *vb]),                          # 9 kept
        ",".join([b["path"], "hopkins", *[""] * 10]),                   # 10 no landmarks, no detector
    ]
    lst = tmp / "bad.csv"
    lst.write_text("\n".join(rows) + "\n")
    out = _run(tmp, "bad", "{plugin: list, path: bad.csv, min_images: 1}")
    rejects = [r.split("\t") for r in (out / "rejects.tsv").read_text().splitlines()[1:]]
    # without a detector, an image without landmarks is a reject, not an unaligned photo
    assert [r[2] for r in rejects if not r[3].startswith(f"{lst}:")] == ["no_landmarks"], rejects
    rejects = [r for r in rejects if r[2] != "no_landmarks"]
    by_line = {int(detail.removeprefix(f"{lst}:").split(":")[0]): (reason, detail) for _, _, reason, detail in rejects}
    assert {k: v[0] for k, v in by_line.items()} == {
        3: "missing_file", 4: "bad_row", 5: "bad_row", 6: "bad_row", 8: "bad_name"
    }, rejects
    assert all(detail.startswith(f"{lst}:") for _, _, _, detail in rejects), rejects
    assert by_line[3][1].endswith(": no such file")
    assert "y2: 'abc' is not a number" in by_line[4][1]
    assert "wrong column count: 4 fields, the header has 12" in by_line[5][1]
    assert "x1: 'inf' is not a finite number" in by_line[6][1]
    assert "control character" in by_line[8][1]
    assert len(_crops(out / "crops")) == 2

    from facekit_plugins.lists import ListSource, ListSourceParams

    src = ListSource(ListSourceParams(path=lst))
    assert src.count() == sum(1 for _ in src) == 8  # the blank line is no row

    # a .lst: a label that is no class id, a wrong field count, a missing file
    (tmp / "bad.lst").write_text(
        f"0\t{a['path']}\t3\n0\t{a['path']}\t2.5\n0\t{a['path']}\t3\t1\t2\n0\tids/x/nope.jpg\t3\n"
    )
    items = list(ListSource(ListSourceParams(path=tmp / "bad.lst")))
    details = [getattr(it, "detail", "") for it in items]
    assert type(items[0]).__name__ == "Sample" and items[0].identity == "3"
    assert details[1].startswith(f"{tmp / 'bad.lst'}:2: label 2.5 is not a class id"), details
    assert details[2].startswith(f"{tmp / 'bad.lst'}:3: wrong column count: 5 fields"), details
    assert details[3] == f"{tmp / 'bad.lst'}:4: no such file", details
    assert [it.identity for it in items] == ["3"] * 4  # the bad label's row stays in the run


def test_an_identity_that_comes_back_is_a_one_line_error_naming_the_line(tmp_path):
    """issue 29 part 3: identities must be contiguous: the row that breaks that is named
    (file and line) in one line that says how to sort the list; in a .lst too."""
    (tmp_path / "a").mkdir()
    (tmp_path / "list.csv").write_text("path,identity\na/1.jpg,a\nb/1.jpg,b\nb/2.jpg,b\na/2.jpg,a\n")
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: list, path: list.csv}
        sinks: [{plugin: folders, path: crops}]
        """)
    r = facekit_cli("run", cfg)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    line = [ln for ln in r.stderr.splitlines() if "list.csv:5" in ln]
    assert len(line) == 1 and "identity 'a' comes again after other identities" in line[0], r.stderr
    assert "sort -s -t, -k2,2" in line[0]

    (tmp_path / "train.lst").write_text("0\ta/1.jpg\t0\n0\tb/1.jpg\t1\n\n0\ta/2.jpg\t0\n")
    from facekit_plugins.lists import ListSource, ListSourceParams

    with pytest.raises(FacekitError) as e:
        ListSource(ListSourceParams(path=tmp_path / "train.lst")).count()
    assert f"{tmp_path / 'train.lst'}:4: identity '0' comes again" in str(e.value)
    assert "\n" not in str(e.value) and "-k3,3n" in str(e.value)


def test_config_allows_an_aligner_without_detector_only_for_listed_landmarks(tmp_path):
    """issue 29 part 3: an aligner without a detector is refused for a folders source and
    accepted for a list source (its landmarks); a bad list header is one line."""
    (tmp_path / "faces" / "a").mkdir(parents=True)
    (tmp_path / "l.csv").write_text("path,identity\n")
    err = config_error(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        aligner: {plugin: arcface}
        sinks: [{plugin: folders, path: crops}]
        """)
    assert "an aligner needs a detector" in err
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: list, path: l.csv}
        aligner: {plugin: arcface}
        sinks: [{plugin: folders, path: crops}]
        """)
    assert load_config(cfg).detector is None
    err = config_error(tmp_path, """
        output: out
        sources: [{plugin: list, path: l.csv}, {plugin: folders, root: faces}]
        aligner: {plugin: arcface}
        sinks: [{plugin: folders, path: crops}]
        """)
    assert "an aligner needs a detector" in err

    from facekit.errors import ConfigError
    from facekit_plugins.lists import ListSource, ListSourceParams

    (tmp_path / "h.csv").write_text("file,who\n")
    with pytest.raises(ConfigError, match=r"h.csv:1: no 'path' \(or VGGFace2 'NAME_ID'\) column"):
        ListSource(ListSourceParams(path=tmp_path / "h.csv"))
    (tmp_path / "h.csv").write_text("path,identity,x1,y1,x2,y2\n")
    with pytest.raises(ConfigError, match=r"h.csv:1: landmark columns x3, y3, x4, y4, x5, y5 missing"):
        ListSource(ListSourceParams(path=tmp_path / "h.csv"))


_RSS = """
import resource, sys
from facekit_plugins.lists import ListSource, ListSourceParams
n = 0
for item in ListSource(ListSourceParams(path=sys.argv[1])):
    n += 1
print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_a_million_row_list_streams_in_flat_memory(tmp_path):
    """issue 29 part 3: iterating a 1M-row list (20 rows an identity, files missing: each a
    reject) peaks within 10% of the RSS of a 100k-row list (the 10M measurement is
    benchmarks/bench_list.py)."""
    peaks = {}
    for n in (100_000, 1_000_000):
        p = tmp_path / f"list{n}.csv"
        with open(p, "w") as f:
            f.write("path,identity\n")
            for i in range(n):
                f.write(f"id{i // 20:07d}/{i:09d}.jpg,id{i // 20:07d}\n")
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(_RSS), str(p)], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert r.returncode == 0, r.stderr
        count, peak = map(int, r.stdout.split())
        assert count == n
        peaks[n] = peak
        p.unlink()
    assert peaks[1_000_000] <= 1.10 * peaks[100_000], peaks


def test_vggface2_boxes_are_read_in_step_with_the_landmarks(tmp_path, data_dir):
    """issue 29 part 3: VGGFace2's loose_bb_train.csv beside loose_landmark_train.csv:
    row n gives row n's box (X,Y,W,H); a row naming another image is a one-line error
    naming both files and lines; a box without area is a bad_row naming the boxes line;
    a TSV with a label column reads too."""
    from facekit_plugins.lists import ListSource, ListSourceParams

    face = sorted((data_dir / "aligned_112").glob("*.jpg"))[0]
    (tmp_path / "train" / "n000002").mkdir(parents=True)
    for stem in ("0001_01", "0002_01"):
        os.symlink(face, tmp_path / "train" / "n000002" / f"{stem}.jpg")
    lm = ",".join(["38.5", "51.5", "73.5", "51.5", "56", "71.5", "41.5", "92", "70.5", "92"])
    (tmp_path / "lm.csv").write_text(
        "NAME_ID,P1X,P1Y,P2X,P2Y,P3X,P3Y,P4X,P4Y,P5X,P5Y\n" f"n000002/0001_01,{lm}\n" f"n000002/0002_01,{lm}\n"
    )
    params = dict(path=tmp_path / "lm.csv", boxes=tmp_path / "bb.csv", root=tmp_path / "train")
    (tmp_path / "bb.csv").write_text("NAME_ID,X,Y,W,H\nn000002/0001_01,1,2,100,100\nn000002/0002_01,1,2,0,4\n")
    first, second = list(ListSource(ListSourceParams(**params)))
    assert first.path == str(tmp_path / "train" / "n000002" / "0001_01.jpg") and first.identity == "n000002"
    assert first.box.tolist() == [1, 2, 101, 102] and first.landmarks.tolist()[2] == [56, 71.5]
    assert second.reason == "bad_row" and second.detail == f"{tmp_path / 'bb.csv'}:3: box [1.0, 2.0, 0.0, 4.0] has no area"
    (tmp_path / "bb.csv").write_text("NAME_ID,X,Y,W,H\nn000002/0001_01,1,2,100,100\nn000002/0003_01,1,2,3,4\n")
    with pytest.raises(FacekitError) as e:
        list(ListSource(ListSourceParams(**params)))
    assert str(e.value) == (f"{tmp_path / 'bb.csv'}:3 names 'n000002/0003_01' but {tmp_path / 'lm.csv'}:3 names "
                            "'n000002/0002_01': the boxes file must list the same images in the same order")

    (tmp_path / "l.tsv").write_text('path\tlabel\nn000002/0001_01.jpg\t7\nn000002/0002_"01.jpg\t7\n')
    items = list(ListSource(ListSourceParams(path=tmp_path / "l.tsv", root=tmp_path / "train")))
    assert [(it.identity, type(it).__name__) for it in items] == [("7", "Sample"), ("7", "Reject")]
    assert items[1].reason == "missing_file" and items[1].path.endswith('0002_"01.jpg')  # no CSV quoting in a TSV
