"""issue 26 part 5: the HTML report gets a page per decision kind.

Real runs with a ``clean:`` stage and the shared MobileFaceNet on the shared aligned crops
(a folder holding two people, a copy, a face filed under another identity): flagged or
rejected faces beside their identity's typical faces, copies beside their originals, a
two-people identity's two clusters side by side; the dataset-level decisions of a run with
a ``merge:`` step (its ``decisions.tsv``: merge candidates as two contact sheets side by
side) and of a hand-written ``decisions.tsv`` (``moved``, ``copy``, ``overlap``). Rejected faces have no crop in the
sinks: their pictures come from the source, also when it is an ``mxrec`` source's record
or a raw photo the face is cut from by its ``transform``. The pages are loaded in headless
Chromium (``.ci/chromium-env.sh``): every link resolves, every image loads.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import _missing, facekit_cli, link_identities, write_config
from facekit.errors import FacekitError
from facekit.formats.tsv import escape
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.report.build import build_report
from facekit.report.load import read_decisions
from facekit.report.source import SourceReader
from facekit.report.thumbs import face_thumbnail, fit
from test_report import CHROMIUM_ARGS, _chromium

HEADER = "kind\tidentity\tpath\tother\tsimilarity\tdecision\tdetail\n"
#: the header the dataset-level step writes (a face index column too)
HEADER8 = "kind\tidentity\tpath\tface\tother\tsimilarity\tdecision\tdetail\n"


def _tree(root: Path, data_dir: Path) -> Path:
    """``mixed``: the woman's four aligned crops, the man's four and a byte copy of woman_1
    (two people, a duplicate); ``man``: the man's four as PNG (the same pixels, other bytes)
    and woman_4 encoded again (label noise); ``woman``: the woman's four as PNG (the same
    person as ``mixed``'s woman)."""
    src = data_dir / "aligned_112"
    for d in ("mixed", "man", "woman"):
        (root / d).mkdir(parents=True)
    for i in range(1, 5):
        w, m = src / f"adaface_woman_woman_{i}.jpg", src / f"adaface_man_man_{i}.jpg"
        shutil.copy(w, root / "mixed" / w.name)
        shutil.copy(m, root / "mixed" / m.name)
        cv2.imwrite(str(root / "woman" / f"{w.stem}.png"), cv2.imread(str(w)))
        cv2.imwrite(str(root / "man" / f"{m.stem}.png"), cv2.imread(str(m)))
    shutil.copy(src / "adaface_woman_woman_1.jpg", root / "mixed" / "zz_copy.jpg")
    cv2.imwrite(str(root / "man" / "zz_woman.jpg"), cv2.imread(str(src / "adaface_woman_woman_4.jpg")),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    return root


def _run(base: Path, name: str, source: str, clean: str, sinks: str, rec_model: Path, merge: str = "") -> Path:
    cfg = write_config(base, f"""
        output: {name}
        source: {source}
        recognizer: {{plugin: onnx, model: {rec_model}, flip: true}}
        clean: {clean}
        sinks: {sinks}
        """ + (f"merge: {merge}\n" if merge else ""), f"{name}.yaml")
    run(load_config(cfg), progress=False)
    return base / name


@pytest.fixture(scope="module")
def runs(data_dir, rec_model, tmp_path_factory):
    """``flag``: every decision flagged (folders + mxrec sinks); ``reject``: rejected or
    cut (mxrec sink only, so kept crops come from the rec); ``fromrec``: the flag run's
    RecordIO as an ``mxrec`` source, rejecting; ``merged``: split, with a ``merge:`` step
    proposing merges (its decisions.tsv is the dataset-level step's)."""
    base = tmp_path_factory.mktemp("report26")
    root = _tree(base / "faces", data_dir)
    src = f"{{plugin: folders, root: {root}, min_images: 1}}"
    out = {
        "flag": _run(base, "flag", src, "{duplicates: flag, near_duplicate_above: 0.99, label_noise: flag, mixed: flag}",
                     "[{plugin: mxrec, path: rec}, {plugin: folders, path: faces}]", rec_model),
        "reject": _run(base, "reject", src,
                       "{duplicates: reject, near_duplicate_above: 0.99, label_noise: reject, mixed: cut}",
                       "[{plugin: mxrec, path: rec}]", rec_model),
    }
    out["fromrec"] = _run(base, "fromrec", f"{{plugin: mxrec, path: {out['flag'] / 'rec'}}}",
                          "{duplicates: reject, near_duplicate_above: 0.99, label_noise: reject, mixed: cut}",
                          "[{plugin: folders, path: faces}]", rec_model)
    out["merged"] = _run(base, "merged", src,
                         "{duplicates: reject, near_duplicate_above: 0.99, label_noise: flag, mixed: split}",
                         "[{plugin: mxrec, path: rec}]", rec_model, "{identities: propose, moved: flag, copies: reject}")
    out["root"] = root
    return out


def _rows(out: Path) -> list[dict]:
    return pq.read_table(out / "results.parquet").to_pylist()


def _copy(src: Path, dest: Path, tsv: bool = True) -> Path:
    """A copy of a run's output (its summary pointing at the copy), without decisions.tsv
    unless ``tsv``."""
    shutil.copytree(src, dest, symlinks=True, ignore=None if tsv else shutil.ignore_patterns("decisions.tsv"))
    s = json.loads((dest / "summary.json").read_text())
    s["output"] = str(dest)
    (dest / "summary.json").write_text(json.dumps(s))
    return dest


def _tsv(out: Path, root: Path) -> None:
    """A hand-written decisions.tsv (the columns of the dataset-level step's): merges, a face
    nearer another identity, a copy across identities, a line the results show already, an
    overlap with a test set."""
    p = lambda ident, f: str(root / ident / f)  # noqa: E731
    lines = [
        ("merge", "woman", "", "", "mixed", "0.81", "merge", "the same person under two names"),
        ("merge", "man", "", "", "woman", "0.05", "apart", "below the merge threshold"),
        ("moved", "man", p("man", "zz_woman.jpg"), "0", "woman", "0.74", "flag", "closer to woman's centre"),
        ("copy", "mixed", p("mixed", "adaface_man_man_4.jpg"), "0", p("man", "adaface_man_man_4.png"),
         "1.0", "flag", "the same image\tunder two identities"),
        ("label_noise", "man", p("man", "zz_woman.jpg"), "0", "", "0.1", "reject", "also in results.parquet"),
        ("overlap", "woman", p("woman", "adaface_woman_woman_2.png"), "0", "lfw.bin:17", "0.93", "flag", "in a test set"),
    ]
    text = "".join("\t".join(escape(f) for f in x) + "\n" for x in lines)
    (out / "decisions.tsv").write_text(HEADER8 + text, encoding="utf-8")


def _sides(html: str) -> list[str]:
    return re.findall(r'class="side typical" data-identity="([^"]*)"', html)


def _tiles(html: str) -> list[str]:
    """The paths of the face tiles in ``html``, in order."""
    return re.findall(r'<figure class="dtile[^"]*" title="([^"]+?)(?: ·[^"]*)?"', html)


def test_pages_per_kind_from_the_results(runs, tmp_path):
    """issue 26 part 5: label_noise faces beside the identity's typical faces (its kept
    faces most similar to its centre, in that order), each copy beside its original, the
    two clusters of the two-people identity; the index links them and, for an output
    without decisions.tsv, says no dataset-level decisions were made."""
    out = _copy(runs["reject"], tmp_path / "out", tsv=False)
    rows = _rows(out)
    stats = build_report(out, tmp_path / "rep")
    rep = tmp_path / "rep"
    assert stats["decisions"] == {"duplicate": 1, "label_noise": 1, "mixed_identity": 4}, stats
    index = (rep / "index.html").read_text()
    for k in ("duplicate", "label_noise", "mixed_identity"):
        assert f'href="decisions-{k}-0001.html"' in index
    assert "No dataset-level decisions were made: this output has no decisions.tsv" in index
    assert not list(rep.glob("merges-*.html")) and not list(rep.glob("dataset-*.html"))

    noise = (rep / "decisions-label_noise-0001.html").read_text()
    sect = noise.split('data-identity="man"', 1)[1].split("</section>")[0]
    decided, typical = sect.split('class="side typical"')
    assert [Path(t).name for t in _tiles(decided)] == ["zz_woman.jpg"] and "<b>reject</b>" in decided
    # typical: man's kept faces, most similar to his centre first
    kept = sorted((r for r in rows if r["identity"] == "man" and r["reason"] is None), key=lambda r: -r["similarity"])
    assert _tiles(typical) == [r["path"] for r in kept]
    assert "typical faces: 4 of 4 kept, most similar to its centre first" in typical

    dup = (rep / "decisions-duplicate-0001.html").read_text()
    pair = re.search(r'<div class="pair">(.*?)<div class="meta pairtxt">', dup, re.S).group(1)
    assert [Path(p).name for p in _tiles(pair)] == ["zz_copy.jpg", "adaface_woman_woman_1.jpg"]

    mixed = (rep / "decisions-mixed_identity-0001.html").read_text()
    main, other = mixed.split('class="side other"')
    clusters = [sorted(Path(r["path"]).name for r in rows if r["identity"] == "mixed" and r["cluster"] == c)
                for c in (0, 1)]
    people = sorted([[f"adaface_man_man_{i}.jpg" for i in range(1, 5)],
                     [f"adaface_woman_woman_{i}.jpg" for i in range(1, 5)]])
    assert sorted(clusters) == people  # the run found the two people
    assert [sorted(Path(t).name for t in _tiles(h)) for h in (main, other)] == clusters
    assert "cluster 1: the other person (4) · cut (rejected)" in other
    # every tile has a picture: the rejected faces' come from their source files
    for page in ("decisions-label_noise-0001.html", "decisions-duplicate-0001.html", "decisions-mixed_identity-0001.html"):
        assert "no picture" not in (rep / page).read_text(), page


def test_rejected_faces_of_an_mxrec_source_are_read_from_its_records(runs, tmp_path):
    """issue 26 part 5: cleaning a RecordIO (the main use): the rejected faces' paths are
    ``train.rec:KEY``; their pictures are those records' images (the same pixels as the
    crops the flag run wrote for the same faces)."""
    out = runs["fromrec"]
    rows = _rows(out)
    rejected = [r for r in rows if r["reason"] in ("label_noise", "mixed_identity", "duplicate")]
    assert len(rejected) == 6 and all(re.search(r"train\.rec:\d+$", r["path"]) for r in rejected), rejected
    reader = SourceReader()
    for r in rejected:
        img, why = face_thumbnail(r, 112, reader)
        assert img is not None, why
        key = int(r["path"].rsplit(":", 1)[1])
        from facekit.formats.recordio import IndexedRecordIOReader, unpack
        rec = IndexedRecordIOReader(runs["flag"] / "rec" / "train.idx", runs["flag"] / "rec" / "train.rec")
        want = cv2.imdecode(np.frombuffer(unpack(rec.read_idx(key))[1], np.uint8), cv2.IMREAD_COLOR)
        rec.close()
        assert np.array_equal(img, fit(want, 112)), r["path"]
    reader.close()
    stats = build_report(out, tmp_path / "rep")
    assert sum(stats["decisions"].values()) == 6
    for page in (tmp_path / "rep").glob("decisions-*.html"):
        assert "no picture" not in page.read_text(), page.name
    # a key the rec does not have: a reason, never a traceback
    img, why = face_thumbnail({"path": f"{runs['flag'] / 'rec' / 'train.rec'}:99999"}, 64, SourceReader())
    assert img is None and "no key 99999" in why, why
    # an idx whose keys are not in order (found line by line): the same records
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    (shuffled / "train.rec").symlink_to(runs["flag"] / "rec" / "train.rec")
    lines = (runs["flag"] / "rec" / "train.idx").read_text().splitlines(keepends=True)
    (shuffled / "train.idx").write_text("".join(reversed(lines)))
    a, b = SourceReader(), SourceReader(max_open=1)
    for r in rejected:
        key = r["path"].rsplit(":", 1)[1]
        assert a.read(r["path"]) == b.read(f"{shuffled / 'train.rec'}:{key}") == b.read(r["path"])


def test_dataset_level_decisions_from_decisions_tsv(runs, tmp_path):
    """issue 26 part 5: merge candidates as two identities' typical faces side by side with
    their similarity and decision; a moved face beside its identity and the one it likely
    belongs to; a copy across identities beside its original; an overlap with its bin
    image; a line the results pages show already (label_noise of zz_woman.jpg) is not
    shown twice."""
    out = _copy(runs["reject"], tmp_path / "out")
    _tsv(out, runs["root"])
    stats = build_report(out, tmp_path / "rep")
    rep = tmp_path / "rep"
    assert stats["merges"] == 2
    index = (rep / "index.html").read_text()
    assert "No dataset-level decisions" not in index
    assert re.search(r'href="merges-0001.html">2 identity pair\(s\)</a> · merge 1 · apart 1', index), index
    merges = (rep / "merges-0001.html").read_text()
    first, second = merges.split('class="tsvline"')[1:]
    assert "woman ⇄ mixed" in first and "b-merge" in first and "similarity 0.810" in first
    assert _sides(first) == ["woman", "mixed"] and _sides(second) == ["man", "woman"]
    woman, mixed = first.split('class="side typical"')[1:]
    assert sorted(Path(t).name for t in _tiles(woman)) == [f"adaface_woman_woman_{i}.png" for i in range(1, 5)]
    rows = _rows(out)
    main = [r["path"] for r in rows if r["identity"] == "mixed" and r["cluster"] == 0 and r["reason"] is None]
    assert len(main) == 4 and sorted(_tiles(mixed)) == sorted(main)  # mixed: its main person only

    moved = (rep / "dataset-moved-0001.html").read_text()
    assert _sides(moved) == ["man", "woman"] and "likely belongs to:" in moved
    assert 'alt="' + str(runs["root"] / "man" / "zz_woman.jpg") in moved
    copy = (rep / "dataset-copy-0001.html").read_text()
    assert "copy of" in copy and "the same image\tunder two identities" in copy
    assert re.findall(r'<img src="img/ds/[^"]+" width="96" height="96" alt="([^"]+)"', copy) == [
        str(runs["root"] / "mixed" / "adaface_man_man_4.jpg"), str(runs["root"] / "man" / "adaface_man_man_4.png")]
    overlap = (rep / "dataset-overlap-0001.html").read_text()
    assert "lfw.bin:17" in overlap and _sides(overlap) == ["woman"]
    assert not (rep / "dataset-label_noise-0001.html").exists()
    assert re.search(r'data-kind="label_noise"><td>label_noise</td><td class="num">1</td><td class="num">0</td>'
                     r'<td class="num">1</td>', index), index
    for page in rep.glob("dataset-*.html"):
        assert "no picture" not in page.read_text(), page.name

    # a decisions.tsv without merges: the index says so
    (out / "decisions.tsv").write_text(HEADER, encoding="utf-8")
    build_report(out, tmp_path / "rep")
    assert "Merge candidates: none" in (rep / "index.html").read_text()


def test_the_merge_steps_decisions_tsv(runs, tmp_path):
    """issue 26 part 5 with the dataset-level step's own decisions.tsv (a run with a
    ``merge:`` step proposing merges, a split two-people identity): each merge line is on
    the merge pages with both identities' typical faces (a split's ``<identity>#2``
    included), and every face line is shown once, on its kind's dataset page or with its
    identity on the results pages."""
    out = runs["merged"]
    lines, counts = read_decisions(out / "decisions.tsv", 10_000)
    merges = [d for d in lines if d.kind == "merge"]
    assert merges, counts
    stats = build_report(out, tmp_path / "rep")
    rep = tmp_path / "rep"
    assert stats["merges"] == len(merges)
    html = "".join(p.read_text() for p in sorted(rep.glob("merges-*.html")))
    items = html.split('class="tsvline"')[1:]
    assert len(items) == len(merges)
    for d, item in zip(merges, items, strict=True):
        assert _sides(item) == [d.identity, d.other], (d, _sides(item))
        for side in item.split('class="side typical"')[1:]:
            assert _tiles(side) and "not in results.parquet" not in side, (d, side[:300])
    table = (rep / "index.html").read_text().split('id="dataset-kinds"')[1]
    for kind, n in counts.items():
        if kind == "merge":
            continue
        m = re.search(rf'data-kind="{kind}"><td>.*?</td><td class="num">(\d+)</td><td class="num">(\d+)</td>'
                      rf'<td class="num">(\d+)</td>', table)
        assert m and int(m[1]) == n and int(m[2]) + int(m[3]) == n, (kind, n, m and m.groups())
    for page in rep.glob("*.html"):
        assert "no picture" not in page.read_text(), page.name


def test_a_bad_decisions_tsv_is_one_line_naming_the_line(runs, tmp_path):
    """issue 26 part 5: a malformed decisions.tsv stops the report with one line naming the
    file and line; no report is left."""
    out = _copy(runs["reject"], tmp_path / "out")
    for text, want in [
        ("kind\tidentity\tpath\n", "decisions.tsv:1: not a decisions header (no field other, similarity"),
        (HEADER + "merge\ta\t\tb\t0.9\tmerge\n", "decisions.tsv:2: 6 fields, the header has 7"),
        (HEADER + "\n# a comment\nmerge\ta\t\tb\thigh\tmerge\tx\n", "decisions.tsv:4: similarity 'high' is not a number"),
        (HEADER + "\ta\t\tb\t0.5\tmerge\tx\n", "decisions.tsv:2: empty kind"),
    ]:
        (out / "decisions.tsv").write_text(text, encoding="utf-8")
        r = facekit_cli("report", out, "-o", tmp_path / "rep")
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and want in r.stderr, (text, r.stderr)
        assert "Traceback" not in r.stderr and not (tmp_path / "rep").exists()
    with pytest.raises(FacekitError, match="decisions.tsv:2: 6 fields"):
        (out / "decisions.tsv").write_text(HEADER + "merge\ta\t\tb\t0.9\tmerge\n", encoding="utf-8")
        build_report(out, tmp_path / "rep")


def test_decisions_tsv_is_read_capped_per_kind(tmp_path):
    """issue 26 part 5: a large decisions.tsv is read streaming, at most ``cap`` lines of
    each kind held (the rest counted); escaped fields come back as written."""
    lines = [f"merge\tid{i}\t\tid{i + 1}\t0.{i % 10}\tapart\tx\n" for i in range(5000)]
    lines += [f"moved\tid{i}\t/p/{i}.jpg\tid0\t\tflag\ta{escape(chr(9))}b\n" for i in range(7)]
    p = tmp_path / "decisions.tsv"
    p.write_text(HEADER + "".join(lines), encoding="utf-8")
    kept, counts = read_decisions(p, 100)
    assert counts == {"merge": 5000, "moved": 7}
    assert [d.kind for d in kept].count("merge") == 100 and [d.kind for d in kept].count("moved") == 7
    moved = [d for d in kept if d.kind == "moved"]
    assert moved[0].detail == "a\tb" and moved[0].similarity is None and moved[0].line == 5002


@pytest.mark.slow
def test_rejected_raw_faces_are_cut_by_their_transform(data_dir, scrfd_model, rec_model, tmp_path):
    """issue 26 part 5: on raw photos (detector + arcface), a face moved into another
    identity is rejected label_noise; its picture on the decision page is cut from the
    source photo by its transform: the same face the flag run wrote as its crop."""
    root = link_identities(data_dir, tmp_path / "root", ["John_Salley", "John_Savage"])
    (root / "John_Salley").unlink()
    (root / "John_Salley").mkdir()
    for f in sorted((data_dir / "images" / "identities" / "John_Salley").iterdir()):
        (root / "John_Salley" / f.name).symlink_to(f)
    moved = sorted((data_dir / "images" / "identities" / "John_Savage").iterdir())[0]
    (root / "John_Salley" / "moved.jpg").symlink_to(moved)
    outs = {}
    for mode in ("flag", "reject"):
        cfg = write_config(tmp_path, f"""
            output: {mode}
            source: {{plugin: folders, root: {root}}}
            detector: {{plugin: retinaface, model: {scrfd_model}}}
            aligner: {{plugin: arcface}}
            recognizer: {{plugin: onnx, model: {rec_model}, flip: true}}
            clean: {{duplicates: ignore, label_noise: {mode}, mixed: ignore}}
            sinks: [{{plugin: folders, path: faces}}]
            """, f"{mode}.yaml")
        run(load_config(cfg), progress=False)
        outs[mode] = {Path(r["path"]).name: r for r in _rows(tmp_path / mode) if Path(r["path"]).name == "moved.jpg"}
    flagged, rejected = outs["flag"]["moved.jpg"], outs["reject"]["moved.jpg"]
    assert flagged["flag"] == "label_noise" and rejected["reason"] == "label_noise", (flagged, rejected)
    crop = cv2.imread(str(tmp_path / "flag" / "faces" / flagged["outputs"][0]))
    cut, why = face_thumbnail(rejected, 112, SourceReader())
    assert cut is not None, why
    diff = np.abs(cut.astype(int) - crop.astype(int)).mean()
    assert diff < 3, diff  # the same 112x112 face (the crop went through JPEG once more; measured 1.1)
    stats = build_report(tmp_path / "reject", tmp_path / "rep")
    assert stats["decisions"] == {"label_noise": 1}
    assert "no picture" not in (tmp_path / "rep" / "decisions-label_noise-0001.html").read_text()


def _crawl(folder: Path, shots: Path) -> tuple[set, set]:
    """Load every page reachable from ``folder/index.html`` in headless Chromium: no console
    or page errors, every image loaded, every link to a file of the report and every anchor
    on its page; the two clusters of a two-people identity laid side by side. Returns the
    pages seen and the decision kinds shown."""
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    errors, seen, kinds = [], set(), set()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"requestfailed: {r.url} {r.failure}"))
            todo, anchors = ["index.html"], []
            while todo:
                name = todo.pop(0)
                if name in seen:
                    continue
                seen.add(name)
                page.goto((folder / name).as_uri(), wait_until="load")
                broken = page.evaluate(
                    "() => Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
                assert not broken, f"{name}: images not loaded: {broken[:5]}"
                kinds |= set(page.eval_on_selector_all(".decisions[data-kind], .tsvlines[data-kind]",
                                                       "els => els.map(e => e.dataset.kind)"))
                for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"):
                    target, _, anchor = href.partition("#")
                    assert "/" not in target and (folder / target).is_file(), (name, href)  # all links are local
                    if anchor:
                        anchors.append((target, anchor))
                    if target.endswith(".html"):
                        todo.append(target)
                if name.startswith(("decisions-", "merges-", "dataset-")) and name.endswith("-0001.html"):
                    page.screenshot(path=str(shots / name.replace(".html", ".png")), full_page=True)
                if name == "decisions-mixed_identity-0001.html":
                    # the two clusters side by side: the other person's sheet right of the main one
                    a, b = page.eval_on_selector_all(".decision .sides > .side",
                                                     "els => els.map(e => e.getBoundingClientRect().x)")
                    assert b > a + 200, (a, b)
            for target, anchor in set(anchors):
                page.goto((folder / target).as_uri(), wait_until="load")
                assert page.evaluate(f"() => !!document.getElementById({anchor!r})"), (target, anchor)
        finally:
            browser.close()
    assert not errors, errors[:10]
    return seen, kinds


@pytest.mark.slow
def test_decision_pages_in_headless_chromium(runs, tmp_path):
    """issue 26 part 5: every page reachable from index.html, the decision pages included,
    loads in Chromium without errors, each image loads and each link resolves to a page
    and anchor that exist; each decision kind and the merge pages are reached (one item a
    page: the pagers' links too), for the hand-written decisions.tsv and for the merge
    step's own."""
    out = _copy(runs["reject"], tmp_path / "out")
    _tsv(out, runs["root"])
    build_report(out, tmp_path / "rep", decisions_per_page=1)
    seen, kinds = _crawl(tmp_path / "rep", tmp_path)
    assert {"label_noise", "duplicate", "mixed_identity", "merge", "moved", "copy", "overlap"} <= kinds, kinds
    assert {"merges-0001.html", "merges-0002.html", "dataset-moved-0001.html"} <= seen
    assert (tmp_path / "decisions-mixed_identity-0001.png").stat().st_size > 5_000
    build_report(runs["merged"], tmp_path / "rep2", decisions_per_page=1)
    seen, kinds = _crawl(tmp_path / "rep2", tmp_path / "rep2")
    assert "merge" in kinds and "merges-0001.html" in seen, kinds
