"""The report's pages per decision kind (issue 26 part 5): what a ``clean`` stage and the
dataset-level decision step decided, laid out for a person to review.

From ``results.parquet`` (per identity, while the rows stream past; one item per identity
and kind; a face's kind is its reject ``reason`` or its ``flag``):

- ``decisions-<kind>-NNNN.html`` for ``label_noise``, ``overlap`` and other per-face kinds:
  the identity's flagged or rejected faces beside its *typical* faces (its kept, unflagged
  faces most similar to its robust centre: the ``similarity`` column);
- ``decisions-duplicate-NNNN.html``: each copy next to the kept face it copies
  (``duplicate_of``), with their similarity;
- ``decisions-mixed_identity-NNNN.html``: a two-people identity's two clusters side by
  side (``cluster`` 0, its main person, most typical first; and 1, the other person).

From ``<output>/decisions.tsv`` (absent: the index says no dataset-level decisions were
made):

- ``merges-NNNN.html``: each identity pair proposed or applied for merging as two contact
  sheets side by side (both identities' typical faces), their similarity and the decision;
- ``dataset-<kind>-NNNN.html`` for its other kinds (``moved``, ``copy``: the same image
  under two identities, ...): the face beside its identity's typical faces and, where
  ``other`` names an identity (``moved``: where the face likely belongs; a split's
  ``<identity>#2``) or a face (``copy``, ``duplicate``: the original), that one too. A line
  the results pages already show (a face whose ``reason`` or ``flag`` is the line's kind)
  is not shown again; ``moved`` and ``copy`` are shown from here only (results.parquet
  does not say where such a face belongs or what it copies).

Memory: at most ``max_items`` decisions of each kind are read from ``decisions.tsv`` (the
rest are counted) and only the identities and faces they name are kept, as small records of
thumbnails already written; pages of results items are written as they fill.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from facekit.report.load import DECISIONS, Decision, read_decisions
from facekit.report.pages import Pager, safe_name
from facekit.report.thumbs import face_thumbnail, fit, sprite, write_jpeg

#: per-face kinds shown from results.parquet (besides those decisions.tsv names)
RESULT_KINDS = ("label_noise", "mixed_identity", "duplicate", "copy", "moved", "overlap")
#: kinds shown from decisions.tsv when there is one (its 'other' names the identity a face
#: likely belongs to, or the face a copy copies, which results.parquet does not hold)
TSV_KINDS = ("moved", "copy")
#: a copy beside the face it copies (results: ``duplicate_of``; decisions.tsv: ``other``)
COPY_KINDS = ("duplicate", "copy")
MERGE = "merge"
TYPICAL = 10  # typical faces shown per identity
TYPICAL_COLS = 5
TYPICAL_TILE = 64
FACE_TILE = 96  # the decided faces
FACE_COLS = 10
MIXED_TILE = 72
MIXED_COLS = 6


def _decision(r: dict) -> str:
    return "reject" if r["reason"] is not None else "flag" if r["flag"] else "keep"


def _kind(r: dict, kinds) -> Optional[str]:
    """The row's decision kind: its reject reason or flag, when one of ``kinds``."""
    k = r["reason"] if r["reason"] is not None else r["flag"]
    return k if k in kinds else None


def _by_similarity(rows: list[dict]) -> list[dict]:
    """Most similar to the centre first (no similarity: last, in source order)."""
    return sorted(rows, key=lambda r: -r["similarity"] if r["similarity"] is not None else 2.0)


