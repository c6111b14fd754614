"""``facekit report``: a static HTML report of a finished run.

The run's ``results.parquet`` is streamed once in source order (identities are
contiguous); pages are written as they fill, so memory holds one page of items, the
histogram values (4 bytes per face) and the identity list, whatever the run's size:

- ``index.html``: the run summary, rejects by reason, histograms (detection score, face
  box side, images per identity, similarity when present), links to every other page;
- ``identities-NNNN.html``: ``per_page`` identities each: label, counts, detection
  scores, similarity/flags, rejects by reason, and a contact sheet of up to
  ``max_per_identity`` kept crops read from the sinks' files (one sprite JPEG per
  identity under ``img/ids/``);
- ``rejects-<reason>-NNNN.html``: every rejected image, with a thumbnail of the source
  photo and its detected boxes drawn (``img/rej/``);
- ``flagged-NNNN.html``: faces with a ``flag`` (e.g. ``far_from_identity``);
- ``labels-NNNN.html`` and ``labels.tsv``: the name -> label map;
- a page per decision kind (:mod:`facekit.report.decisions`): ``decisions-<kind>-NNNN.html``
  (a ``clean`` stage's ``label_noise``, ``duplicate``, ``mixed_identity`` faces beside their
  identity's typical faces, copies beside their originals, a two-people identity's two
  clusters), ``merges-NNNN.html`` (identity pairs of ``decisions.tsv`` as two contact
  sheets side by side) and ``dataset-<kind>-NNNN.html`` (its other lines).

Rejected faces have no crop in the sinks: their pictures are cut from the source image (a
file, or an ``mxrec`` source's record: :mod:`facekit.report.source`).

The report is written to a staging folder beside its place and moved there when complete;
an existing folder is replaced only if it is a facekit report (``.facekit-report`` inside).
The staging is removed when the report fails or is interrupted (Ctrl-C, SIGTERM), and, after
a ``kill -9``, by the next report into the same place (:mod:`facekit.report.staging`).
"""

from __future__ import annotations

import json
import os
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from facekit.errors import FacekitError
from facekit.formats.tsv import escape
from facekit.report.charts import box_side, histogram_svg
from facekit.report.decisions import DecisionPages
from facekit.report.load import CropReader, RunOutput
from facekit.report.pages import Pager as _Pager
from facekit.report.pages import safe_name as _safe
from facekit.report.source import SourceReader
from facekit.report.staging import ReportStaging, remove_dead_staging
from facekit.report.thumbs import fit, source_thumbnail, sprite, write_jpeg

MARKER = ".facekit-report"
TILE = 72
COLS = 10
SOURCE_SIDE = 200
LABELS_PER_PAGE = 1000


