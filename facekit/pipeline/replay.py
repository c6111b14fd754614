"""Pass 3 of the decision step (:mod:`facekit.pipeline.decide`): a kept shard changed by
the plan (:class:`Replay`), and the per-face decisions of any run with a ``clean:`` stage
(:func:`apply_face_decisions`): each a line of ``decisions.tsv``, a reviewed file's
decision applied, the face then kept, flagged or rejected."""

from __future__ import annotations

from typing import Callable, Optional

from facekit.errors import FacekitError
from facekit.pipeline.decide import CLEAN_KINDS, Collector, FaceCall, Plan, _base, ordinals
from facekit.pipeline.decisions import FACE_KINDS, Decision, DecisionsWriter, Edits
from facekit.pipeline.shards import Outcome, ShardResult
from facekit.stages import Reject, Sample


def _insert(samples: list[Sample], s: Sample) -> None:
    """Put ``s`` back among an image's kept faces, in face order."""
    i = 0
    while i < len(samples) and samples[i].face_id < s.face_id:
        i += 1
    samples.insert(i, s)


def apply_face_decisions(
    result: ShardResult,
    writer: Optional[DecisionsWriter],
    edits: Optional[Edits],
    calls: Callable[[Sample], Optional[FaceCall]] = lambda s: None,
) -> None:
    """List and apply the per-face decisions of a shard, in place, in source order.

    A face may have several decisions, each its own line: the ``clean`` stage's (a flag,
    ``Sample.flag``, or a reject whose reason is one of :data:`CLEAN_KINDS`; a face split
    off is ``mixed_identity``), the decision step's (``calls``: ``moved``, ``copy``,
    ``overlap``) and a line a reviewer added. A reviewed file's decision for a line
    (``keep``, ``flag``, ``reject``) replaces the run's. The face is then rejected when one
    of its decisions says reject (the first one's reason), else flagged when one says flag
    (the first one's kind), else kept without a flag; a split face whose ``mixed_identity``
    decision is ``keep`` goes back to its source identity."""
    for oc in result.outcomes:
        if not oc.samples and not any(r.face is not None for r in oc.rejects):
            continue
        faces: list[tuple[Sample, Optional[Reject]]] = [(s, None) for s in oc.samples]
        faces += [(r.face, r) for r in oc.rejects if r.face is not None and r.reason in FACE_KINDS]
        for s, r in faces:
            decs: list[list] = []  # [kind, action, other, similarity, detail]
            if r is not None:
                decs.append([r.reason, "reject", s.duplicate_of or "", s.similarity, r.detail])
            elif s.flag in CLEAN_KINDS:
                split = s.flag == "mixed_identity" and s.source_identity is not None
                decs.append([s.flag, "flag", s.identity if split else (s.duplicate_of or ""), s.similarity, ""])
            call = calls(s) if r is None else None
            if call is not None and all(d[0] != call.kind for d in decs):
                decs.append([call.kind, call.action, call.other, call.similarity, call.detail])
            if edits is not None:
                for kind in edits.kinds(s.path, s.face_id):
                    if all(d[0] != kind for d in decs):  # a line the reviewer added: the run kept the face
                        decs.append([kind, "keep", "", s.similarity, ""])
            if not decs:
                continue
            for d in decs:
                want = edits.face(d[0], s.path, s.face_id) if edits is not None else None
                if want is not None and want != d[1]:
                    d[4] = f"decided by a reviewer ({edits.path.name}:{edits.line(d[0], s.path, s.face_id)}); the run said {d[1]}"
                    d[1] = want
            _settle(oc, s, r, decs)
            if writer is not None:
                for kind, action, other, sim, detail in decs:
                    writer.add(Decision(kind, _base(s), s.path, s.face_id, other, sim, action, detail))