class _Sheet:
    """Face tiles (BGR images) into one sprite JPEG; ``tiles`` hold each one's place."""

    def __init__(self, side: int, cols: int):
        self.side, self.cols = side, cols
        self.imgs: list[np.ndarray] = []
        self.tiles: list[dict] = []

    def add(self, img: Optional[np.ndarray], **info) -> dict:
        """Add a tile (``img`` None: a tile saying ``why`` there is no picture)."""
        t = dict(info, img=img is not None)
        if img is not None:
            c = len(self.imgs)
            self.imgs.append(fit(img, self.side))
            t.update(x=-(c % self.cols) * self.side, y=-(c // self.cols) * self.side)
        self.tiles.append(t)
        return t

    def write(self, report, rel: str) -> dict:
        """Write the sprite to ``rel`` under the report (when it has a picture); returns the
        template's view of the sheet: ``{"sheet", "tiles", "side"}``."""
        if self.imgs:
            write_jpeg(sprite(self.imgs, self.cols), report.out / rel)
            report.thumbs += 1
        return {"sheet": rel if self.imgs else None, "tiles": self.tiles, "side": self.side}


class DecisionPages:
    """Collects the decision pages while :class:`facekit.report.build._Report` streams the
    results: :meth:`identity` once per identity (its rows), :meth:`finish` at the end.

    Args:
        report: the report being written (``run``, ``out``, ``crops``, ``sources``,
            ``render``, ``thumbs``). per_page: items per page. max_items: items shown per
            kind (and lines read from ``decisions.tsv`` per kind). max_faces: faces shown
            per item.
    Raises:
        FacekitError: a malformed ``decisions.tsv`` (names the file and line).
    """

    def __init__(self, report, per_page: int, max_items: int, max_faces: int):
        self.r, self.per_page, self.max_items, self.max_faces = report, per_page, max_items, max_faces
        self.pagers: dict[str, Pager] = {}
        self.faces: dict[str, int] = {}  # per results kind: faces decided
        self.groups: dict[str, int] = {}  # per results kind: identities with such faces
        self.n_face = 0
        path = report.run.root / DECISIONS
        self.tsv_present = path.is_file()
        self.tsv: list[Decision] = []
        self.tsv_counts: dict[str, int] = {}
        if self.tsv_present:
            self.tsv, self.tsv_counts = read_decisions(path, max_items)
        self.kinds = set(RESULT_KINDS) | {d.kind for d in self.tsv if d.path and d.kind != MERGE}
        if self.tsv_present:  # shown from decisions.tsv, where 'other' names the identity or face
            self.kinds -= set(TSV_KINDS)
        # what the decisions.tsv lines need from the stream: the typical faces of the
        # identities they name and thumbnails of their faces
        self.need_ids: set[str] = set()
        self.lines_of: dict[str, set[tuple[str, str]]] = {}  # path -> {(kind, identity)} of its lines
        self.need_faces: set[tuple[str, Optional[int]]] = set()  # (path, face index or None: any face)
        for d in self.tsv:
            self.need_ids.add(d.identity)
            if d.kind in COPY_KINDS and d.path:
                self.need_faces.add((d.other, None))
            elif d.other:
                self.need_ids.add(d.other)
            if d.path:
                self.lines_of.setdefault(d.path, set()).add((d.kind, d.identity))
                self.need_faces.add((d.path, d.face))
        self.need_paths = {p for p, _ in self.need_faces}
        self.face_of: dict[tuple[str, Optional[int]], dict] = {}  # thumbnails of the faces above
        self.typical: dict[str, dict] = {}  # the needed identities' typical sheets
        self.in_results: set[tuple[str, str, str]] = set()  # (kind, identity, path) the results pages show

    # ------------------------------------------------------------------ per identity
    def identity(self, name: str, rows: list[dict], n: int, link: str, label) -> dict[str, dict]:
        """Take one identity's rows (all of them, in source order; ``n``: its number in the
        report, ``link``: its place on the identity pages); returns the links to its items
        on the decision pages, ``{kind: {"file", "anchor", "count"}}``."""
        links: dict[str, dict] = {}
        found: dict[str, list[dict]] = {}
        mixed = [r for r in rows if r["cluster"] == 1]
        for r in rows:
            k = _kind(r, self.kinds)
            if k is not None and not (k == "mixed_identity" and mixed):
                found.setdefault(k, []).append(r)
        typical = None
        if name in self.need_ids or any(not self._full(k) for k in found):
            typical = dict(self._typical(rows, n, f"{n}"), name=name, link=link, label=label, missing=False)
        if name in self.need_ids:
            self.typical[name] = typical
        # a split's second identity (written as '<identity>#2'): its own faces
        for split in sorted({r["merge_with"] for r in mixed if r["merge_with"]} & self.need_ids - self.typical.keys()):
            part = [r for r in mixed if r["merge_with"] == split]
            self.typical[split] = dict(self._typical(part, n, f"{n}s{len(self.typical)}", split=True), name=split,
                                       link=link, label=label, missing=False)
        base = {"name": name, "identity": name or "(none)", "label": label, "id_link": link}
        if mixed:
            links["mixed_identity"] = self._add("mixed_identity", len(mixed), lambda: dict(base, **self._mixed(rows, n)))
        for k, faces in found.items():
            def item(k=k, faces=faces):
                extra = self._pairs(rows, faces, n, k) if k in COPY_KINDS else self._faces(k, faces, n)
                return dict(base, typical=typical, **extra)
            links[k] = self._add(k, len(faces), item)
        self._tsv_faces(name, rows, link, {k for k, v in links.items() if v["file"]})
        return links

    def _full(self, kind: str) -> bool:
        p = self.pagers.get(kind)
        return p is not None and p.total >= self.max_items

    def _add(self, kind: str, faces: int, make) -> dict:
        """Count ``faces`` decided ``kind`` in an identity and, while the kind has room,
        add its item (``make()``); returns its link."""
        self.faces[kind] = self.faces.get(kind, 0) + faces
        self.groups[kind] = self.groups.get(kind, 0) + 1
        if self._full(kind):
            return {"file": None, "anchor": None, "count": faces}
        pager = self.pagers.get(kind)
        if pager is None:
            pager = self.pagers[kind] = Pager(self.r, f"decisions-{safe_name(kind)}", "decisions.html", self.per_page,
                                              kind=kind, title=f"Decisions: {kind}")
        item = dict(make(), count=faces, kind=kind)
        f, k = pager.add(item)
        item["anchor"] = f"d{k}"
        return {"file": f, "anchor": item["anchor"], "count": faces}

    def _thumb(self, r: dict, side: int) -> tuple[Optional[np.ndarray], str]:
        """A face's picture: its crop from the sinks when kept, else cut from its source."""
        crop = self.r.crops.read(r["outputs"]) if r["reason"] is None else None
        if crop is not None:
            return crop, ""
        return face_thumbnail(r, side, self.r.sources)

    def _tile(self, sheet: _Sheet, r: dict) -> dict:
        img, why = self._thumb(r, sheet.side)
        return sheet.add(img, why=why, path=r["path"], similarity=r["similarity"], decision=_decision(r),
                         kind=r["reason"] or r["flag"] or "", detail=r["detail"] or "", written=r["merge_with"])

    def _typical(self, rows: list[dict], n: int, stem: str, split: bool = False) -> dict:
        """The identity's typical faces: its kept, unflagged faces of its main person, most
        similar to its centre first (spread over them when no similarity was computed);
        ``split``: ``rows`` are a split's faces (flagged ``mixed_identity``), all kept ones.
        An identity with none shows its kept flagged faces, else its rejected ones (say so:
        ``basis``), so that a merge of an identity its decisions emptied is still seen; the
        other person of a two-people identity (``cluster`` 1) is never among them."""
        faces = [r for r in rows if (r["face"] is not None or r["outputs"] and any(r["outputs"]))
                 and (split or r["cluster"] != 1)]
        kept = [r for r in faces if r["reason"] is None and (split or not r["flag"])]
        pool, basis = kept, "kept"
        if not pool:
            pool, basis = [r for r in faces if r["reason"] is None], "kept, flagged"
        if not pool:
            pool, basis = faces, "rejected"
        by_sim = any(r["similarity"] is not None for r in pool)
        if by_sim:
            pick = _by_similarity(pool)[:TYPICAL]
        else:
            idx = np.unique(np.linspace(0, len(pool) - 1, min(len(pool), TYPICAL)).round().astype(int)) if pool else []
            pick = [pool[i] for i in idx]
        sheet = _Sheet(TYPICAL_TILE, TYPICAL_COLS)
        for r in pick:
            self._tile(sheet, r)
        info = sheet.write(self.r, f"img/typ/{n // 1000:04d}/{stem}.jpg")
        info.update(kept=len(kept), shown=len(pick), pool=len(pool), basis=basis, by_similarity=by_sim)
        return info

    def _faces(self, kind: str, faces: list[dict], n: int) -> dict:
        sheet = _Sheet(FACE_TILE, FACE_COLS)
        for r in faces[: self.max_faces]:
            self._tile(sheet, r)
        return {"faces": sheet.write(self.r, f"img/dec/{safe_name(kind)}/{n // 1000:04d}/{n}.jpg"),
                "shown": len(sheet.tiles)}

    def _pairs(self, rows: list[dict], faces: list[dict], n: int, kind: str) -> dict:
        """Each copy beside the face it copies (the first face of that path kept in the
        identity; else read from the source by its path)."""
        originals: dict[str, dict] = {}
        for r in rows:
            if r["reason"] is None and r["path"] not in originals:
                originals[r["path"]] = r
        sheet = _Sheet(FACE_TILE, FACE_COLS)
        pairs = []
        for r in faces[: self.max_faces]:
            copy = self._tile(sheet, r)
            o = originals.get(r["duplicate_of"] or "")
            if o is not None:
                orig = self._tile(sheet, o)
            elif r["duplicate_of"]:
                img, why = face_thumbnail({"path": r["duplicate_of"]}, FACE_TILE, self.r.sources)
                orig = sheet.add(img, why=why, path=r["duplicate_of"], similarity=None, decision="keep", kind="",
                                 detail="", written=None)
            else:
                orig = None
            pairs.append({"dup": copy, "orig": orig})
        info = sheet.write(self.r, f"img/dec/{safe_name(kind)}/{n // 1000:04d}/{n}.jpg")
        return {"pairs": pairs, "sheet": info["sheet"], "side": FACE_TILE, "shown": len(pairs)}

    def _mixed(self, rows: list[dict], n: int) -> dict:
        """The two clusters of a two-people identity: its main person (kept faces, most
        typical first, then any rejected for another reason) and the other person's faces."""
        main = _by_similarity([r for r in rows if r["cluster"] == 0 and r["reason"] is None])
        main += _by_similarity([r for r in rows if r["cluster"] == 0 and r["reason"] is not None])
        other = [r for r in rows if r["cluster"] == 1]
        out = {}
        for key, group in (("main", main), ("other", other)):
            sheet = _Sheet(MIXED_TILE, MIXED_COLS)
            for r in group[: self.max_faces]:
                self._tile(sheet, r)
            out[key] = dict(sheet.write(self.r, f"img/dec/mixed/{n // 1000:04d}/{n}{key[0]}.jpg"), total=len(group))
        decided = {_decision(r) for r in other}
        written = sorted({r["merge_with"] for r in other if r["merge_with"]})
        out["outcome"] = (f"split: written as {', '.join(written)}" if written else
                          "cut (rejected)" if decided == {"reject"} else
                          "flagged" if "flag" in decided else "kept")
        out["detail"] = next((r["detail"] for r in other if r["detail"]), "")
        out["shown"] = len(out["other"]["tiles"])
        return out

    def _tsv_faces(self, name: str, rows: list[dict], link: str, shown: set[str]) -> None:
        """Thumbnails of the faces decisions.tsv names that are in these rows (a line whose
        face the results pages show, on the identity's item of ``shown`` kinds, is noted
        and needs none)."""
        for r in rows:
            p = r["path"]
            if p not in self.need_paths:
                continue
            lines = self.lines_of.get(p, ())
            k = _kind(r, self.kinds)
            if k is not None and (k, name) in lines and k in shown:
                self.in_results.add((k, name, p))
            keys = [key for key in ((p, r["face"]), (p, None)) if key in self.need_faces and key not in self.face_of]
            if not keys or ((p, None) not in self.need_faces and all((kind, ident, p) in self.in_results
                                                                       for kind, ident in lines)):
                continue
            img, why = self._thumb(r, FACE_TILE)
            rel = None
            if img is not None:
                rel = f"img/ds/{self.n_face // 1000:04d}/{self.n_face}.jpg"
                self.n_face += 1
                write_jpeg(fit(img, FACE_TILE), self.r.out / rel)
                self.r.thumbs += 1
            for key in keys:
                self.face_of[key] = {"img": rel, "why": why, "identity": name, "link": link, "path": p,
                                     "similarity": r["similarity"], "decision": _decision(r), "written": r["merge_with"]}

    # ------------------------------------------------------------------ the end
    def finish(self) -> dict:
        """Write the pages of ``decisions.tsv``'s lines and the last page of every kind;
        returns the index's view of the decisions."""
        for p in self.pagers.values():
            p.finish()
        merges = self._tsv_pages([d for d in self.tsv if d.kind == MERGE], MERGE)
        dataset = []
        for kind in sorted({d.kind for d in self.tsv if d.kind != MERGE}):
            lines = [d for d in self.tsv if d.kind == kind]
            todo = [d for d in lines if (d.kind, d.identity, d.path) not in self.in_results]
            dataset.append(dict(self._tsv_pages(todo, kind), in_results=len(lines) - len(todo)))
        results = [{"kind": k, "faces": self.faces[k], "identities": self.groups[k], "shown": self.pagers[k].total,
                    "pages": self.pagers[k].pages} for k in sorted(self.pagers)]
        return {"results": results, "tsv": self.tsv_present, "merges": merges, "dataset": dataset,
                "max_items": self.max_items}

    def _side(self, name: str) -> dict:
        return self.typical.get(name) or {"name": name, "missing": True}

    def _tsv_pages(self, lines: list[Decision], kind: str) -> dict:
        """Pages of ``decisions.tsv`` lines of one kind (merges: ``merges-NNNN.html``)."""
        stem = "merges" if kind == MERGE else f"dataset-{safe_name(kind)}"
        title = "Merge candidates" if kind == MERGE else f"Dataset-level decisions: {kind}"
        pager = Pager(self.r, stem, "dataset.html", self.per_page, kind=kind, title=title)
        decided: dict[str, int] = {}
        missing = {"img": None, "why": "not in results.parquet"}
        for d in lines:
            decided[d.decision or "?"] = decided.get(d.decision or "?", 0) + 1
            face = self.face_of.get((d.path, d.face)) or self.face_of.get((d.path, None)) or missing
            item = {"name": d.identity, "kind": d.kind, "decision": d.decision, "similarity": d.similarity,
                    "detail": d.detail, "line": d.line, "path": d.path, "other": d.other, "a": self._side(d.identity),
                    "face": face if d.path else None, "b": None, "b_face": None}
            if d.kind in COPY_KINDS and d.path:
                item["b_face"] = self.face_of.get((d.other, None), missing)
            elif d.other and (d.kind in (MERGE, "moved") or d.other in self.typical):
                item["b"] = self._side(d.other)
            f, k = pager.add(item)
            item["anchor"] = f"t{k}"
        pager.finish()
        return {"kind": kind, "lines": self.tsv_counts.get(kind, 0), "shown": pager.total, "pages": pager.pages,
                "decided": decided}
