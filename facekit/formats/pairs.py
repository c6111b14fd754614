"""Verification pairs: the pairs-list formats, and what pair sources and sinks agree on.

Formats (``shared/docs/FORMATS.md`` section 3):

- ``lfw``: LFW ``pairs.txt``. First line ``<folds> <n>`` (``10 300``), then per fold ``n``
  positive lines ``name i j`` and ``n`` negative lines ``name1 i name2 j``; image path
  ``name/name_%04d.<ext>``.
- ``list``: one pair per line, ``path1 path2 label`` with ``label`` 1 (same person) or 0
  (as insightface's ``lfw_pairs_label.txt``); tab-separated when the line has tabs (paths
  may then hold spaces), otherwise whitespace-separated.

Numbers (LFW header and image numbers, list labels) may be written as floats when their
value is exactly a whole number (``70.``, ``70.0``, ``7e1``, as numpy writes them), in
ASCII digits and at most 10^15; any other value (``70.5``, ``１２``, ``1_000``, ``1e30``) is an
error naming file:line.

A pair source yields, for pair ``i``, image a then image b, both with identity
:func:`pair_identity` ``(i)`` so that the engine's identity gate (``min_images`` 2) keeps or
drops a pair as a whole, with ``Sample.pair`` (a :class:`facekit.stages.PairRef`) describing
the pair and, under ``on_missing_face: fail``, ``Sample.required`` (:func:`pair_required`)
saying why a reject of it stops the run.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal, Optional

from pydantic import Field

from facekit.errors import FacekitError
from facekit.stages import PairRef, SourceParams

FAIL = "fail"
DROP_PAIR = "drop_pair"


class PairsError(FacekitError):
    """A pairs file is malformed or names a missing image (message names file and line)."""


@dataclass(frozen=True)
class Pair:
    """One line of a pairs file. ``a``/``b``: image paths relative to the image root (POSIX
    separators); ``issame``: same person; ``line``: 1-based line number; ``fold``: LFW fold
    index (0-based) or None for the list format."""

    line: int
    a: str
    b: str
    issame: bool
    fold: Optional[int] = None


def pair_identity(index: int) -> str:
    """The identity a pair source gives both images of pair ``index``."""
    return f"pair{index:05d}"


def _split(line: str) -> list[str]:
    return line.rstrip("\r\n").split("\t") if "\t" in line else line.split()


#: a number in decimal or exponent notation (``70``, ``70.``, ``70.0``, ``7e1``): what
#: :func:`_integral` reads, as exact decimals (numpy writes ``70.``); ASCII digits only
#: (``[0-9]`` is not ``\d``: no fullwidth or other Unicode digits, no ``1_000``)
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]{1,18})?")
_MAX_NUMBER = 10**15


def _read_integral(tok: str) -> tuple[Optional[int], str]:
    """``(value, "")`` for a token writing a whole number of at most :data:`_MAX_NUMBER`
    (``70``, ``70.``, ``70.0``, ``7e1``), else ``(None, why)``: ``"is not an integer"``
    (``70.5``, ``x``, ``１２``, ``1_000``) or ``"is too large ..."`` (``1e30``)."""
    if not _NUMBER.fullmatch(tok):
        return None, "is not an integer"
    d = Decimal(tok)  # exact; exponents up to 18 digits (the pattern's) are in its range
    if d.is_zero():
        return 0, ""
    if d.adjusted() > 15 or abs(d) > _MAX_NUMBER:  # adjusted first: no arithmetic on 1e999
        return None, f"is too large (the most is {_MAX_NUMBER:,})"
    if d.adjusted() < 0 or d != d.to_integral_value():
        return None, "is not an integer"
    return int(d), ""


def _integral(tok: str) -> Optional[int]:
    """The integer ``tok`` writes (see :func:`_read_integral`), or None."""
    return _read_integral(tok)[0]


def _int(tok: str, path, lineno: int, what: str) -> int:
    v, why = _read_integral(tok)
    if v is None:
        raise PairsError(f"{path}:{lineno}: {what} {tok!r} {why}")
    if v < 0:
        raise PairsError(f"{path}:{lineno}: {what} {tok!r} is negative")
    return v


def detect_format(path: str | os.PathLike) -> str:
    """``lfw`` when the first non-blank line is two non-negative integers (the ``10 300``
    header; ``10. 300.`` too), else ``list``."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            toks = _split(line)
            if toks:
                return "lfw" if len(toks) == 2 and all(v is not None and v >= 0 for v in map(_integral, toks)) else "list"
    return "list"


