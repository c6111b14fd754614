"""``decisions.tsv``: every cleaning and merge decision of a run, one editable line each
(issue 26 part 5).

A run with a ``clean:`` stage or a ``merge:`` step writes ``<output>/decisions.tsv``
(fields escaped as :mod:`facekit.formats.tsv` says), a header line then one line per
decision::

    kind  identity  path  face  other  similarity  decision  detail

- ``kind``: ``duplicate``, ``label_noise``, ``mixed_identity``, ``far_from_identity`` (a
  ``clean`` stage's, per face; the last from ``select: identity``), ``moved`` (a face nearer another identity's centre than its own), ``copy`` (the
  same image under two identities), ``overlap`` (a face of an identity that is a person of
  a verification bin), ``merge`` (two identities that are one person: ``path`` empty).
- ``identity``: the identity as the source names it (``<source>/<identity>`` with several
  sources); ``path`` and ``face``: the face (its image and face index), as
  ``results.parquet`` names it.
- ``other``: ``duplicate``/``copy``: the path of the face it copies; ``moved``: the identity
  it is nearer to; ``mixed_identity``: the identity it is written under (``<identity>#2``
  when split); ``overlap``: the bin image it matches; ``merge``: the other identity.
- ``similarity``: the cosine similarity the decision rests on (empty when none).
- ``decision``: for a face ``keep`` (kept, no flag), ``flag`` (kept, flagged) or
  ``reject``; for a merge ``merge`` (the two identities are written as one), ``apart``
  (they stay two) or ``propose`` (not applied: a merge for a person to review).

A reviewer edits the ``decision`` column (and nothing else) and gives the file back with
``decisions: FILE`` in the config: the run applies it,
and its outputs equal those of the run that wrote the file except for exactly the
decisions changed. Lines whose decision is unchanged may be deleted. A line whose ``kind``
or ``decision`` is unknown, or that names a face or identity the run does not have, is an
error naming the file and line; nothing is written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, field_validator

from facekit.clean.merge import DEFAULT_MERGE_THRESHOLD
from facekit.clean.moved import DEFAULT_MOVED_MARGIN
from facekit.errors import FacekitError
from facekit.formats.tsv import escape, unescape
from facekit.stages import InputPath, Params

DECISIONS_FILE = "decisions.tsv"
HEADER = ("kind", "identity", "path", "face", "other", "similarity", "decision", "detail")
FACE_KINDS = ("duplicate", "label_noise", "mixed_identity", "far_from_identity", "moved", "copy", "overlap")
FACE_DECISIONS = ("keep", "flag", "reject")
MERGE_DECISIONS = ("merge", "apart", "propose")
#: an edited decisions file larger than this is refused
MAX_BYTES = 1 << 30
Action = Literal["ignore", "flag", "reject"]


class MergeConfig(Params):
    """The dataset-level decision step (config key ``merge:``), run once every shard of
    every source is done, before anything is written."""

    identities: Literal["apply", "propose", "ignore"] = Field(
        "propose", description="identity pairs whose centres reach 'above' (one person under two names or in two "
        "sources): apply (written as one identity, at the first one's place), propose (listed in decisions.tsv "
        "and the report, not applied), ignore"
    )
    above: float = Field(
        DEFAULT_MERGE_THRESHOLD, ge=-1, le=1, description="cosine similarity of two identity centres at or above "
        "which they are one person (calibrated for the shared MobileFaceNet; calibrate another model with "
        "benchmarks/bench_merge.py --calibrate)"
    )
    copies: Action = Field(
        "reject", description="the same image (same bytes) under two identities: the later one is rejected or "
        "flagged 'copy' (other: the first)"
    )
    moved: Action = Field(
        "flag", description="a face nearer another identity's centre than its own by 'moved_margin' (likely "
        "filed under the wrong identity): flagged or rejected 'moved' (other: the nearer identity)"
    )
    moved_margin: float = Field(
        DEFAULT_MOVED_MARGIN, ge=0, le=2, description="how much nearer (cosine similarity) the other centre is; "
        "0.15 found 0.93 of the faces moved between the shared identities (facekit.clean.moved)"
    )
    moved_index: Literal["flat", "ivf"] = Field(
        "flat", description="the moved check's search of the identity centres: flat (exact: every face against "
        "every centre, ~25 ns a pair on 2 cores: 1M faces x 100k identities ~40 minutes) or ivf (approximate, "
        "about 6x faster at nprobe 16, may miss moved faces: summary.json says so)"
    )
    moved_nprobe: int = Field(64, ge=1, le=65536, description="ivf lists searched per face (more: slower, fewer misses)")
    bins: list[InputPath] = Field(
        default_factory=list, description="verification sets (lfw.bin, cfp_fp.bin, ...): identities whose centre "
        "matches a bin image at 'overlap_above' are people of the test set (summary.json records the bins checked)"
    )
    overlap_above: float = Field(0.5, ge=-1, le=1, description="cosine similarity of an identity centre to a bin image")
    overlap: Literal["flag", "reject"] = Field(
        "reject", description="the faces of an identity found in a bin: flagged or rejected 'overlap'"
    )

    @field_validator("identities", "copies", "moved", mode="before")
    @classmethod
    def _no_is_ignore(cls, v):
        """YAML reads ``off``/``no``/``false`` as False: the same as ``ignore``."""
        return "ignore" if v is False else v


@dataclass
class Decision:
    """One line of ``decisions.tsv`` (see the module docstring); ``line``: its line number
    in an edited file (0: made by this run)."""

    kind: str
    identity: str
    path: str = ""
    face: Optional[int] = None
    other: str = ""
    similarity: Optional[float] = None
    decision: str = ""
    detail: str = ""
    line: int = 0

    def tsv(self) -> str:
        """The line, fields escaped, ending in a newline."""
        sim = "" if self.similarity is None else f"{self.similarity:.4f}"
        face = "" if self.face is None else str(self.face)
        fields = (self.kind, self.identity, self.path, face, self.other, sim, self.decision, self.detail)
        return "\t".join(escape(str(f)) for f in fields) + "\n"


class DecisionsWriter:
    """Writes ``decisions.tsv`` (a text file opened by the caller, e.g. staged) and counts
    its lines by ``"kind:decision"`` (:meth:`counts`, for summary.json)."""

    def __init__(self, f):
        self.f = f
        self._counts: Counter = Counter()
        f.write("\t".join(HEADER) + "\n")

    def add(self, d: Decision) -> None:
        self.f.write(d.tsv())
        self._counts[f"{d.kind}:{d.decision}"] += 1

    def counts(self) -> dict:
        """``{"kind:decision": lines}``, sorted."""
        return dict(sorted(self._counts.items()))


@dataclass
class Edits:
    """An edited decisions file: ``faces[(kind, path, face)]`` -> (decision, line);
    ``merges[frozenset({a, b})]`` -> (decision, line); ``used``: the lines matched so far."""

    path: Path
    faces: dict
    merges: dict
    used: set

    def __post_init__(self):
        self._by_face: dict = {}
        for (kind, p, f) in self.faces:
            self._by_face.setdefault((p, f), []).append(kind)

    def kinds(self, path: str, face: int) -> list[str]:
        """The kinds of the lines naming face ``(path, face)``."""
        return self._by_face.get((path, face), [])

    def seen(self, path: str, face: int) -> None:
        """Face ``(path, face)`` is in this run: its lines are matched."""
        for kind in self._by_face.get((path, face), ()):
            self.used.add(self.faces[(kind, path, face)][1])

    def face(self, kind: str, path: str, face: int) -> Optional[str]:
        """The decision the file gives face ``(path, face)`` for ``kind``, or None."""
        hit = self.faces.get((kind, path, face))
        if hit is None:
            return None
        self.used.add(hit[1])
        return hit[0]

    def line(self, kind: str, path: str, face: int) -> int:
        """The line number of that decision."""
        return self.faces[(kind, path, face)][1]

    def merge(self, a: str, b: str) -> Optional[str]:
        """The decision the file gives the merge of identities ``a`` and ``b``, or None."""
        hit = self.merges.get(frozenset((a, b)))
        if hit is None:
            return None
        self.used.add(hit[1])
        return hit[0]

    def unused(self) -> list[int]:
        """Lines that named no face or identity pair of this run."""
        lines = {v[1] for v in self.faces.values()} | {v[1] for v in self.merges.values()}
        return sorted(lines - self.used)

    def check_used(self) -> None:
        """Raises FacekitError naming the first line that matched nothing in the run."""
        left = self.unused()
        if left:
            raise FacekitError(
                f"{self.path}:{left[0]}: names a face or identity pair this run does not have "
                f"({len(left)} such line(s)); the file belongs to another run or the data changed"
            )


def read_edits(path: Path) -> Edits:
    """Read an edited ``decisions.tsv``.

    Raises:
        FacekitError: unreadable, too large, a header that is not :data:`HEADER`, a line
            with another number of fields, an unknown kind or decision, a bad face index,
            the same face or pair twice (one line naming the file and line).
    """
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise FacekitError(f"{path}: {size} bytes is too large for a decisions file")
        text = path.read_bytes().decode("utf-8", "surrogateescape").removeprefix("\ufeff")  # a spreadsheet's BOM
    except OSError as e:
        raise FacekitError(f"{path}: cannot read the decisions file: {e.strerror or e}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0].rstrip("\r").split("\t") != list(HEADER):
        raise FacekitError(f"{path}:1: not a decisions file: the header must be {' '.join(HEADER)} (tab-separated)")
    faces: dict = {}
    merges: dict = {}
    for n, raw in enumerate(lines[1:], start=2):
        raw = raw.rstrip("\r")
        if not raw.strip():
            continue
        parts = raw.split("\t")
        if len(parts) != len(HEADER):
            raise FacekitError(f"{path}:{n}: {len(parts)} fields, expected {len(HEADER)} ({' '.join(HEADER)})")
        kind, identity, p, face, other, _, decision, _ = (unescape(x) for x in parts)
        if kind == "merge":
            if decision not in MERGE_DECISIONS:
                raise FacekitError(f"{path}:{n}: decision {decision!r} for a merge: expected one of {', '.join(MERGE_DECISIONS)}")
            key = frozenset((identity, other))
            if len(key) != 2:
                raise FacekitError(f"{path}:{n}: a merge of {identity!r} with itself")
            if key in merges:
                raise FacekitError(f"{path}:{n}: the merge of {identity!r} and {other!r} is also on line {merges[key][1]}")
            merges[key] = (decision, n)
        elif kind in FACE_KINDS:
            if decision not in FACE_DECISIONS:
                raise FacekitError(f"{path}:{n}: decision {decision!r} for a face: expected one of {', '.join(FACE_DECISIONS)}")
            try:
                fi = int(face)
                if fi < 0:
                    raise ValueError
            except ValueError:
                raise FacekitError(f"{path}:{n}: face {face!r} is not a face index (0, 1, ...)") from None
            if (kind, p, fi) in faces:
                raise FacekitError(f"{path}:{n}: the {kind} decision on face {p!r} #{fi} is also on line "
                                   f"{faces[(kind, p, fi)][1]}")
            faces[(kind, p, fi)] = (decision, n)
        else:
            raise FacekitError(
                f"{path}:{n}: unknown kind {kind!r}: expected one of {', '.join((*FACE_KINDS, 'merge'))}"
            )
    return Edits(path, faces, merges, set())
