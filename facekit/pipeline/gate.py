"""The identity gate: decides each identity of a finished shard and labels its faces.

Shards hold whole identities, so the gate decides one shard at a time, in shard order:
an identity with at least ``min_images`` kept faces is admitted and gets the next class id
(or keeps the label its source gave, e.g. the ``mxrec`` source keeping a dataset's labels);
a smaller one is dropped and each of its faces becomes an ``identity_too_small`` reject.
The gate hands on one :class:`Row` per face or reject, in source order, which the engine
passes to the sinks (kept faces), the rejects file and the results table.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from facekit.errors import FacekitError
from facekit.formats.facerec import MAX_CLASS  # class ids are below it: int32 in the account
from facekit.pipeline.shards import STAGE_ERROR, ShardResult
from facekit.stages import Reject, Sample

IDENTITY_TOO_SMALL = "identity_too_small"
#: a run stops when this many first images all fail in a stage with the same error
SYSTEMATIC_ERRORS = 5


@dataclass(slots=True)
class Row:
    """One line of the run's account: a kept face (``sample`` set, labelled, ``reject``
    None), a face of a dropped identity (both set), or a rejected image (``reject`` only).
    ``item``: the source item's position in its shard."""

    item: int
    sample: Optional[Sample]
    reject: Optional[Reject]


class IdentityCounts(Mapping):
    """Per-identity account for ``summary.json``: a read-only mapping of identity name to
    ``{"label", "kept", "rejected"}`` (class id, -1 when not admitted; kept faces; rejected
    images/faces), in the order identities were first seen. Held as a name index and int32
    arrays (class ids are below 2**31, as :func:`facekit.formats.facerec.class_id` checks;
    ~62 B an identity; a dict of objects took 254 B, and Glint360K has 360k identities);
    each value is made when asked for (``dict(counts)``: a plain copy)."""

    def __init__(self):
        self.index: dict[str, int] = {}
        self.label, self.kept, self.rejected = array("i"), array("i"), array("i")
        self.decided = bytearray()  # 1: the identity's faces went through the gate

    def slot(self, name: str) -> int:
        """The position of identity ``name`` (added, with label -1 and no counts, if new)."""
        i = self.index.get(name)
        if i is None:
            i = self.index[name] = len(self.index)
            self.label.append(-1)
            self.kept.append(0)
            self.rejected.append(0)
            self.decided.append(0)
        return i

    def was_decided(self, name: str) -> bool:
        """Whether identity ``name``'s faces already went through the gate (a source that
        yields it again after other identities is refused)."""
        i = self.index.get(name)
        return i is not None and self.decided[i] == 1

    def __getitem__(self, name: str) -> dict:
        i = self.index[name]
        return {"label": self.label[i], "kept": self.kept[i], "rejected": self.rejected[i]}

    def __iter__(self):
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)