def read_pairs(path: str | os.PathLike, fmt: Literal["auto", "lfw", "list"] = "auto", ext: str = "jpg") -> list[Pair]:
    """Parse a pairs file (no image is opened).

    Args:
        path: the pairs file (UTF-8 text).
        fmt: ``lfw``, ``list`` or ``auto`` (see :func:`detect_format`).
        ext: image extension for the ``lfw`` format (``name/name_%04d.<ext>``).
    Returns:
        the pairs in file order.
    Raises:
        PairsError: bad header, wrong field count, non-integer index, label not 0/1, or
            (``lfw``) pair counts/order that do not match the header; names file and line.
        OSError: the file cannot be read.
    """
    path = Path(path)
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in ("lfw", "list"):
        raise ValueError(f"unknown pairs format {fmt!r} (lfw, list, auto)")
    pairs: list[Pair] = []
    header = None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            toks = _split(line)
            if not toks:
                continue
            if fmt == "lfw":
                if header is None:
                    if len(toks) != 2:
                        raise PairsError(f"{path}:{lineno}: LFW pairs header must be '<folds> <pairs per half-fold>'")
                    header = (_int(toks[0], path, lineno, "fold count"), _int(toks[1], path, lineno, "pair count"))
                    continue
                if len(toks) == 3:
                    n = toks[0]
                    i, j = (_int(t, path, lineno, "image number") for t in toks[1:])
                    a, b, same = f"{n}/{n}_{i:04d}.{ext}", f"{n}/{n}_{j:04d}.{ext}", True
                elif len(toks) == 4:
                    n1, n2 = toks[0], toks[2]
                    i, j = _int(toks[1], path, lineno, "image number"), _int(toks[3], path, lineno, "image number")
                    a, b, same = f"{n1}/{n1}_{i:04d}.{ext}", f"{n2}/{n2}_{j:04d}.{ext}", False
                else:
                    raise PairsError(
                        f"{path}:{lineno}: expected 'name i j' or 'name1 i name2 j', found {len(toks)} fields"
                    )
                folds, n = header
                k = len(pairs)
                fold, pos = divmod(k, 2 * n) if n else (0, 0)
                if k >= folds * 2 * n:
                    raise PairsError(f"{path}:{lineno}: more pairs than the header's {folds} x 2 x {n}")
                if same != (pos < n):
                    raise PairsError(
                        f"{path}:{lineno}: fold {fold + 1} must list {n} positive then {n} negative pairs; "
                        f"found a {'positive' if same else 'negative'} pair at position {pos + 1}"
                    )
                pairs.append(Pair(lineno, a, b, same, fold))
            else:
                if len(toks) != 3:
                    raise PairsError(f"{path}:{lineno}: expected 'path1 path2 0|1', found {len(toks)} fields")
                label = _integral(toks[2])
                if label not in (0, 1):
                    raise PairsError(f"{path}:{lineno}: label {toks[2]!r} must be 1 (same) or 0 (different)")
                pairs.append(Pair(lineno, toks[0], toks[1], label == 1))
    if fmt == "lfw":
        if header is None:
            raise PairsError(f"{path}: empty LFW pairs file (no '<folds> <n>' header)")
        if len(pairs) != header[0] * 2 * header[1]:
            raise PairsError(
                f"{path}: header promises {header[0]} folds x 2 x {header[1]} = {header[0] * 2 * header[1]} pairs, "
                f"the file has {len(pairs)}"
            )
    if not pairs:
        raise PairsError(f"{path}: no pairs")
    return pairs


