"""The dataset-level decision step (issue 26 parts 4-6): after every shard, before the
gate and the sinks.

With a ``merge:`` step the engine runs in three passes over the finished shards (kept in
the work folder, :mod:`facekit.pipeline.work`):

1. **collect** (:class:`Collector`) as the shards finish: each identity's robust centre
   (of its kept faces' embeddings), its face count and shard, each kept face's content hash;
2. **decide** (:func:`decide`): identity pairs whose centres reach ``above`` (faiss k
   nearest neighbours, :func:`facekit.clean.merge.merge_candidates`), merge groups (chains
   that drift are proposed, never applied), exact copies under two identities
   (:func:`facekit.clean.merge.cross_identity_hashes`), identities that are people of the
   verification ``bins``; a reviewed decisions file overrides any of them;
3. **replay** (:class:`Replay`): each shard again, in order, changed by the plan (a merged
   identity's faces move to its group's first identity, written right after that
   identity's own faces; faces nearer another identity's centre; copies; overlap), then
   the gate and the sinks as in a run without the step.

Labels follow :func:`facekit.clean.merge.relabel`'s documented order: identities in
source order, a merged group at its first member's place. A rerun of the same pipeline
reuses the kept shards (the ``merge`` settings and the decisions file are not part of the
fingerprint), so changing a threshold or a decision reruns only this step and the writing.

Without a ``merge:`` step a ``clean:`` stage's decisions are listed and a reviewed
decisions file applied shard by shard, in one pass. Pass 3 and the per-face decisions are
in :mod:`facekit.pipeline.replay`.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from facekit.errors import FacekitError
from facekit.pipeline.decisions import FACE_KINDS, Decision, DecisionsWriter, Edits, MergeConfig
from facekit.pipeline.shards import ShardResult
from facekit.stages import Sample

log = logging.getLogger("facekit")

#: the reasons a ``clean`` stage gives (per face); the step's own are copy, moved, overlap
CLEAN_KINDS = ("duplicate", "label_noise", "mixed_identity", "far_from_identity")


def _base(s: Sample) -> str:
    return s.identity if s.source_identity is None else s.source_identity


# ---------------------------------------------------------------------------- faces


@dataclass
class FaceCall:
    """What the run decides for one face before a reviewer's edit: ``kind`` (a
    :data:`~facekit.pipeline.decisions.FACE_KINDS` value), ``action`` (``flag`` or
    ``reject``), ``other``, ``similarity``, ``detail``."""

    kind: str
    action: str
    other: str = ""
    similarity: Optional[float] = None
    detail: str = ""


# ---------------------------------------------------------------------------- collect


def ordinals(result: ShardResult) -> dict[int, int]:
    """``{id(sample): k}``: each kept face's position among the shard's kept faces, in
    source order (the same in a shard as finished and as read back from the work folder)."""
    out, k = {}, 0
    for oc in result.outcomes:
        for s in oc.samples:
            out[id(s)] = k
            k += 1
    return out


class Collector:
    """Pass 1: per identity (as written: a split's ``<identity>#2`` is its own) its robust
    centre, face count, resultant and shard; per kept face its content hash (16 bytes of
    BLAKE2b of the encoded crop), owner and place (shard, position). Memory: ``D`` floats
    an identity and its name, 28 bytes a face (MS1M's 5.8M faces: 160 MB)."""

    def __init__(self, edits: Optional[Edits] = None):
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.shard = array("i")
        self.counts = array("q")
        self.resultants = array("d")
        self.centres: Optional[np.ndarray] = None
        self.hashes = bytearray()
        self.owners = array("i")
        self.face_shard = array("i")
        self.face_pos = array("i")
        self.edits = edits

    def add(self, result: ShardResult) -> None:
        """Take a finished shard's kept faces (before the gate)."""
        from facekit.clean.identity import robust_centre

        groups: dict[str, list[Sample]] = {}
        pos = ordinals(result)
        for oc in result.outcomes:
            for s in oc.samples:
                groups.setdefault(s.identity, []).append(s)
            if self.edits is not None:  # mark the reviewed lines that name a face of this run
                for s in oc.samples:
                    self.edits.seen(s.path, s.face_id)
                for r in oc.rejects:  # only the decisions' own rejects can be reviewed back
                    if r.face is not None and r.reason in FACE_KINDS:
                        self.edits.seen(r.face.path, r.face.face_id)
        for ident, faces in groups.items():
            emb = [s.embedding for s in faces if s.embedding is not None]
            if not emb:
                continue
            if ident in self.index:
                raise FacekitError(f"identity {ident!r} is in two shards ({faces[0].path}): sources keep identities together")
            x = np.stack(emb).astype(np.float32)
            c = getattr(rc := robust_centre(x), "centre", rc)
            c = np.asarray(c, np.float32)
            c = c / max(float(np.linalg.norm(c)), 1e-12)
            n = len(self.names)
            if self.centres is None:
                self.centres = np.empty((1024, c.shape[0]), np.float32)
            elif n == self.centres.shape[0]:
                self.centres.resize((n + max(1024, n // 2), self.centres.shape[1]), refcheck=False)
            self.centres[n] = c
            self.index[ident] = n
            self.names.append(ident)
            self.shard.append(result.index)
            self.counts.append(len(emb))
            self.resultants.append(float(np.mean(x @ c, dtype=np.float64)))
            for s in faces:
                if s.data is not None:
                    self.hashes += hashlib.blake2b(s.data, digest_size=16).digest()
                    self.owners.append(n)
                    self.face_shard.append(result.index)
                    self.face_pos.append(pos[id(s)])

    def copies(self) -> list[tuple[int, int]]:
        """Faces with the same content as an earlier face of another identity: ``(copy,
        first)`` rows of the face arrays, in order. Linear in the faces (a sort)."""
        n = len(self.owners)
        if not n:
            return []
        h = np.frombuffer(bytes(self.hashes), dtype="S16")
        order = np.lexsort((np.arange(n), h))
        hs = h[order]
        start = np.r_[True, hs[1:] != hs[:-1]]
        head = order[np.maximum.accumulate(np.where(start, np.arange(n), 0))]
        own = np.frombuffer(self.owners, dtype=np.int32) if n else np.zeros(0, np.int32)
        m = own[order] != own[head]
        pairs = sorted(zip(order[m].tolist(), head[m].tolist()))
        return pairs

    def matrix(self) -> np.ndarray:
        """The ``(N, D)`` float32 unit centres, one row per identity of :attr:`names`."""
        if self.centres is None:
            return np.zeros((0, 0), np.float32)
        return self.centres[: len(self.names)]


# ---------------------------------------------------------------------------- decide


@dataclass
class Plan:
    """What the replay changes. ``head``: member identity -> the identity it is written
    under (its merge group's first); ``members``: head -> its members in order;
    ``copies``: face ``(shard, position)`` (:func:`ordinals`) -> the call on it; ``overlap``: identity -> the call
    on its faces; ``moved``: the centre search for faces nearer another identity (or None)."""

    head: dict = field(default_factory=dict)
    members: dict = field(default_factory=dict)
    copies: dict = field(default_factory=dict)
    overlap: dict = field(default_factory=dict)
    moved: Optional["MovedCheck"] = None
    record: dict = field(default_factory=dict)


class MovedCheck:
    """Faces nearer another identity's centre than their own by ``margin`` (cosine):
    :class:`facekit.clean.moved.CentreIndex` over the collected centres (faiss k nearest,
    never ``N x N``; a face taken out of its own centre by its identity's count and
    resultant), asked shard by shard; identities of one merge group are not "other"."""

    #: centre-face pairs above which the exact search warns with its estimated time
    WARN_PAIRS = 10**10
    #: seconds per centre-face pair of the exact search, measured on 2 cores (bench_decide.py)
    PAIR_SECONDS = 25e-9

    def __init__(self, col: Collector, plan: Plan, margin: float, action: str, index: str = "flat",
                 nprobe: int = 64):
        from facekit.clean.moved import CentreIndex

        self.col, self.plan, self.margin, self.action = col, plan, margin, action
        n = len(col.names)
        pairs = n * len(col.owners)
        if index == "flat" and pairs > self.WARN_PAIRS:
            log.warning(
                "the moved check compares %d faces with %d identity centres exactly: about %.0f minutes on 2 cores; "
                "'merge: {moved_index: ivf}' is faster and approximate, 'moved: ignore' skips it",
                len(col.owners), n, pairs * self.PAIR_SECONDS / 60,
            )
        plan.record["moved"] = {"index": index, "approximate": index != "flat", "margin": margin,
                                **({"nprobe": nprobe} if index != "flat" else {})}
        self.index = CentreIndex(col.matrix(), col.names, np.asarray(col.counts, np.int64),
                                 np.clip(np.asarray(col.resultants, np.float64), 1e-6, 1.0),
                                 index=index, nprobe=nprobe)
        groups = np.arange(n, dtype=np.int64)
        for member, head in plan.head.items():
            groups[col.index[member]] = col.index[head]
        self.groups = groups

    def check(self, faces: list[Sample], owner: Optional[dict] = None) -> dict[int, FaceCall]:
        """``{id(sample): call}`` for the faces of ``faces`` that are moved; ``owner``:
        ``{id(sample): identity}`` for faces a merge moved (judged against the centre of
        the identity they came from, which holds them)."""
        owner = owner or {}
        # a two-people identity's other person (flagged mixed_identity) is judged too: its
        # own line says which identity it is nearer (decisions.tsv keeps both lines)
        rows = [(s, self.col.index.get(owner.get(id(s), s.identity))) for s in faces if s.embedding is not None]
        rows = [(s, o) for s, o in rows if o is not None]
        if not rows:
            return {}
        q = np.stack([np.asarray(s.embedding, np.float32) for s, _ in rows])
        m = self.index.moved(q, np.array([o for _, o in rows], np.int64), self.margin, groups=self.groups)
        out = {}
        for i in np.flatnonzero(m.moved).tolist():
            s = rows[i][0]
            other = self.col.names[int(m.other[i])]
            own, sim = float(m.own_similarity[i]), float(m.other_similarity[i])
            out[id(s)] = FaceCall(
                "moved", self.action, other, sim,
                f"nearer identity {other!r} ({sim:.3f}) than its own ({own:.3f}) by >= {self.margin:g}",
            )
        return out


def _bins(cfg: MergeConfig, recognizer, col: Collector, plan: Plan) -> None:
    """Identities of the run whose centre matches an image of the verification bins."""
    import cv2

    from facekit.formats.evalbin import load_bin

    x = col.matrix()
    checked = []
    for b in cfg.bins:
        images, _ = load_bin(b)
        best = np.full(len(col.names), -2.0, np.float32)
        arg = np.zeros(len(col.names), np.int64)
        for i in range(0, len(images), 64):
            crops = []
            for k, data in enumerate(images[i : i + 64]):
                im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                if im is None:
                    raise FacekitError(f"{b}[{i + k}]: not a decodable image")
                crops.append(im)
            e = np.asarray(recognizer.embed(crops), np.float32)
            if len(x):
                s = x @ e.T
                j = s.argmax(axis=1)
                v = s[np.arange(len(x)), j]
                better = v > best
                best[better], arg[better] = v[better], j[better] + i
        hits = np.flatnonzero(best >= cfg.overlap_above)
        for h in hits.tolist():
            name = col.names[h]
            if name not in plan.overlap:
                plan.overlap[name] = FaceCall(
                    "overlap", cfg.overlap, f"{b.name}[{int(arg[h])}]", float(best[h]),
                    f"the identity matches {b.name}[{int(arg[h])}] ({float(best[h]):.3f} >= {cfg.overlap_above:g})",
                )
        checked.append({"bin": str(b), "images": len(images), "identities_found": int(len(hits))})
    plan.record["overlap"] = {"threshold": cfg.overlap_above, "action": cfg.overlap, "bins": checked,
                              "identities_compared": len(col.names)}


def decide(col: Collector, cfg: MergeConfig, edits: Optional[Edits], writer: Optional[DecisionsWriter],
           recognizer=None, load: Optional[Callable[[int], ShardResult]] = None) -> Plan:
    """Pass 2: the plan (see :class:`Plan`), and the merge lines of decisions.tsv.

    Args:
        col: pass 1's :class:`Collector` (its centres: ``(N, D)`` float32 unit rows).
        cfg: the ``merge:`` settings. edits: a reviewed decisions file, or None.
        writer: where the merge lines go (decisions.tsv), or None.
        recognizer: the pipeline's recognizer stage, built (needed for ``bins``: their
            images, 112x112 BGR as decoded from the bin, are embedded with it).
        load: ``shard index -> ShardResult`` from the work folder (the paths of the first
            copies of copied images are read back from their shards).
    Returns:
        the :class:`Plan`; ``plan.record`` goes to summary.json.
    Raises:
        FacekitError: a reviewed line names an identity the run does not have, an
            ``apart`` that other merges still join, an undecodable bin image (one line
            naming it); MergeError (a FacekitError) on bad centres."""
    from facekit.clean.merge import MergePairs, merge_candidates, merge_groups

    plan = Plan()
    x = col.matrix()
    n = len(col.names)
    rec = {"identities": n, "threshold": cfg.above, "mode": cfg.identities}
    calls: list[tuple[int, int, float, str, str]] = []  # (i, j, similarity, decision, detail)
    if cfg.identities != "ignore" and n >= 2:
        pairs = merge_candidates(x, list(range(n)), threshold=cfg.above)
        found = {}
        for i, j, s in zip(pairs.i.tolist(), pairs.j.tolist(), pairs.similarity.tolist()):
            found[(i, j)] = s
        want = "merge" if cfg.identities == "apply" else "propose"
        chains: set = set()
        if want == "merge" and len(pairs):
            for g in merge_groups(pairs, x, counts=np.asarray(col.counts, np.int64)):
                if g.flagged:
                    chains.update(int(m) for m in g.members.tolist())
        for (i, j), s in found.items():
            d, why = want, ""
            if want == "merge" and (i in chains or j in chains):
                d, why = "propose", "part of a chain whose ends drift apart: review it"
            calls.append((i, j, s, d, why))
        rec["pairs_found"] = len(found)
    if edits is not None:
        index = {}
        for (i, j, s, d, why) in calls:
            index[frozenset((col.names[i], col.names[j]))] = len(index)
        for key, (d, line) in edits.merges.items():
            a, b = sorted(key)
            for name in (a, b):
                if name not in col.index:
                    raise FacekitError(f"{edits.path}:{line}: identity {name!r} is not in this run (or has no kept face)")
            edits.used.add(line)
            pos = index.get(key)
            why = f"decided by a reviewer ({edits.path.name}:{line})"
            if pos is None:
                i, j = sorted((col.index[a], col.index[b]))
                calls.append((i, j, float(x[i] @ x[j]), d, why))
            elif calls[pos][3] != d:
                i, j, s, _, _ = calls[pos]
                calls[pos] = (i, j, s, d, why + f"; the run said {calls[pos][3]}")
    calls.sort()
    applied = [(i, j, s) for i, j, s, d, _ in calls if d == "merge"]
    if applied:
        mp = MergePairs(np.array([a for a, _, _ in applied], np.int64), np.array([b for _, b, _ in applied], np.int64),
                        np.array([s for _, _, s in applied], np.float32), list(range(n)), -1.0)
        for g in merge_groups(mp, x, min_to_centre=-1.0):
            members = sorted(int(m) for m in g.members.tolist())
            head = col.names[members[0]]
            plan.members[head] = [col.names[m] for m in members[1:]]
            for m in members[1:]:
                plan.head[col.names[m]] = head
    group_of = {m: h for m, h in plan.head.items()}
    for i, j, _, d, why in calls:  # a pair kept apart must not be joined through others
        a, b = col.names[i], col.names[j]
        if d == "apart" and group_of.get(a, a) == group_of.get(b, b):
            via = [f"{col.names[x]}~{col.names[y]}" for x, y, _, dd, _ in calls if dd == "merge"
                   and group_of.get(col.names[x], col.names[x]) == group_of.get(a, a)]
            where = f" ({why})" if why else ""
            raise FacekitError(
                f"the merge of {a!r} and {b!r} is 'apart'{where}, but these merges join them: {', '.join(via)}; "
                "set one of them to apart too"
            )
    rec["merged_groups"] = len(plan.members)
    rec["identities_merged_away"] = len(plan.head)
    if writer is not None:
        for i, j, s, d, why in calls:
            writer.add(Decision("merge", col.names[i], "", None, col.names[j], s, d, why))
    if cfg.copies != "ignore" and len(col.owners):
        pairs = col.copies()
        firsts: dict[int, dict[int, str]] = {}  # shard -> position -> path, read back below
        for _, a in pairs:
            firsts.setdefault(col.face_shard[a], {})[col.face_pos[a]] = ""
        for shard, want in firsts.items():
            if load is None:
                raise FacekitError("decision step: copies need the kept shards")
            res = load(shard)
            pos = ordinals(res)
            for oc in res.outcomes:
                for smp in oc.samples:
                    if pos[id(smp)] in want:
                        want[pos[id(smp)]] = smp.path
        for b, a in pairs:
            first = firsts[col.face_shard[a]][col.face_pos[a]]
            plan.copies[(col.face_shard[b], col.face_pos[b])] = FaceCall(
                "copy", cfg.copies, first, 1.0,
                f"the same image as {first} of identity {col.names[col.owners[a]]!r}")
        rec["copies"] = len(plan.copies)
    if cfg.bins:
        if recognizer is None:
            raise FacekitError("merge: bins need the pipeline's recognizer")
        _bins(cfg, recognizer, col, plan)
    if cfg.moved != "ignore" and n >= 2:
        plan.moved = MovedCheck(col, plan, cfg.moved_margin, cfg.moved, cfg.moved_index, cfg.moved_nprobe)
    plan.record["merge"] = rec
    return plan
