"""Images moved between identities (issue 26): the dataset-level label-noise check.

A face filed under the wrong identity is judged against every identity at once: its cosine
similarity to its own identity's centre (``own``) is compared with its similarity to the
nearest *other* identity's centre (``other``, k nearest centres from faiss, never an
``N x N`` matrix). The face is **moved** (label noise, likely identity ``other``) when::

    other - own >= margin            (and other >= min_other, when a floor is given)

The pipeline's decision step (after every shard is done) builds the index once and asks
shard by shard::

    index = CentreIndex.from_identities(((s, name), emb) for ...)   # one identity at a time
    for shard in shards:                                              # a few thousand faces
        m = index.moved(emb, owners)          # owners: rows of index.centres
        m.moved, m.other, m.own_similarity, m.other_similarity

or, with centres computed elsewhere (``(N, D)`` unit rows), ``CentreIndex(centres, keys,
counts=..., resultants=...)``; :func:`resultant` gives an identity's resultant.

Why a margin, and why 0.15 (:data:`DEFAULT_MOVED_MARGIN`): measured on the shared
kz_celebs_112 identities (SCRFD-500m + arcface, MobileFaceNet 128-d, flip-summed; 5% of
each identity moved to a random other one, 5 seeds; ``python benchmarks/eval_cleaning.py``).
A moved face scores low against its new identity and high against the one it came from, so
the difference carries it: a floor on ``other`` trades recall for precision along the
margin's own curve (the benchmark's rows), and, measured once on the same moves, the linear
rules ``other >= a + b own`` (b 0 to 1.5) reach at most 0.03 more precision at recall 0.9
than the margin (b = 1), and leaving out faces of low embedding norm loses moved faces as
fast as false ones. 0.15 is the largest margin with recall >= 0.9 there (0.93, at
0.20 it is 0.87) and on identities cut to 5, 10 and 20 faces (0.94-0.95). Precision is the
data's limit, not the rule's: without any move the check flags 11% of the faces (247 of
2,260), at least 58% of them judged by eye another person, often of the set (women and
children in men's folders, a singer under his look-alike's name): strict precision 0.32,
0.72 counting the faces judged by eye not to be the named person (against 0.23 and 0.55 for
the within-identity ``label_noise`` at recall 0.74); see the benchmark's table. A model
with another similarity scale needs its own margin: run the benchmark.

Leave-one-out (``counts`` and ``resultants`` given): a face is part of its own identity's
centre and lifts its own similarity by about ``(1 - own^2) / (count r)``: 0.01-0.02 with 90
faces, 0.2-0.35 with 5. The other identity's centre does not hold the face, so without a
correction the margin means less for small identities (measured at 0.15: recall 0.59 with
5 faces an identity, 0.78 with 10, 0.86 with 20, 0.91 with 90). The correction treats the
centre as the mean of the identity's ``count`` unit faces, whose resultant length is ``r``
(the mean similarity of the faces to the centre, :func:`resultant`): the sum is ``S = count r
c``, and the face is compared with ``S - x``::

    own = (count r s - 1) / sqrt(count^2 r^2 - 2 count r s + 1),   s = x . c

For a robust centre (the geometric median, facekit's default) this is an approximation: a
far face weighs less than ``1/count`` in it, so the correction is slightly too strong for
it. Measured, it moves the operating point, not the ranking (AUC of ``other - own`` 0.953-
0.970 with it, 0.968-0.972 without: slightly lower), and with it the same margin gives
recall 0.93-0.95 from 5 to 90 faces an identity, so one margin serves a data set whose
identities have 5 faces and 500. Faces that are not in their centre (``in_centre`` False,
e.g. duplicates left out of it) and indexes built without counts (centres of reference
data) are compared with the centre as it is. A face alone in its identity has no own
similarity (NaN) and is never moved: :func:`facekit.clean.merge.merge_candidates` judges
identities of one face through their centres.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Optional, Sequence

import numpy as np

from facekit.clean.merge import (
    FLAT_MAX_CENTRES,
    MergeError,
    _build_index,
    _check_matrix,
    _check_unit,
    _owners,
    _rows,
    _threads,
    default_centre,
    identity_centres,
)

#: ``other - own`` at and above which a face is moved; calibrated on kz_celebs_112 with the
#: shared MobileFaceNet (see the module docstring and benchmarks/eval_cleaning.py).
DEFAULT_MOVED_MARGIN = 0.15


def resultant(emb: np.ndarray, centre: np.ndarray) -> float:
    """An identity's resultant length: the mean cosine similarity of its unit embeddings
    ``emb`` ``(n, D)`` to its unit ``centre`` ``(D,)`` (for the mean centre, the norm of the
    mean embedding). In (0, 1] for any centre near its faces; what :class:`CentreIndex`
    needs per identity, with the face count, to take a face out of its own centre."""
    x = np.asarray(emb, np.float32)
    return float(np.mean(x @ np.asarray(centre, np.float32).reshape(-1), dtype=np.float64))


@dataclass
class Moved:
    """The check of ``n`` faces, arrays in input order.

    ``other``: ``(n,)`` int64, the centre row of the nearest identity that is not the face's
    own (nor of its group), -1 when none was found; ``own_similarity`` / ``other_similarity``:
    ``(n,)`` float32 cosine similarities to the own centre (leave-one-out when the index has
    counts; NaN for a face alone in its identity) and to ``other``'s centre (NaN when
    ``other`` is -1); ``moved``: ``(n,)`` bool, ``other - own >= margin`` (and ``other >=
    min_other``); never True where either similarity is NaN."""

    other: np.ndarray
    own_similarity: np.ndarray
    other_similarity: np.ndarray
    moved: np.ndarray
    margin: float
    min_other: Optional[float] = None

    def __len__(self) -> int:
        return len(self.moved)


class CentreIndex:
    """A faiss inner-product index of identity centres, built once, asked shard by shard.

    Args:
        centres: ``(N, D)`` float32 (or float16) L2-normalised identity centres; kept by
            reference (a ``np.memmap`` works) to recompute every similarity exactly.
        keys: the N identity keys, for error messages (default ``range(N)``).
        counts: ``(N,)`` faces in each centre, and ``resultants``: ``(N,)`` their resultant
            lengths in (0, 1] (:func:`resultant`); both or neither. With them a face is
            taken out of its own centre (module docstring); without, centres are used as
            they are.
        index: ``flat`` (exact ``IndexFlatIP``), ``ivf`` (an ``IndexIVFScalarQuantizer``,
            float16, ``nlist`` lists, ``nprobe`` searched: approximate, for millions of
            centres), ``hnsw``, or ``auto``: flat up to ``FLAT_MAX_CENTRES`` (200k), ivf
            above: the same indexes as :func:`facekit.clean.merge.merge_candidates`.
        threads: faiss and BLAS threads while building and searching (default the usable
            cores, :func:`facekit.clean.merge.usable_cores`); restored after each call.
        chunk: rows added or searched per faiss call. seed: the IVF training sample.
    Memory: the index (``N x D`` float32 flat, float16 ivf) plus ``centres`` itself.
    Cost per face asked: flat ``N x D`` multiply-adds; measured on 2 cores with 100k 512-d
    synthetic centres, 2.7 ms a face (1M faces: 46 minutes), ivf (nlist ``2 sqrt(N)``,
    nprobe 16) 0.39 ms (6.5 minutes) but approximate: it found 510 of 534 planted moves
    where flat found all (uniformly spread centres, ivf's worst case). With many faces
    and many identities, ask for ``index="ivf"`` and a larger ``nprobe``.
    Raises:
        MergeError: not a 2-d float matrix, a NaN/inf or non-unit centre (names the row and
        key), keys/counts/resultants of another length, counts below 1, resultants outside
        (0, 1] or not finite, only one of counts and resultants, a bad index kind.
    """

    def __init__(
        self,
        centres: np.ndarray,
        keys: Optional[Sequence[Hashable]] = None,
        counts: Optional[Sequence[int] | np.ndarray] = None,
        resultants: Optional[Sequence[float] | np.ndarray] = None,
        *,
        index: str = "auto",
        nlist: Optional[int] = None,
        nprobe: int = 16,
        ef_search: int = 128,
        threads: Optional[int] = None,
        chunk: int = 8192,
        seed: int = 0,
    ):
        n, d = _check_matrix(centres, "centres")
        self.keys = list(range(n)) if keys is None else list(keys)
        if len(self.keys) != n:
            raise MergeError(f"{len(self.keys)} keys for {n} centres")
        if (counts is None) != (resultants is None):
            raise MergeError("counts and resultants go together (leave-one-out needs both), got one")
        self.counts = self.resultants = None
        if counts is not None:
            c = np.asarray(counts)
            r = np.asarray(resultants, np.float64)
            if c.shape != (n,) or c.dtype.kind not in "iu":
                raise MergeError(f"counts must be ({n},) integers, got {c.dtype} {c.shape}")
            if r.shape != (n,):
                raise MergeError(f"resultants must be ({n},) floats, got {r.shape}")
            if (c < 1).any():
                i = int(np.argmax(c < 1))
                raise MergeError(f"centre {i} (identity {self.keys[i]!r}): count {int(c[i])}, must be >= 1")
            bad = ~(np.isfinite(r) & (r > 0) & (r <= 1 + 1e-6))
            if bad.any():
                i = int(np.argmax(bad))
                raise MergeError(f"centre {i} (identity {self.keys[i]!r}): resultant {float(r[i])} is not in (0, 1]")
            self.counts, self.resultants = c.astype(np.int64), np.minimum(r, 1.0)
        if chunk < 1:
            raise MergeError(f"chunk must be >= 1, got {chunk}")
        kind = ("flat" if n <= FLAT_MAX_CENTRES else "ivf") if index == "auto" else index
        self.centres, self.n, self.dim, self.kind = centres, n, d, kind
        self.threads, self.chunk = threads, chunk

        def check(q, lo):
            _check_unit(q, lambda r: f"centre {r} (identity {self.keys[r]!r})", lo)

        with _threads(threads) as faiss:
            if kind == "flat":
                self._index = faiss.IndexFlatIP(d)
                for lo in range(0, n, chunk):
                    rows = _rows(centres, lo, min(n, lo + chunk))
                    check(rows, lo)
                    self._index.add(rows)
            else:
                self._index, _ = _build_index(faiss, centres, kind, nlist, nprobe, ef_search, chunk, seed, check)

    @classmethod
    def from_identities(
        cls,
        identities: Iterable[tuple[Hashable, np.ndarray]],
        centre: Optional[Callable[[np.ndarray], np.ndarray]] = None,
        **kwargs,
    ) -> "CentreIndex":
        """The index of identities given one at a time, ``(key, (n, D) unit embeddings)``
        (:func:`facekit.clean.merge.identity_centres`: robust centres by default), with
        each identity's count and :func:`resultant`, so faces are taken out of their own
        centre. ``kwargs`` go to :class:`CentreIndex`. Raises MergeError as those do."""
        fn = centre or default_centre()
        res: list[float] = []

        def measured(emb: np.ndarray) -> np.ndarray:
            c = np.asarray(fn(emb), np.float32).reshape(-1)
            norm = float(np.linalg.norm(c))
            res.append(resultant(emb, c / norm) if np.isfinite(norm) and norm > 0 else float("nan"))
            return c

        cs = identity_centres(identities, centre=measured)
        return cls(cs.centres, cs.keys, cs.counts, np.clip(res, 1e-6, 1.0), **kwargs)

    def moved(
        self,
        embeddings: np.ndarray,
        owners: Sequence[int] | np.ndarray,
        margin: float = DEFAULT_MOVED_MARGIN,
        *,
        min_other: Optional[float] = None,
        in_centre: Optional[np.ndarray] = None,
        groups: Optional[np.ndarray] = None,
        k: int = 4,
        max_k: int = 256,
        first: int = 0,
    ) -> Moved:
        """Which of ``n`` faces are nearer another identity's centre than their own.

        Args:
            embeddings: ``(n, D)`` float32/float16 L2-normalised face embeddings (one shard;
                memory is ``chunk`` rows at a time plus the ``(n,)`` results).
            owners: ``(n,)`` integers, each face's identity as a row of ``centres``.
            margin: cosine similarity; a face is moved when ``other - own >= margin``.
            min_other: also require ``other >= min_other`` (default: no floor).
            in_centre: ``(n,)`` bool, whether the face is one of the ``count`` faces of its
                centre (default all, when the index has counts); False: no leave-one-out.
            groups: ``(N,)`` integers, a group per centre row (identities to be merged):
                the "other" centre is the nearest of another group than the face's own
                (default: every centre its own group).
            k: centres searched per face first; rows that found only their own group are
                searched again with 2k, 4k, ... up to ``max_k`` (then ``other`` is -1).
            first: the row number of ``embeddings[0]`` in the caller's numbering (shard
                offset), used in error messages.
        Returns:
            :class:`Moved`; ``other_similarity`` is recomputed in float32 from
            ``centres`` whatever the index, so it does not depend on ivf's float16.
        Raises:
            MergeError: not a 2-d float matrix, a dimension other than the centres', a
            NaN/inf or non-unit row, owners not ``(n,)`` integers in ``0..N-1`` (names the
            image row), a margin or floor that is not a finite cosine difference, bad
            ``in_centre``/``groups`` shapes, ``k < 1``.
        """
        m, d = _check_matrix(embeddings, "embeddings")
        if d != self.dim:
            raise MergeError(f"embeddings have dimension {d}, the centres {self.dim}")
        own = _owners(owners, m)
        bad = (own < 0) | (own >= self.n)
        if bad.any():
            r = int(np.argmax(bad))
            raise MergeError(f"image {first + r}: owner {int(own[r])} is not a centre row (0..{self.n - 1})")
        if not (np.isfinite(margin) and -2.0 <= margin <= 2.0):
            raise MergeError(f"margin must be a cosine difference in [-2, 2], got {margin}")
        if min_other is not None and not (np.isfinite(min_other) and -1.0 <= min_other <= 1.0):
            raise MergeError(f"min_other must be a cosine similarity in [-1, 1], got {min_other}")
        if k < 1 or max_k < k:
            raise MergeError(f"need 1 <= k <= max_k, got k={k}, max_k={max_k}")
        loo = np.ones(m, bool) if in_centre is None else np.asarray(in_centre)
        if loo.shape != (m,) or loo.dtype != bool:
            raise MergeError(f"in_centre must be ({m},) bools, got {loo.dtype} {loo.shape}")
        grp = np.arange(self.n) if groups is None else np.asarray(groups)
        if grp.shape != (self.n,) or grp.dtype.kind not in "iu":
            raise MergeError(f"groups must be ({self.n},) integers (a group per centre), got {grp.dtype} {grp.shape}")

        own_sim = np.empty(m, np.float32)
        other = np.full(m, -1, np.int64)
        other_sim = np.full(m, np.nan, np.float32)
        with _threads(self.threads):
            for lo in range(0, m, self.chunk):
                q = _rows(embeddings, lo, min(m, lo + self.chunk))
                o = own[lo : lo + len(q)]
                _check_unit(q, lambda r: f"image {first + r} (identity {self.keys[own[r]]!r})", lo)
                s = np.einsum("ij,ij->i", q, _rows(self.centres[o], 0, len(o)))
                own_sim[lo : lo + len(q)] = self._leave_one_out(s, o, loo[lo : lo + len(q)])
                j, sj = self._nearest_other(q, grp[o], grp, k, max_k)
                other[lo : lo + len(q)] = j
                other_sim[lo : lo + len(q)] = sj
        with np.errstate(invalid="ignore"):
            moved = (other >= 0) & (other_sim - own_sim >= np.float32(margin))
            if min_other is not None:
                moved &= other_sim >= np.float32(min_other)
        return Moved(other, own_sim, other_sim, moved, float(margin), min_other)

    def _leave_one_out(self, s: np.ndarray, owner: np.ndarray, loo: np.ndarray) -> np.ndarray:
        """``s`` (similarities to the own centres) with each face in ``loo`` taken out of
        its centre (float64 inside; NaN where nothing is left)."""
        if self.counts is None or not loo.any():
            return s.astype(np.float32)
        out = s.astype(np.float64)
        i = np.flatnonzero(loo)
        big = self.counts[owner[i]] * self.resultants[owner[i]]  # |S|: the centre's sum
        num = big * out[i] - 1.0
        den = np.sqrt(np.maximum(big * big - 2.0 * big * out[i] + 1.0, 0.0))
        alone = (self.counts[owner[i]] <= 1) | (den <= 1e-6 * np.maximum(big, 1.0))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[i] = np.where(alone, np.nan, num / den)
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def _nearest_other(self, q: np.ndarray, mine: np.ndarray, grp: np.ndarray, k: int, max_k: int):
        """For each row of ``q``: the best-scoring centre whose group is not ``mine`` among
        its k nearest (widened up to ``max_k`` for rows that found none), and its exact
        float32 similarity. Returns ``(rows, similarities)``, -1 and NaN where none was
        found. Memory: ``len(q) x max_k`` ids at most."""
        n = len(q)
        best = np.full(n, -1, np.int64)
        rows = np.arange(n)
        kk = min(k, self.n)
        while len(rows):
            _, ids = self._index.search(q[rows], kk)
            ok = (ids >= 0) & (grp[np.maximum(ids, 0)] != mine[rows][:, None])
            has = ok.any(1)
            first = np.argmax(ok, 1)  # faiss lists neighbours best first
            best[rows[has]] = ids[has, first[has]]
            rows = rows[~has]
            if kk >= min(max_k, self.n):
                break
            kk = min(2 * kk, max_k, self.n)
        sim = np.full(n, np.nan, np.float32)
        f = np.flatnonzero(best >= 0)
        sim[f] = np.einsum("ij,ij->i", q[f], _rows(self.centres[best[f]], 0, len(f)))
        return best, sim