def check_images(pairs: list[Pair], root: Path, path: str | os.PathLike) -> None:
    """Raise :class:`PairsError` naming the first lines whose image is not a file under ``root``."""
    missing = []
    for p in pairs:
        for side, rel in (("a", p.a), ("b", p.b)):
            if not (root / rel).is_file():
                missing.append(f"{path}:{p.line}: image {side} {root / rel} does not exist")
    if missing:
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise PairsError(
            f"{len(missing)} image(s) named by the pairs file are missing (a bin with a shifted pair "
            "order would be silently wrong, so nothing was written):\n  " + "\n  ".join(missing[:10]) + more
        )


# --------------------------------------------------------------------------- sources


class PairSourceParams(SourceParams):
    """Parameters shared by the pair sources (``pairs``, ``evalbin``)."""

    min_images: Literal[2] = Field(2, description="fixed: a pair is kept only with both faces")
    on_missing_face: Literal["fail", "drop_pair"] = Field(
        FAIL,
        description="an image of a pair yields no face: stop the run (fail), or leave the whole pair out "
        "and report it in rejects.tsv (drop_pair)",
    )


def pair_required(where: str, policy: str) -> str:
    """The ``Sample.required`` text of an image of the pair at ``where`` (file:line or
    file[record]) under ``policy`` (``on_missing_face``): empty for ``drop_pair`` (a reject
    drops the pair), else why the run stops and what to change."""
    if policy != FAIL:
        return ""
    return (
        f"{where}: a verification pair needs both faces and a pair is never dropped on its own, so the run "
        "stops; set 'on_missing_face: drop_pair' on the source to leave such pairs out (each is reported in "
        "rejects.tsv)"
    )


# --------------------------------------------------------------------------- sinks


class PairCollector:
    """Checks, for a sink, that pair samples arrive whole and in order; counts them.

    ``add(sample)`` returns the sample's :class:`PairRef`; ``finish()`` returns the stats.
    Raises FacekitError (naming the pair's file:line or bin record) for a sample without
    pair meta (not from a pair source), more than one face or sample per image (detector
    ``select: all``, an augmenter adding variants), an incomplete pair, or pairs missing
    while the source does not allow dropping them.
    """

    def __init__(self, where: str):
        self.where = where
        self.pending: Optional[PairRef] = None
        self.last = -1
        self.total: Optional[int] = None
        self.drop = False
        self.positives = 0
        self.negatives = 0

    def add(self, sample) -> PairRef:
        ref = sample.pair
        if not isinstance(ref, PairRef):
            raise FacekitError(
                f"{self.where}: {sample.path} is not part of a verification pair: this sink needs a pair "
                "source (pairs, evalbin)"
            )
        self.total, self.drop = ref.total, ref.drop
        side = "ab"[ref.side]
        if self.pending is None:
            if ref.index <= self.last:
                raise FacekitError(
                    f"{ref.where}: pair {ref.index} image {side} gave more than one face or sample; a verification "
                    "pair needs exactly one per image (use detector select: largest_central and no augmenter "
                    "that adds samples)"
                )
            if ref.side != 0:
                raise FacekitError(f"{ref.where}: pair {ref.index} image b arrived without image a")
            if ref.index != self.last + 1 and not ref.drop:
                raise FacekitError(
                    f"{ref.where}: pairs {self.last + 1}..{ref.index - 1} are missing before pair {ref.index} "
                    "and the source does not allow dropping pairs"
                )
            self.pending = ref
            return ref
        if ref.index != self.pending.index or ref.side != 1:
            what = "more than one face or sample" if ref.index == self.pending.index else "no image b"
            raise FacekitError(
                f"{self.pending.where}: pair {self.pending.index} image a gave {what}; a verification pair "
                "needs exactly one face per image"
            )
        self.pending = None
        self.last = ref.index
        if ref.issame:
            self.positives += 1
        else:
            self.negatives += 1
        return ref

    def finish(self) -> dict:
        """Check the last pair is whole (and, unless dropping is allowed, that every pair came);
        returns ``{pairs, positives, negatives, dropped}``."""
        if self.pending is not None:
            raise FacekitError(f"{self.pending.where}: pair {self.pending.index} has no image b")
        written = self.positives + self.negatives
        if written == 0:
            raise FacekitError(
                f"{self.where}: no complete pair arrived (every pair lost a face, or the source is empty)"
            )
        total = self.total if self.total is not None else written
        if written != total and not self.drop:
            raise FacekitError(
                f"{self.where}: {written} of {total} pairs arrived and the source does not allow dropping pairs"
            )
        return {"pairs": written, "positives": self.positives, "negatives": self.negatives, "dropped": total - written}