class IdentityGate:
    """Admits identities with ``min_images`` kept faces and numbers them from ``start_id``.

    Raises FacekitError if the source yields an identity again after moving on, or mixes
    set and unset labels within one identity.
    """

    def __init__(self, start_id: int, min_images: int):
        self.next_id = start_id
        self.min_images = min_images
        self.admitted = 0
        self.dropped = 0
        self.counts = IdentityCounts()
        #: the names splits took (``<identity>#k`` -> ``<identity>``): few, so a plain dict
        self.split_names: dict[str, str] = {}

    def admit(self, result: ShardResult) -> list[Row]:
        """Decide the identities of ``result``; return its rows in source order.

        A face a decision moved to another identity (``Sample.source_identity`` set: a
        cleaner's split, the dataset-level merge step) counts under the identity it was
        moved to; each *source* identity must still come in one run. The identities of
        the shard are decided in the order they first appear; the sinks get each one's
        faces together (:func:`sink_order`)."""
        order: list[str] = []
        faces: dict[str, list[Sample]] = {}
        bases: set[str] = set()
        first: dict[str, tuple[int, bool]] = {}  # identity -> (its source identity's run, split off it)
        current = None
        for oc in result.outcomes:
            for s in oc.samples:
                base = s.identity if s.source_identity is None else s.source_identity
                if base != current:
                    if base in self.split_names:
                        raise FacekitError(
                            f"identity {base!r} of the source ({s.path}) has the name an earlier split took "
                            f"({self.split_names[base]!r} split into {base!r}): rename that folder (a split takes "
                            "a free name only among the identities of its own shard)"
                        )
                    if base in bases or self.counts.was_decided(base):
                        raise FacekitError(
                            f"source yielded identity {base!r} again after other identities ({s.path}); "
                            "a source must keep each identity's images together"
                        )
                    bases.add(base)
                    current = base
                ident = s.identity
                if ident not in faces:
                    if self.counts.was_decided(ident):
                        raise FacekitError(
                            f"identity {ident!r} ({s.path}, from {base!r}) was already written: a decision "
                            "cannot add faces to an identity after it"
                        )
                    faces[ident] = []
                    order.append(ident)
                faces[ident].append(s)
                first.setdefault(ident, (len(bases), ident != base))
                if ident != base and ident.startswith(base + "#"):
                    self.split_names.setdefault(ident, base)
        # each source identity before the identities split off it, whichever face came first
        order.sort(key=lambda ident: first[ident])
        labels: dict[str, int] = {}
        for ident in order:
            buf = faces[ident]
            if len(buf) < self.min_images:
                self.dropped += 1
                continue
            given = {s.label for s in buf}
            if any(lab >= 0 for lab in given):
                moved = next((s for s in buf if s.source_identity is not None), None)
                if moved is not None:
                    raise FacekitError(
                        f"identity {ident!r}: faces of {moved.source_identity!r} were moved to it, but the source "
                        "gives class ids (e.g. mxrec labels: keep): set labels: renumber"
                    )
                if len(given) != 1:
                    raise FacekitError(f"identity {ident!r}: the source gave several or partial labels {sorted(given)}")
                if buf[0].label >= MAX_CLASS:
                    raise FacekitError(f"identity {ident!r}: the source gave class id {buf[0].label}, not below 2**31")
                labels[ident] = buf[0].label
            else:
                if self.next_id >= MAX_CLASS:
                    raise FacekitError(f"identity {ident!r}: class id {self.next_id} is not below 2**31 (start_id too high)")
                labels[ident] = self.next_id
                self.next_id += 1
            self.admitted += 1
        rows: list[Row] = []
        counts = self.counts
        for i, oc in enumerate(result.outcomes):
            for s in oc.samples:
                # summary.json counts a merged identity's faces under its own name (with the
                # label it was written under); a split's under the new identity
                src = s.source_identity
                c = counts.slot(s.identity if src is None or s.identity.startswith(src + "#") else src)
                label = labels.get(s.identity)
                if label is None:
                    n = len(faces[s.identity])
                    detail = f"identity {s.identity!r} has {n} kept face(s) < min_images {self.min_images}"
                    rows.append(Row(i, s, Reject(s.path, IDENTITY_TOO_SMALL, detail, s.identity, s.required)))
                    counts.rejected[c] += 1
                else:
                    s.label = label  # the gate owns these samples: label them in place
                    rows.append(Row(i, s, None))
                    counts.label[c] = label
                    counts.kept[c] += 1
            for r in oc.rejects:
                rows.append(Row(i, r.face, r))
                counts.rejected[counts.slot(r.identity)] += 1
        for ident in order:
            counts.decided[counts.index[ident]] = 1
        return rows


def sink_order(rows: list[Row]) -> list[Row]:
    """The kept rows of a shard (``reject`` None) in the order the sinks get them: each
    identity's faces together, faces in source order: source order unless a decision moved
    faces between identities, then by label (the gate numbered them: a source identity,
    then those split off it)."""
    kept = [r for r in rows if r.reject is None]
    seen: set[int] = set()
    grouped, last = True, None
    for r in kept:
        lab = r.sample.label
        if lab != last:
            if lab in seen:
                grouped = False
                break
            seen.add(lab)
            last = lab
    if grouped:
        return kept
    # faces moved between identities (only under labels the gate numbered, in its order)
    return sorted(kept, key=lambda r: r.sample.label)


class StageErrorGuard:
    """Stops a run whose stages fail systematically: when each of the first ``n`` images
    read ends in a ``stage_error`` reject with the same detail (a wrong model, a broken
    plugin), every later image would too."""

    def __init__(self, n: int = SYSTEMATIC_ERRORS):
        self.n = n
        self.seen = 0
        self.detail: str | None = None
        self.first_path = ""

    def check_shard(self, result: ShardResult) -> None:
        """Look at a shard's outcomes in order (cheap once decided)."""
        for oc in result.outcomes:
            if self.seen >= self.n:
                return
            self.check(oc.read, len(oc.samples), oc.rejects)

    def check(self, read: int, kept: int, rejects: list[Reject]) -> None:
        """Look at one source item's outcome (``read`` images, ``kept`` faces, its rejects).

        Raises:
            FacekitError: the first ``n`` images all failed with one stage error (the message
                names it and the first image).
        """
        if self.seen >= self.n or not read:
            return
        errors = [r for r in rejects if r.reason == STAGE_ERROR]
        if kept or not errors or (self.detail is not None and errors[0].detail != self.detail):
            self.seen = self.n  # one image without that error: not systematic
            return
        if self.detail is None:
            self.detail, self.first_path = errors[0].detail, errors[0].path
        self.seen += 1
        if self.seen == self.n:
            raise FacekitError(
                f"the first {self.n} images all failed in a stage with the same error, stopping: "
                f"{self.detail} (first: {self.first_path})"
            )
