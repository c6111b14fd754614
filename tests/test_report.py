"""``facekit report`` and ``facekit show`` on a real run over ``../shared/data/images``
(identities with group photos, negatives, an empty and a text file mixed in; SCRFD,
``select: identity`` with the shared MobileFaceNet, ArcFace alignment, ``mxrec`` +
``folders`` sinks). The report is loaded in a real headless Chromium (Debian's package,
``.ci/chromium-env.sh``, driven by playwright): every identity and reject reason is on the
pages, every image loads, no console errors; a screenshot is saved (set
``FACEKIT_REPORT_SCREENSHOT=FILE`` to keep a copy)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import _missing, facekit_cli, write_config
from facekit.errors import FacekitError
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.pipeline.results import SCHEMA
from facekit.report.build import build_report
from facekit.report.load import CropReader, RunOutput
from facekit.report.sheet import contact_sheet

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    for c in (os.environ.get("FACEKIT_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
              shutil.which("chromium-browser")):
        if c and os.access(c, os.X_OK):
            return c
    _missing("no Chromium (install it with 'bash .ci/chromium-env.sh')")


@pytest.fixture(scope="module")
def run_out(data_dir, scrfd_model, rec_model, tmp_path_factory):
    """A real run: 21 identity folders, ``Group_Mix`` (the five group photos and one photo
    of Rob_Lowe), ``Negatives`` (seven face-free photos, an empty file, a text file named
    .jpg) and a photo outside any identity folder."""
    base = tmp_path_factory.mktemp("report_run")
    root = base / "root"
    root.mkdir()
    imgs = data_dir / "images"
    for d in sorted((imgs / "identities").iterdir()):
        os.symlink(d, root / d.name)
    mix = root / "Group_Mix"
    mix.mkdir()
    for f in sorted((imgs / "group").iterdir()):
        os.symlink(f, mix / f.name)
    rob = sorted((imgs / "identities" / "Rob_Lowe").iterdir())[0]
    os.symlink(rob, mix / rob.name)
    neg = root / "Negatives"
    neg.mkdir()
    for f in sorted((imgs / "negatives").iterdir()):
        os.symlink(f, neg / f.name)
    (neg / "empty.jpg").write_bytes(b"")
    (neg / "notes.jpg").write_text("not a photo\n")
    os.symlink(sorted((imgs / "negatives").iterdir())[0], root / "stray.jpg")
    cfg = write_config(base, f"""
        output: out
        source: {{plugin: folders, root: {root}}}
        detector: {{plugin: retinaface, model: {scrfd_model}, select: identity}}
        recognizer: {{plugin: onnx, model: {rec_model}}}
        aligner: {{plugin: arcface}}
        sinks:
          - {{plugin: mxrec, path: rec}}
          - {{plugin: folders, path: aligned}}
        """)
    run(load_config(cfg), progress=False)
    return base / "out"


@pytest.fixture(scope="module")
def report(run_out):
    t0 = time.monotonic()
    stats = build_report(run_out, run_out.parent / "report")
    stats["wall"] = time.monotonic() - t0
    print(f"report: {stats}")
    return Path(stats["index"]).parent, stats


@pytest.mark.slow
def test_report_in_headless_chromium_shows_every_identity_reason_and_image(run_out, report, tmp_path):
    """Crawl every page of the report from index.html in Chromium (file:// URLs)."""
    chromium = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    folder, stats = report
    summary = json.loads((run_out / "summary.json").read_text())
    # the run itself has what the report must show
    assert {"no_face", "identity_mismatch", "identity_too_small", "empty_file", "not_an_image",
            "not_in_identity_folder"} <= set(summary["rejects"])
    errors, identities, reasons, label_rows = [], set(), set(), set()
    pages, images = 0, 0
    t0 = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"requestfailed: {r.url} {r.failure}"))
            todo, seen = ["index.html"], set()
            while todo:
                name = todo.pop(0)
                if name in seen:
                    continue
                seen.add(name)
                page.goto((folder / name).as_uri(), wait_until="load")
                pages += 1
                broken = page.evaluate(
                    "() => Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
                assert not broken, f"{name}: images not loaded: {broken[:5]}"
                images += page.evaluate("() => document.images.length")
                identities |= set(page.eval_on_selector_all("section.identity", "els => els.map(e => e.dataset.identity)"))
                reasons |= set(page.eval_on_selector_all(".rejects[data-reason]", "els => els.map(e => e.dataset.reason)"))
                label_rows |= set(page.eval_on_selector_all("#labelmap tr[data-identity]", "els => els.map(e => e.dataset.identity)"))
                for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"):
                    target = href.split("#")[0]
                    if target.endswith(".html") and "/" not in target and target not in seen:
                        todo.append(target)
                if name == "index.html":
                    page.screenshot(path=str(tmp_path / "index.png"), full_page=True)
                if name == "identities-0001.html":
                    page.screenshot(path=str(tmp_path / "identities.png"), full_page=True)
            browser_s = time.monotonic() - t0
        finally:
            browser.close()
    print(f"chromium: {pages} pages, {images} images, {browser_s:.1f} s; report built in {stats['wall']:.2f} s")
    assert not errors, errors[:10]
    assert identities == set(summary["identities"]), set(summary["identities"]) ^ identities
    assert label_rows == set(summary["identities"])
    assert reasons == set(summary["rejects"])
    assert images >= summary["identities_written"] + stats["rejected_images"] - 3  # sheets + photos (3 undecodable)
    shot = tmp_path / "identities.png"
    assert shot.stat().st_size > 10_000
    if os.environ.get("FACEKIT_REPORT_SCREENSHOT"):
        shutil.copy(shot, os.environ["FACEKIT_REPORT_SCREENSHOT"])
        shutil.copy(tmp_path / "index.png", Path(os.environ["FACEKIT_REPORT_SCREENSHOT"]).with_suffix(".index.png"))


@pytest.mark.slow
def test_report_reads_the_same_crops_from_the_rec_as_from_the_folders(run_out, tmp_path):
    """Without the ``folders`` sink the crops come from ``train.rec`` (record id ->
    key): the same pixels for every kept face."""
    rows = [r for r in pq.read_table(run_out / "results.parquet").to_pylist() if r["reason"] is None]
    both = CropReader(RunOutput(run_out))
    moved = tmp_path / "out"
    shutil.copytree(run_out, moved, symlinks=True, ignore=shutil.ignore_patterns("aligned", "report"))
    s = json.loads((moved / "summary.json").read_text())
    s["output"] = str(moved)
    s["sinks"] = {k: dict(v, path=str(moved / "rec")) if "mxrec" in k else dict(v, path=None) for k, v in s["sinks"].items()}
    (moved / "summary.json").write_text(json.dumps(s))
    rec_only = CropReader(RunOutput(moved))
    assert rec_only.run.sinks[1][1] is None
    for r in rows:
        a, b = both.read(r["outputs"]), rec_only.read(r["outputs"])
        assert a.shape == (112, 112, 3) and np.array_equal(a, b), r["path"]
    build_report(moved, tmp_path / "rep")
    assert len(list((tmp_path / "rep" / "img" / "ids").rglob("*.jpg"))) == s["identities_written"]


@pytest.mark.slow
def test_report_bad_input_is_one_line_naming_the_file(run_out, tmp_path):
    r = facekit_cli("report", tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "summary.json" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad"
    shutil.copytree(run_out, bad, symlinks=True, ignore=shutil.ignore_patterns("report"))
    (bad / "results.parquet").write_bytes(b"PAR1 not really")
    r = facekit_cli("report", bad)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and str(bad / "results.parquet") in r.stderr, r.stderr
    (bad / "results.parquet").unlink()
    r = facekit_cli("report", bad)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "results.parquet: missing" in r.stderr, r.stderr
    shutil.copy(run_out / "results.parquet", bad / "results.parquet")  # a copied output reads its own crops
    victim = next((bad / "aligned").rglob("*.jpg"))
    victim.write_bytes(b"\xff\xd8 broken")
    r = facekit_cli("report", bad, "-o", tmp_path / "rep")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and str(victim) in r.stderr, r.stderr
    assert not (tmp_path / "rep").exists(), "a failed report left a partial folder"
    victim.unlink()
    r = facekit_cli("report", bad, "-o", tmp_path / "rep")
    assert r.returncode == 1 and str(victim) in r.stderr and "unreadable crop" in r.stderr, r.stderr
    (tmp_path / "notreport").mkdir()
    (tmp_path / "notreport" / "mine.txt").write_text("x")
    with pytest.raises(FacekitError, match="not a facekit report"):
        build_report(run_out, tmp_path / "notreport")


@pytest.mark.slow
def test_show_contact_sheets_of_the_rec_and_the_folders(run_out, tmp_path):
    """``facekit show`` of one identity of the RecordIO: a tile per record holding exactly
    the crop the ``folders`` sink wrote for it (both sinks got the same JPEG bytes, so the
    decoded pixels are equal, not just the sheet's shape: issue 30 item 19), its label
    under it; ``contact_sheet`` of the identity folder is the same image."""
    summary = json.loads((run_out / "summary.json").read_text())
    n = summary["identities"]["John_Savage"]["kept"]
    label = summary["identities"]["John_Savage"]["label"]
    r = facekit_cli("show", run_out / "rec", "--identity", label, "-o", tmp_path / "rec.png", "--cols", 4)
    assert r.returncode == 0, r.stderr
    sheet = cv2.imread(str(tmp_path / "rec.png"))  # PNG: the sheet's pixels as written
    rows = (n + 3) // 4
    assert sheet.shape == (rows * (112 + 16 + 2), 4 * (112 + 2), 3)
    # tile k (row-major, 112 + 16 caption + 2 gap) is the k-th crop of the folders sink's
    # identity folder <label>/, in the folder's (natural) order, which is the records' order
    natural = lambda f: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", f.name)]  # noqa: E731
    crops = sorted((run_out / "aligned" / str(label)).glob("*.jpg"), key=natural)
    assert len(crops) == n
    for k, crop in enumerate(crops):
        y, x = k // 4 * (112 + 16 + 2), k % 4 * (112 + 2)
        assert np.array_equal(sheet[y : y + 112, x : x + 112], cv2.imread(str(crop))), crop.name
        assert sheet[y + 112 : y + 128, x : x + 112].max() > 200  # the label's white text
    # the same faces from the folders sink's identity folder <label>/: the same sheet
    folders = contact_sheet(run_out / "aligned", identity=str(label), cols=4)
    assert np.array_equal(folders, sheet)
    whole = contact_sheet(run_out / "rec", count=16)
    assert whole.shape[0] == 2 * (112 + 16 + 2)
    r = facekit_cli("show", run_out / "rec", "--identity", 9999, "-o", tmp_path / "x.png")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no image with label 9999" in r.stderr
    r = facekit_cli("show", tmp_path / "nothing", "-o", tmp_path / "x.png")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "nothing" in r.stderr


def test_report_is_paged_and_bounded_for_many_identities(tmp_path):
    """3,000 identities (synthetic results table, one shared 112x112 crop file): 30
    identity pages of 100, one sprite per identity, no page over 250 kB, index links them."""
    out = tmp_path / "out"
    (out / "faces" / "0").mkdir(parents=True)
    crop = np.full((112, 112, 3), 128, np.uint8)
    cv2.imwrite(str(out / "faces" / "0" / "a.jpg"), crop)
    n_ids, per = 3000, 3
    names = [f"person_{i:05d}" for i in range(n_ids) for _ in range(per)]
    rows = len(names)
    cols = {f.name: [None] * rows for f in SCHEMA}
    cols.update(path=[f"/nowhere/{n}/{k}.jpg" for n, k in zip(names, range(rows))], identity=names,
                label=[i // per for i in range(rows)], face=[0] * rows, score=[0.5 + (i % 50) / 100 for i in range(rows)],
                box=[[10.0, 10.0, 60.0 + i % 40, 70.0] for i in range(rows)], outputs=[[None, "0/a.jpg"]] * rows)
    pq.write_table(pa.table(cols, schema=SCHEMA), out / "results.parquet")
    (out / "summary.json").write_text(json.dumps({
        "images_read": rows, "faces_kept": rows, "identities_written": n_ids, "identities_dropped": 0, "rejects": {},
        "output": str(out), "sinks": {"sinks[0] (mxrec)": {"path": str(out / "rec")}, "sinks[1] (folders)": {"path": str(out / "faces")}},
        "identities": {f"person_{i:05d}": {"label": i, "kept": per, "rejected": 0} for i in range(n_ids)}}))
    stats = build_report(out, tmp_path / "rep", per_page=100)
    rep = tmp_path / "rep"
    assert stats["identities"] == n_ids
    assert len(list(rep.glob("identities-*.html"))) == 30
    assert len(list((rep / "img" / "ids").rglob("*.jpg"))) == n_ids
    assert max(p.stat().st_size for p in rep.glob("*.html")) < 250_000
    index = (rep / "index.html").read_text()
    assert all(f'href="identities-{i:04d}.html"' in index for i in range(1, 31))
    assert "identities-0031.html" not in index
    assert (rep / "labels-0003.html").exists() and not (rep / "labels-0004.html").exists()


def test_report_true_in_a_pipeline_writes_it_after_the_publication(tmp_path, data_dir, monkeypatch):
    """``report: true``: the report is built once, when the run's outputs are published
    (at that moment the output folder already holds every published file, with its final
    content, and no staging left: issue 30 item 19 asked that the order be checked)."""
    from conftest import link_aligned_112
    import facekit.report.build as report_build

    def listing(out: Path) -> dict[str, bytes]:
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
                if p.is_file() and p.relative_to(out).parts[0] != "report"}

    seen = []
    real_build = report_build.build_report

    def build_report(output, *args, **kwargs):
        seen.append(listing(Path(output)))
        return real_build(output, *args, **kwargs)

    monkeypatch.setattr(report_build, "build_report", build_report)
    root = link_aligned_112(data_dir, tmp_path / "root")
    cfg = write_config(tmp_path, f"""
        output: out
        report: true
        source: {{plugin: folders, root: {root}, min_images: 1}}
        sinks: [{{plugin: folders, path: faces}}]
        """)
    s = run(load_config(cfg), progress=False)
    out = tmp_path / "out"
    assert len(seen) == 1
    published = listing(out)
    assert {"summary.json", "results.parquet", "rejects.tsv"} <= published.keys()
    assert sum(k.startswith("faces/") and k.endswith(".jpg") for k in published) == s.faces_kept == 8
    assert seen[0] == published  # the report saw the published outputs, nothing more or less
    assert s.report == str(tmp_path / "out" / "report" / "index.html")
    assert (tmp_path / "out" / "report" / "index.html").is_file()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["faces_kept"] == s.faces_kept
    msg = None
    try:
        write_config(tmp_path, f"""
            output: out2
            source: {{plugin: folders, root: {root}}}
            sinks: [{{plugin: folders, path: report}}]
            """, "clash.yaml")
        load_config(tmp_path / "clash.yaml")
    except Exception as e:  # the report folder is the run's own
        msg = str(e)
    assert msg and "report" in msg