# --------------------------------------------------------------------------- generating


def folder_pairs(
    root: str | os.PathLike,
    seed: int = 0,
    folds: int = 10,
    extensions: tuple[str, ...] = ("jpg", "jpeg", "png", "bmp"),
    max_per_identity: Optional[int] = None,
    max_pairs: Optional[int] = None,
) -> list[Pair]:
    """Pairs from an identity-folder tree ``root/<identity>/<image>``: the positive pairs
    (2-combinations within each identity) and as many negatives (distinct identities,
    images drawn with ``random.Random(seed)``, no pair twice), arranged LFW style in
    ``folds`` blocks of positives then negatives, so that the 10 contiguous evaluation
    folds each hold both kinds. ``Pair.line`` = position + 1 (as :func:`write_pairs` writes).

    Args:
        max_per_identity: at most this many positive pairs per identity (a seeded sample of
            a larger identity's combinations; None: all of them).
        max_pairs: at most this many pairs in all: ``max_pairs // 2`` positives (a seeded
            sample of those left after ``max_per_identity``) and as many negatives.
    Without caps every positive pair is listed. With caps the positives are drawn without
    listing every combination (memory follows the pairs kept); the same arguments give the
    same pairs.

    Raises:
        PairsError: no positive pair, fewer positive pairs than ``folds`` (a fold would lack
            a kind), or too few identities/images for the negatives.
        ValueError: a cap below 1 (``max_pairs`` below 2).
    """
    import random

    if max_per_identity is not None and max_per_identity < 1:
        raise ValueError(f"max_per_identity must be at least 1, not {max_per_identity}")
    if max_pairs is not None and max_pairs < 2:
        raise ValueError(f"max_pairs must be at least 2 (one positive, one negative), not {max_pairs}")
    root = Path(root)
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    ids = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        imgs = sorted(f"{d.name}/{f.name}" for f in d.iterdir() if f.is_file() and f.suffix.lower() in exts)
        if imgs:
            ids.append(imgs)
    rng = random.Random(seed)
    if max_per_identity is None and max_pairs is None:
        positives = [(a, b) for imgs in ids for a, b in itertools.combinations(imgs, 2)]
        rng.shuffle(positives)
    else:
        positives = _capped_positives(ids, rng, max_per_identity, max_pairs)
    if not positives:
        raise PairsError(f"{root}: no identity folder with 2 or more images: no positive pair")
    if len(positives) < folds:
        raise PairsError(f"{root}: {len(positives)} positive pair(s) for {folds} folds: every fold needs a positive "
                         f"and a negative pair: use {len(positives)} fold(s) or fewer")
    n_all = sum(len(x) for x in ids)
    possible = (n_all * n_all - sum(len(x) ** 2 for x in ids)) // 2
    if possible < len(positives):
        raise PairsError(f"{root}: only {possible} different-identity pairs for {len(positives)} negatives")
    if possible < 4 * len(positives):  # nearly every negative is needed: draw from all of them
        every = [(a, b) for i, j in itertools.combinations(range(len(ids)), 2) for a in ids[i] for b in ids[j]]
        negatives = rng.sample(every, len(positives))
    else:  # rejection sampling: memory stays proportional to the pairs drawn
        seen, negatives = set(), []
        while len(negatives) < len(positives):
            i, j = rng.sample(range(len(ids)), 2)
            a, b = rng.choice(ids[i]), rng.choice(ids[j])
            if (a, b) not in seen and (b, a) not in seen:
                seen.add((a, b))
                negatives.append((a, b))
    out: list[Pair] = []
    for f, (pos, neg) in enumerate(zip(_chunks(positives, folds), _chunks(negatives, folds), strict=True)):
        for (a, b), same in [(x, True) for x in pos] + [(x, False) for x in neg]:
            out.append(Pair(len(out) + 1, a, b, same, f))
    return out