def _env() -> Environment:
    env = Environment(loader=PackageLoader("facekit.report", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["f2"] = lambda v: "" if v is None else f"{v:.2f}"
    env.filters["f3"] = lambda v: "" if v is None else f"{v:.3f}"
    return env


@dataclass
class Stats:
    scores: array = field(default_factory=lambda: array("f"))
    sides: array = field(default_factory=lambda: array("f"))
    sims: array = field(default_factory=lambda: array("f"))
    per_identity: array = field(default_factory=lambda: array("l"))


class _Report:
    def __init__(self, run: RunOutput, out: Path, per_page: int, max_per_identity: int, rejects_per_page: int,
                 decisions_per_page: int, max_decisions: int):
        self.run, self.out = run, out
        self.env = _env()
        self.crops = CropReader(run)
        self.sources = SourceReader()
        self.per_page, self.max_per_identity, self.rejects_per_page = per_page, max_per_identity, rejects_per_page
        self.stats = Stats()
        self.identities = _Pager(self, "identities", "identities.html", per_page, title="Identities")
        self.rejects: dict[str, _Pager] = {}
        self.flagged = _Pager(self, "flagged", "flagged.html", rejects_per_page, title="Flagged faces")
        self.names: dict[str, dict] = {}  # identity -> {"page", "anchor"}
        self.n_identity = 0
        self.pages_written = 0
        self.thumbs = 0
        self.decisions = DecisionPages(self, decisions_per_page, max_decisions, max_per_identity)

    def render(self, template: str, name: str, **ctx) -> None:
        html = self.env.get_template(template).render(run=self.run.summary, **ctx)
        (self.out / name).write_text(html, encoding="utf-8")
        self.pages_written += 1

    # ---- one identity's rows (contiguous in the results table)
    def identity(self, name: str, rows: list[dict]) -> None:
        n = self.n_identity
        self.n_identity += 1
        anchor = f"i{n}"
        page_file = self.identities.file(self.identities.page)
        info = (self.run.summary.get("identities") or {}).get(name, {})
        kept = [r for r in rows if r["reason"] is None]
        labels = {r["label"] for r in kept}
        label = info.get("label", next(iter(labels)) if labels else -1)
        rej_links: dict[str, dict] = {}
        i = 0
        while i < len(rows):  # rejected images: consecutive rows of one path and reason
            r = rows[i]
            j = i + 1
            if r["reason"] is not None:
                while j < len(rows) and rows[j]["path"] == r["path"] and rows[j]["reason"] == r["reason"]:
                    j += 1
                f, k = self._reject(rows[i:j], page_file, anchor)
                rej_links.setdefault(r["reason"], {"file": f, "anchor": f"r{k}", "count": 0})["count"] += 1
            i = j
        for r in rows:
            if r["flag"]:
                self._flag(r, page_file, anchor)
        decided = self.decisions.identity(name, rows, n, f"{page_file}#{anchor}", label)
        for r in kept:
            if r["score"] is not None:
                self.stats.scores.append(r["score"])
            side = box_side(r["box"])
            if np.isfinite(side):
                self.stats.sides.append(side)
            if r["similarity"] is not None:
                self.stats.sims.append(r["similarity"])
        if name:
            self.stats.per_identity.append(len(kept))
        tiles, sheet = [], None
        if kept:
            pick = np.unique(np.linspace(0, len(kept) - 1, min(len(kept), self.max_per_identity)).round().astype(int))
            imgs = []
            for t, p in enumerate(pick.tolist()):
                r = kept[p]
                crop = self.crops.read(r["outputs"])
                if crop is None:
                    continue
                imgs.append(fit(crop, TILE))
                c = len(imgs) - 1
                tiles.append({"x": -(c % COLS) * TILE, "y": -(c // COLS) * TILE, "score": r["score"],
                              "similarity": r["similarity"], "flag": r["flag"], "file": os.path.basename(r["path"])})
            if imgs:
                sheet = f"img/ids/{self.identities.page:04d}/{n}.jpg"
                write_jpeg(sprite(imgs, COLS), self.out / sheet)
                self.thumbs += 1
        scores = [r["score"] for r in kept if r["score"] is not None]
        sims = [r["similarity"] for r in kept if r["similarity"] is not None]
        item = {
            "name": name, "display": name or "(files outside identity folders)", "anchor": anchor, "label": label,
            "kept": len(kept), "rejected": len(rows) - len(kept), "dropped": label == -1, "tiles": tiles,
            "sheet": sheet, "tile": TILE, "shown": len(tiles),
            "score_min": min(scores) if scores else None, "score_med": float(np.median(scores)) if scores else None,
            "score_max": max(scores) if scores else None,
            "sim_min": min(sims) if sims else None, "sim_mean": float(np.mean(sims)) if sims else None,
            "flags": sum(1 for r in rows if r["flag"]), "rejects": rej_links, "decisions": decided,
            "written": sorted({r["merge_with"] for r in kept if r["merge_with"]}),
        }
        self.identities.add(item)
        self.names[name] = {"page": page_file, "anchor": anchor}

    def _reject(self, rows: list[dict], id_page: str, id_anchor: str) -> tuple[str, int]:
        r = rows[0]
        reason = r["reason"]
        pager = self.rejects.get(reason)
        if pager is None:
            pager = self.rejects[reason] = _Pager(self, f"rejects-{_safe(reason)}", "rejects.html",
                                                  self.rejects_per_page, reason=reason, title=f"Rejected: {reason}")
        boxes = [x["box"] for x in rows if x["box"] is not None]
        img, why = source_thumbnail(r["path"], boxes, SOURCE_SIDE, [x["landmarks"] for x in rows], self.sources)
        thumb = None
        if img is not None:
            thumb = f"img/rej/{_safe(reason)}/{pager.page:04d}/{pager.total}.jpg"
            write_jpeg(img, self.out / thumb)
            self.thumbs += 1
        scores = [x["score"] for x in rows if x["score"] is not None]
        item = {"name": r["identity"], "path": r["path"], "identity": r["identity"] or "(none)",
                "detail": r["detail"], "faces": len(boxes), "scores": scores, "thumb": thumb, "why": why,
                "id_link": f"{id_page}#{id_anchor}"}
        f, k = pager.add(item)
        item["anchor"] = f"r{k}"
        return f, k

    def _flag(self, r: dict, id_page: str, id_anchor: str) -> None:
        n = self.flagged.total
        crop = self.crops.read(r["outputs"]) if r["reason"] is None else None
        crop_file = None
        if crop is not None:
            crop_file = f"img/flag/{self.flagged.page:04d}/{n}c.jpg"
            write_jpeg(fit(crop, 112), self.out / crop_file)
            self.thumbs += 1
        img, why = source_thumbnail(r["path"], [r["box"]], SOURCE_SIDE, [r["landmarks"]], self.sources)
        src = None
        if img is not None:
            src = f"img/flag/{self.flagged.page:04d}/{n}s.jpg"
            write_jpeg(img, self.out / src)
            self.thumbs += 1
        self.flagged.add({"name": r["identity"], "identity": r["identity"], "path": r["path"], "flag": r["flag"],
                          "similarity": r["similarity"], "score": r["score"], "label": r["label"],
                          "reason": r["reason"], "crop": crop_file, "source": src, "why": why,
                          "id_link": f"{id_page}#{id_anchor}"})

    # ---- the whole report
    def build(self) -> dict:
        cur, rows = None, []
        for r in self.run.iter_rows():
            if rows and r["identity"] != cur:
                self.identity(cur, rows)
                rows = []
            cur = r["identity"]
            rows.append(r)
        if rows:
            self.identity(cur, rows)
        self.identities.finish()
        self.flagged.finish()
        for p in self.rejects.values():
            p.finish()
        decisions = self.decisions.finish()
        self.crops.close()
        self.sources.close()
        label_pages = self._labels()
        s = self.stats
        charts = [
            histogram_svg(np.frombuffer(s.scores, np.float32), "Detection score (kept faces)"),
            histogram_svg(np.frombuffer(s.sides, np.float32), "Face size: box side sqrt(w*h)", " px"),
            histogram_svg(np.frombuffer(s.per_identity, np.int64 if s.per_identity.itemsize == 8 else np.int32),
                          "Kept images per identity", integer=True),
        ]
        if len(s.sims):
            charts.append(histogram_svg(np.frombuffer(s.sims, np.float32), "Similarity to identity (kept faces)"))
        summ = self.run.summary
        reasons = sorted(set(summ.get("rejects") or {}) | set(self.rejects))
        rejects = [{"reason": k, "count": (summ.get("rejects") or {}).get(k, 0),
                    "images": self.rejects[k].total if k in self.rejects else 0,
                    "pages": self.rejects[k].pages if k in self.rejects else []} for k in reasons]
        sinks = [{"key": k, **(v if isinstance(v, dict) else {})} for k, v in (summ.get("sinks") or {}).items()]
        self.render("index.html", "index.html", title="Run report", charts=charts, rejects=rejects, sinks=sinks,
                    id_pages=self.identities.pages, n_identities=self.n_identity, flagged=self.flagged.pages,
                    n_flagged=self.flagged.total, label_pages=label_pages, rows=self.run.rows,
                    output=str(self.run.root), decisions=decisions)
        return {"identities": self.n_identity, "pages": self.pages_written, "thumbnails": self.thumbs,
                "rejected_images": sum(p.total for p in self.rejects.values()), "flagged": self.flagged.total,
                "decisions": {d["kind"]: d["faces"] for d in decisions["results"]},
                "merges": decisions["merges"]["lines"]}

    def _labels(self) -> list[dict]:
        ids = self.run.summary.get("identities") or {}
        entries = [{"name": k, "label": v.get("label", -1), "kept": v.get("kept", 0), "rejected": v.get("rejected", 0),
                    "link": self.names.get(k)} for k, v in ids.items() if isinstance(v, dict)]
        with open(self.out / "labels.tsv", "w", encoding="utf-8") as f:
            f.write("identity\tlabel\tkept\trejected\n")
            for e in entries:
                f.write(f"{escape(e['name'])}\t{e['label']}\t{e['kept']}\t{e['rejected']}\n")
        pager = _Pager(self, "labels", "labels.html", LABELS_PER_PAGE, title="Name -> label")
        for e in entries:
            pager.add(e)
        pager.finish()
        if not pager.pages:  # the header links labels-0001.html on every page
            self.render("labels.html", pager.file(0), items=[], page=1, prev=None, next=None, title="Name -> label")
            pager.pages.append({"file": pager.file(0), "first": "", "last": "", "count": 0})
        return pager.pages


def build_report(output: str | os.PathLike, report: Optional[str | os.PathLike] = None, per_page: int = 100,
                 max_per_identity: int = 30, rejects_per_page: int = 200, decisions_per_page: int = 50,
                 max_decisions: int = 2000) -> dict:
    """Write the HTML report of the run in ``output`` to ``report`` (default
    ``<output>/report``).

    Args:
        output: a ``facekit run`` output folder (``summary.json``, ``results.parquet``,
            the sinks' files).
        report: the report folder (replaced if it holds an older facekit report).
        per_page: identities per identity page. max_per_identity: crops shown per
            identity (spread evenly over its kept faces; all are counted).
        rejects_per_page: rejected images (and flagged faces) per page.
        decisions_per_page: items (an identity's faces of one decision kind, a line of
            ``decisions.tsv``) per decision page. max_decisions: items shown per decision
            kind (all are counted); ``max_per_identity`` faces shown per item.
    Returns:
        ``{"index", "identities", "pages", "thumbnails", "rejected_images", "flagged",
        "decisions" ({kind: faces}), "merges" (lines of decisions.tsv), "seconds"}``.
    Raises:
        FacekitError: not a facekit output, missing/damaged ``results.parquet``, a crop
            the results point to that is missing or undecodable (names the file), a
            report folder that exists and is not a facekit report, a malformed
            ``decisions.tsv`` (names the line).
    """
    t0 = time.monotonic()
    run = RunOutput(output)
    dest = Path(report) if report is not None else run.root / "report"
    if dest.exists() and (not dest.is_dir() or (any(dest.iterdir()) and not (dest / MARKER).exists())):
        raise FacekitError(f"{dest}: exists and is not a facekit report; refusing to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(dest)
    with ReportStaging(dest) as stage:
        stats = _Report(run, stage.path, max(1, per_page), max(1, max_per_identity), max(1, rejects_per_page),
                        max(1, decisions_per_page), max(1, max_decisions)).build()
        (stage.path / MARKER).write_text(json.dumps({"output": str(run.root)}) + "\n", encoding="utf-8")
        stage.publish()
    stats.update(index=str(dest / "index.html"), seconds=round(time.monotonic() - t0, 2))
    return stats