def _settle(oc: Outcome, s: Sample, r: Optional[Reject], decs: list[list]) -> None:
    """Put face ``s`` (kept, or rejected by ``r``) in the state its decisions say."""
    rejected = [d for d in decs if d[1] == "reject"]
    flagged = [d for d in decs if d[1] == "flag"]
    if rejected:
        kind, detail = rejected[0][0], rejected[0][4]
        if r is not None and r.reason == kind:
            return
        if r is not None:
            oc.rejects.remove(r)
        else:
            oc.samples.remove(s)
        oc.rejects.append(Reject(s.path, kind, detail, _base(s), s.required, s))
        return
    if r is not None:
        if s.data is None:
            raise FacekitError(
                f"{s.path}: face {s.face_id} was rejected {r.reason} and its crop was not kept, so it cannot be "
                "kept now: run the pipeline again with that check set to flag"
            )
        oc.rejects.remove(r)
        _insert(oc.samples, s)
    s.flag = flagged[0][0] if flagged else ""
    unsplit = any(d[0] == "mixed_identity" and d[1] == "keep" for d in decs)
    if unsplit and s.source_identity is not None and s.identity.startswith(s.source_identity + "#"):
        s.identity, s.source_identity = s.source_identity, None  # not split after all



# ---------------------------------------------------------------------------- replay


class Replay:
    """Pass 3: a kept shard changed by the plan, ready for the gate.

    ``load(index)`` returns the kept shard ``index`` (a fresh copy each call)."""

    def __init__(self, col: Collector, plan: Plan, load: Callable[[int], ShardResult]):
        self.col, self.plan, self.load = col, plan, load
        self._cache: dict[int, ShardResult] = {}

    def _faces_of(self, name: str) -> list[tuple[Sample, tuple[int, int]]]:
        """Identity ``name``'s kept faces with their places, from its own shard."""
        j = self.col.shard[self.col.index[name]]
        res = self._cache.get(j)
        if res is None:
            if len(self._cache) > 4:
                self._cache.clear()
            res = self._cache[j] = self.load(j)
        pos = ordinals(res)
        return [(s, (j, pos[id(s)])) for oc in res.outcomes for s in oc.samples if s.identity == name]

    def apply(self, result: ShardResult, writer: Optional[DecisionsWriter], edits: Optional[Edits]) -> ShardResult:
        """Change kept shard ``result`` (fresh from :meth:`load`) in place by the plan and
        return it: merged identities' faces out of their place and in after their group's
        first identity, then every face's decisions (:func:`apply_face_decisions`, lines to
        ``writer``, a reviewed file's ``edits`` applied).

        Raises:
            FacekitError: a reviewed keep of a face whose crop was not kept."""
        plan = self.plan
        pos = ordinals(result)
        place = {k: (result.index, p) for k, p in pos.items()}  # id(sample) -> (shard, position)
        owner: dict[int, str] = {}  # id(sample) -> the identity it had before a merge
        # a merged identity's faces leave their own place ...
        if plan.head:
            for oc in result.outcomes:
                if any(s.identity in plan.head for s in oc.samples):
                    oc.samples = [s for s in oc.samples if s.identity not in plan.head]
        # ... and follow the last item of their group's first identity (its source identity's
        # run: the faces split off it and its rejected images included)
        if plan.members:
            base_of = {s.identity: _base(s) for oc in result.outcomes for s in oc.samples if s.identity in plan.members}
            last: dict[str, int] = {}
            for i, oc in enumerate(result.outcomes):
                bases = {oc.identity} | {_base(s) for s in oc.samples}
                for head, base in base_of.items():
                    if base in bases:
                        last[head] = i
            for head in sorted(last, key=lambda h: -last[h]):  # from the end: positions stay valid
                moved = []
                for m in plan.members[head]:
                    for smp, where in self._faces_of(m):
                        place[id(smp)] = where
                        owner[id(smp)] = smp.identity
                        if smp.source_identity is None:
                            smp.source_identity = smp.identity
                        smp.identity = head
                        moved.append(smp)
                if moved:
                    oc = Outcome(head)
                    oc.samples = moved
                    result.outcomes.insert(last[head] + 1, oc)
        calls: dict[int, FaceCall] = {}
        if plan.moved is not None:
            calls.update(plan.moved.check([s for oc in result.outcomes for s in oc.samples], owner))

        def call(s: Sample) -> Optional[FaceCall]:
            return (plan.copies.get(place.get(id(s))) or plan.overlap.get(owner.get(id(s), s.identity))
                    or calls.get(id(s)))

        apply_face_decisions(result, writer, edits, call)
        return result