def _unrank_pair(t: int, m: int) -> tuple[int, int]:
    """The ``t``-th 2-combination ``(i, j)``, ``i < j``, of ``range(m)`` in
    ``itertools.combinations`` order (``0 <= t < m * (m - 1) / 2``), in O(1)."""
    # row i holds the m - 1 - i pairs (i, i+1 .. m-1); rows i.. from the end hold r(r+1)/2
    # pairs with r = m - 1 - i: find the row from the count of pairs after t
    after = m * (m - 1) // 2 - 1 - t
    r = (math.isqrt(8 * after + 1) - 1) // 2  # largest r with r(r+1)/2 <= after
    i = m - 2 - r
    j = t - (i * (2 * m - i - 1)) // 2 + i + 1
    return i, j


def _capped_positives(ids: list[list[str]], rng, max_per_identity: Optional[int], max_pairs: Optional[int]):
    """Positive pairs under the caps of :func:`folder_pairs`, drawn with ``rng`` by index
    (no identity's combinations are listed): per identity a sample of ``max_per_identity``
    combination numbers where it has more, then a sample of ``max_pairs // 2`` of all that
    remain; returned in random order."""
    chosen: list[Optional[list[int]]] = []  # per identity: the sampled combination numbers, None: all
    counts = []
    for imgs in ids:
        c = len(imgs) * (len(imgs) - 1) // 2
        if max_per_identity is not None and c > max_per_identity:
            chosen.append(sorted(rng.sample(range(c), max_per_identity)))
            c = max_per_identity
        else:
            chosen.append(None)
        counts.append(c)
    starts = list(itertools.accumulate(counts, initial=0))
    total = starts[-1]
    keep = total if max_pairs is None else min(total, max_pairs // 2)
    out = []
    for g in rng.sample(range(total), keep):
        k = bisect.bisect_right(starts, g) - 1
        t = g - starts[k]
        i, j = _unrank_pair(chosen[k][t] if chosen[k] is not None else t, len(ids[k]))
        out.append((ids[k][i], ids[k][j]))
    return out


def _chunks(seq: list, n: int) -> list[list]:
    """Split ``seq`` into ``n`` contiguous chunks, the first ``len % n`` one longer (KFold sizes)."""
    q, r = divmod(len(seq), n)
    out, start = [], 0
    for k in range(n):
        end = start + q + (1 if k < r else 0)
        out.append(seq[start:end])
        start = end
    return out


def write_pairs(path: str | os.PathLike, pairs: list[Pair]) -> None:
    """Write ``pairs`` as a tab-separated ``path1 path2 0|1`` list, atomically."""
    from facekit.formats.atomic import atomic_write_text

    atomic_write_text(path, "".join(f"{p.a}\t{p.b}\t{int(p.issame)}\n" for p in pairs))
