"""Merge across identities and datasets (issue 26 part 4): the dataset-level computation.

Pure functions on embeddings; the pipeline's decision step (after every shard of every
source is done) calls them in this order::

    cs = identity_centres(((s, name), emb) for ...)          # one identity at a time
    pairs = merge_candidates(cs.centres, cs.keys, threshold=DEFAULT_MERGE_THRESHOLD)
    groups = merge_groups(pairs, cs.centres, counts=cs.counts)
    dups = cross_identity_images(embeddings, owners, threshold=0.95)   # all images
    same = cross_identity_hashes(sha256s, owners)                      # exact copies
    labels = relabel(order, [g.keys for g in groups if not g.flagged])  # when applied

Identity keys are ``(source index, identity name)``: two sources may use the same names for
different people, and a name is never evidence of a merge, only embeddings are.

No function allocates an ``N x N`` matrix. Identity centres: k nearest neighbours from
faiss (``IndexFlatIP``, exact, up to ``FLAT_MAX_CENTRES``; ``ivf``/``hnsw`` above, see
:func:`merge_candidates`), queried ``chunk`` rows at a time. Images: a similarity join
inside faiss k-means cells, one ``block x block`` product at a time
(:func:`cross_identity_images`). Similarities are cosine similarities of L2-normalised
rows, recomputed in float32 for every reported pair (they do not depend on the index).
Measured on 2 cores (benchmarks/RESULTS-merge.md): 100k 512-d centres in about a minute,
1M image embeddings in one to two minutes, under 2 GB of RSS.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Optional, Sequence

import numpy as np

from facekit.errors import FacekitError

#: Merge threshold on the cosine similarity of two identity centres, calibrated on the
#: shared kz_celebs_112 identities (SCRFD-500m + arcface, MobileFaceNet 128-d, robust
#: centres), each of 25 identities split at random into two halves under two names (10
#: seeds; ``python benchmarks/bench_merge.py --calibrate DIR``, benchmarks/RESULTS-merge.md):
#: at 0.75 precision 1.00, recall 1.00 for halves of 20 or more crops, 0.92 for 10, 0.64
#: for 5 (a few crops make a noisy centre); different people reached 0.735. Another model
#: has another scale: calibrate it the same way.
DEFAULT_MERGE_THRESHOLD = 0.75
#: Cosine similarity above which two images count as the same picture (re-encoded, resized).
DEFAULT_DUPLICATE_THRESHOLD = 0.95
#: ``index="auto"``: exact ``IndexFlatIP`` up to this many rows, ``ivf`` above (an exact
#: search costs rows^2 x D multiply-adds: 100k x 512-d is ~1 minute on 2 cores).
FLAT_MAX_CENTRES = 200_000
FLAT_MAX_IMAGES = 20_000
_NORM_TOL = 1e-2  # float16 storage of unit rows keeps norms within ~1e-3


class MergeError(FacekitError, ValueError):
    """Bad input to a merge function (one line naming the identity, row or key)."""


# ---------------------------------------------------------------------------- centres


@dataclass
class IdentityCentres:
    """Identity centres in input order: ``centres`` ``(N, D)`` float32 unit rows, ``keys``
    the N identity keys, ``counts`` ``(N,)`` int64 embeddings per identity."""

    centres: np.ndarray
    keys: list
    counts: np.ndarray


def mean_centre(emb: np.ndarray) -> np.ndarray:
    """The mean of an identity's unit embeddings ``(n, D)`` (normalised by the caller)."""
    return emb.mean(axis=0, dtype=np.float64).astype(np.float32)


def default_centre() -> Callable[[np.ndarray], np.ndarray]:
    """The centre :func:`identity_centres` uses by default: the robust (trimmed-mean) centre
    of :func:`facekit.clean.identity.robust_centre` (a few strays do not move it) when that
    module is there, else :func:`mean_centre`."""
    try:
        from facekit.clean.identity import robust_centre
    except ImportError:  # pragma: no cover - part 3's module ships with this one
        return mean_centre

    def centre(emb: np.ndarray) -> np.ndarray:
        rc = robust_centre(emb)
        return getattr(rc, "centre", rc)

    return centre


def _check_unit(x: np.ndarray, what: Callable[[int], str], first: int = 0) -> None:
    """Raise MergeError for the first row of ``x`` that is not finite or not unit norm."""
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise MergeError(f"{what(first + int(np.argmax(bad)))}: embedding is not finite (NaN or inf)")
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float32))
    off = np.abs(norms - 1.0) > _NORM_TOL
    if off.any():
        r = int(np.argmax(off))
        raise MergeError(f"{what(first + r)}: embedding norm {norms[r]:.4g}, not L2-normalised")


def identity_centres(
    identities: Iterable[tuple[Hashable, np.ndarray]],
    centre: Optional[Callable[[np.ndarray], np.ndarray]] = None,
) -> IdentityCentres:
    """Centres of identities given one at a time.

    Args:
        identities: ``(key, embeddings)`` pairs, e.g. a generator reading one identity's
            ``(n, D)`` float16/float32 L2-normalised embeddings at a time; keys are
            hashable and unique (``(source index, identity name)`` in a pipeline).
        centre: ``(n, D) float32 -> (D,)`` vector, normalised here; default
            :func:`default_centre`.
    Returns:
        IdentityCentres in input order. Memory: the ``(N, D)`` float32 matrix, grown in
        place (``realloc``), plus the keys and counts; one identity's embeddings at a time.
    Raises:
        MergeError: a pair that is not ``(key, 2-d array)``, no embedding, a dimension
        that differs from the first identity's, a NaN/inf or non-unit row, a repeated key,
        or a centre that is zero or not finite; the message names the identity.
    """
    fn = centre or default_centre()
    buf: Optional[np.ndarray] = None
    keys: list = []
    seen: set = set()
    counts: list[int] = []
    n = 0
    for item in identities:
        try:
            key, emb = item
        except (TypeError, ValueError):
            raise MergeError(f"identity {len(keys)}: expected (key, embeddings), got {type(item).__name__}") from None
        emb = np.asarray(emb)
        if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0 or emb.dtype.kind != "f":
            raise MergeError(
                f"identity {key!r}: embeddings must be a non-empty (n, D) float array, got {emb.dtype} {emb.shape}"
            )
        try:
            again = key in seen
        except TypeError:
            raise MergeError(f"identity {len(keys)}: key {key!r} is not hashable") from None
        if again:
            raise MergeError(f"identity {key!r}: key given twice (keys are (source, identity) and unique)")
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if buf is None:
            buf = np.empty((1024, emb.shape[1]), np.float32)
        elif emb.shape[1] != buf.shape[1]:
            raise MergeError(
                f"identity {key!r}: embedding dimension {emb.shape[1]}, the first identity's is {buf.shape[1]}"
            )
        _check_unit(emb, lambda r, key=key: f"identity {key!r} row {r}")
        c = np.asarray(fn(emb), np.float32).reshape(-1)
        norm = float(np.linalg.norm(c))
        if c.shape[0] != buf.shape[1] or not np.isfinite(norm) or norm < 1e-6:
            raise MergeError(
                f"identity {key!r}: no centre (centre norm {norm:.3g}, shape {c.shape}): its embeddings cancel out"
            )
        if n == buf.shape[0]:
            buf.resize((n + max(1024, n // 2), buf.shape[1]), refcheck=False)  # in place when it can
        buf[n] = c / norm
        n += 1
        seen.add(key)
        keys.append(key)
        counts.append(emb.shape[0])
    if buf is None:
        raise MergeError("no identities given")
    buf.resize((n, buf.shape[1]), refcheck=False)
    return IdentityCentres(buf, keys, np.asarray(counts, np.int64))


# ---------------------------------------------------------------------------- search


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextmanager
def _threads(threads: Optional[int]):
    """faiss's OpenMP threads and, where threadpoolctl is installed (it comes with
    scikit-learn), numpy's BLAS threads set to ``threads`` (default the usable cores) for
    the block; the previous settings restored after it. Yields the faiss module."""
    import faiss

    n = usable_cores() if threads is None else int(threads)
    if n < 1:
        raise MergeError(f"threads must be >= 1, got {threads}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - numpy's BLAS keeps its own thread count
        blas = nullcontext()
    else:
        blas = threadpool_limits(n, user_api="blas")
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        with blas:
            yield faiss
    finally:
        faiss.omp_set_num_threads(old)


def _rows(x, lo: int, hi: int) -> np.ndarray:
    return np.ascontiguousarray(x[lo:hi], dtype=np.float32)


def _build_index(faiss, x, kind, nlist, nprobe, ef_search, chunk, seed, check):
    """An approximate faiss inner-product index (``ivf``, ``hnsw``) over the rows of ``x``,
    added ``chunk`` rows at a time after ``check(rows, first_row)``. Returns ``(index,
    margin)``: how far an index score may sit below the exact float32 similarity."""
    n, d = x.shape
    if kind == "hnsw":
        index, margin = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT), 1e-4
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = ef_search
    elif kind == "ivf":
        nlist = nlist or max(1, min(n // 39, int(2 * np.sqrt(n))))
        if not 1 <= nlist <= n:
            raise MergeError(f"nlist must be in 1..{n} (the rows), got {nlist}")
        quantizer = faiss.IndexFlatIP(d)  # the index keeps a reference (faiss's wrapper)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.niter = 10
        index.cp.seed = seed
        index.cp.spherical = True
        sample = min(n, max(nlist * 40, 10_000))
        pick = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
        train = np.ascontiguousarray(x[pick], dtype=np.float32)
        bad = ~np.isfinite(train).all(axis=1)
        if bad.any():  # name the row before faiss's k-means sees it
            r = int(pick[np.argmax(bad)])
            check(_rows(x, r, r + 1), r)
        index.train(train)
        del train
        index.nprobe = min(nprobe, nlist)
        margin = 1e-2  # float16 storage
    else:
        raise MergeError(f"index must be auto, flat, ivf or hnsw, got {kind!r}")
    for lo in range(0, n, chunk):
        rows = _rows(x, lo, min(n, lo + chunk))
        check(rows, lo)
        index.add(rows)
    return index, margin


def _search(index, q: np.ndarray, k: int, max_k: int, cut: float):
    """k nearest neighbours of ``q`` (``k`` includes the query itself), widened to at most
    ``max_k`` for rows whose last neighbour still scores >= ``cut``. Returns ``(rounds,
    full)``: ``(rows of q, sim, ids)`` per search, and the rows still full at ``max_k``."""
    n_index = index.ntotal
    k = min(k, n_index)
    sim, ids = index.search(q, k)
    rounds = [(np.arange(len(q)), sim, ids)]
    rows = np.flatnonzero((sim[:, -1] >= cut) & (ids[:, -1] >= 0)) if k < n_index else np.empty(0, np.int64)
    while len(rows) and k < min(max_k, n_index):
        k = min(2 * k, max_k, n_index)
        sim, ids = index.search(q[rows], k)
        rounds.append((rows, sim, ids))
        full = (sim[:, -1] >= cut) & (ids[:, -1] >= 0)
        rows = rows[full] if k < n_index else rows[:0]
    return rounds, rows


def _exact_sim(x, a: np.ndarray, b: np.ndarray, step: int = 1 << 18) -> np.ndarray:
    """float32 dot products of rows ``a`` and ``b`` of ``x``, ``step`` pairs at a time."""
    out = np.empty(len(a), np.float32)
    for lo in range(0, len(a), step):
        xa = np.asarray(x[a[lo : lo + step]], np.float32)
        xb = np.asarray(x[b[lo : lo + step]], np.float32)
        out[lo : lo + step] = np.einsum("ij,ij->i", xa, xb)
    return out


def _unique_pairs(parts_a: list, parts_b: list, n: int) -> tuple[np.ndarray, np.ndarray]:
    if not parts_a:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    a = np.concatenate(parts_a).astype(np.int64)
    b = np.concatenate(parts_b).astype(np.int64)
    code = np.unique(np.minimum(a, b) * n + np.maximum(a, b))  # sorted: by (i, j)
    return code // n, code % n


def _knn_pairs(x, n, threshold, k, max_k, threads, index, nlist, nprobe, ef_search, chunk, seed, check):
    """Pairs ``(i < j)`` of rows of ``x`` among each other's ``k`` nearest neighbours with
    exact similarity >= threshold. Returns ``(i, j, sim, saturated)``."""
    if not (-1.0 <= threshold <= 1.0):
        raise MergeError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
    if k < 1 or max_k < k:
        raise MergeError(f"need 1 <= k <= max_k, got k={k}, max_k={max_k}")
    if chunk < 1:
        raise MergeError(f"chunk must be >= 1, got {chunk}")
    pa: list = []
    pb: list = []
    sat: list = []

    def collect(idx, q, lo, cut):
        rounds, full = _search(idx, q, k + 1, max_k + 1, cut)
        for rows, sim, ids in rounds:
            qi = np.broadcast_to((rows + lo)[:, None], ids.shape)
            m = (sim >= cut) & (ids >= 0) & (ids != qi)
            pa.append(qi[m])
            pb.append(ids[m])
        sat.append(full + lo)

    with _threads(threads) as faiss:
        if index == "flat":
            # Exact and triangular: blocks from the last one; block [lo, hi) is added, then
            # searched against rows [lo, n), so each pair i < j is scored once, from i's
            # side (half the multiply-adds of searching every row against all).
            flat = faiss.IndexFlatIP(x.shape[1])
            idx = faiss.IndexIDMap(flat)
            for lo in reversed(range(0, n, chunk)):
                q = _rows(x, lo, min(n, lo + chunk))
                check(q, lo)
                idx.add_with_ids(q, np.arange(lo, lo + len(q), dtype=np.int64))
                collect(idx, q, lo, threshold - 1e-4)
            del idx, flat
        else:
            idx, margin = _build_index(faiss, x, index, nlist, nprobe, ef_search, chunk, seed, check)
            for lo in range(0, n, chunk):
                collect(idx, _rows(x, lo, min(n, lo + chunk)), lo, threshold - margin)
            del idx
    a, b = _unique_pairs(pa, pb, n)
    pa.clear()
    pb.clear()
    s = _exact_sim(x, a, b)
    m = s >= np.float32(threshold)
    return a[m], b[m], s[m], np.unique(np.concatenate(sat).astype(np.int64))


# ---------------------------------------------------------------------------- identities


@dataclass
class MergePairs:
    """Identity pairs above a merge threshold: rows ``i < j`` of the centre matrix, their
    cosine ``similarity`` (float32), sorted by ``(i, j)``; ``keys`` the centres' keys;
    ``saturated``: rows whose ``max_k`` nearest neighbours were all above the threshold
    (they may have more pairs than reported: review them, or raise ``max_k``)."""

    i: np.ndarray
    j: np.ndarray
    similarity: np.ndarray
    keys: Sequence
    threshold: float
    saturated: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def __len__(self) -> int:
        return len(self.i)

    def rows(self):
        """``(key_i, key_j, similarity)`` tuples in order (for ``decisions.tsv``)."""
        for a, b, s in zip(self.i.tolist(), self.j.tolist(), self.similarity.tolist()):
            yield self.keys[a], self.keys[b], s


def _check_matrix(x, name: str) -> tuple[int, int]:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None or len(shape) != 2 or shape[0] == 0 or shape[1] == 0 or dtype is None or dtype.kind != "f":
        raise MergeError(f"{name} must be a non-empty (N, D) float array, got {dtype} {shape}")
    return int(shape[0]), int(shape[1])


def merge_candidates(
    centres: np.ndarray,
    keys: Optional[Sequence] = None,
    threshold: float = DEFAULT_MERGE_THRESHOLD,
    k: int = 10,
    *,
    max_k: int = 320,
    threads: Optional[int] = None,
    index: str = "auto",
    nlist: Optional[int] = None,
    nprobe: int = 16,
    ef_search: int = 128,
    chunk: int = 8192,
    seed: int = 0,
) -> MergePairs:
    """Identity pairs whose centres' cosine similarity is >= ``threshold`` (the same person
    under two names, or in two datasets).

    Each centre is searched for its ``k`` nearest other centres; a pair found from either
    side is reported once (``i < j``) with its exact float32 similarity, pairs sorted by
    ``(i, j)`` (an order that does not depend on float rounding). A centre whose ``k``
    neighbours are all above the threshold is searched again with 2k, 4k, ... up to
    ``max_k``; one still full at ``max_k`` is listed in ``saturated``.

    Index (``index``): ``flat`` is ``faiss.IndexFlatIP``, exact (``N^2 D / 2``
    multiply-adds: each block of rows is searched against itself and the rows after it;
    100k x 512-d in about a minute on 2 cores); ``ivf`` an ``IndexIVFScalarQuantizer``
    (float16 storage, spherical k-means on a seeded sample, ``nlist`` lists, default
    ``2 sqrt(N)``, ``nprobe`` searched per query): approximate, for millions of centres;
    ``hnsw`` an ``IndexHNSWFlat`` (M 32, ``ef_search``): approximate, more memory and a
    slow build, fast queries; ``auto``: flat up to ``FLAT_MAX_CENTRES`` rows, else ivf.
    Approximate indexes can miss pairs (raise ``nprobe``/``ef_search`` for recall), never
    report a pair below the threshold. The same input, seed and threads give the same
    result (a rerun of the decision step over kept shards repeats it).

    Args:
        centres: ``(N, D)`` float32/float16 unit rows (:func:`identity_centres`).
        keys: the N identity keys (default ``range(N)``), carried into the result.
        threshold: cosine similarity; default :data:`DEFAULT_MERGE_THRESHOLD`.
        k: neighbours per centre in the first search. threads: faiss (OpenMP) threads,
            default the usable cores; restored afterwards. chunk: queries per search call
            (memory: ``chunk x max_k`` results). seed: IVF training sample and k-means.
    Raises:
        MergeError: not a 2-d float matrix, NaN/inf or non-unit rows (names the row and
        key), keys of another length, a threshold outside [-1, 1], bad k/threads/index.
    """
    n, _ = _check_matrix(centres, "centres")
    keys = list(range(n)) if keys is None else keys
    if len(keys) != n:
        raise MergeError(f"{len(keys)} keys for {n} centres")
    kind = ("flat" if n <= FLAT_MAX_CENTRES else "ivf") if index == "auto" else index

    def check(q, lo):
        _check_unit(q, lambda r: f"centre {r} (identity {keys[r]!r})", lo)

    a, b, s, sat = _knn_pairs(
        centres, n, threshold, k, max_k, threads, kind, nlist, nprobe, ef_search, chunk, seed, check
    )
    return MergePairs(a, b, s, keys, float(threshold), sat)


@dataclass
class MergeGroup:
    """Identities joined by merge pairs (a connected component of the pair graph).

    ``members``: centre rows, ascending; ``keys`` their keys; ``pairs``: positions in the
    MergePairs of the evidence inside the group; ``to_centre``: each member's cosine
    similarity to the group's centre (mean of the members' centres weighted by their
    counts); ``flagged``: some member is below ``min_to_centre`` (a chain a~b~c whose ends
    are different people): review it, do not merge it blindly; ``weak``: those members."""

    members: np.ndarray
    keys: list
    pairs: np.ndarray
    to_centre: np.ndarray
    min_pair: float
    flagged: bool
    weak: np.ndarray


def merge_groups(
    pairs: MergePairs,
    centres: np.ndarray,
    counts: Optional[np.ndarray] = None,
    min_to_centre: Optional[float] = None,
) -> list[MergeGroup]:
    """Merge groups from merge pairs: union-find over the pairs, so a chain a~b, b~c is one
    group {a, b, c}; groups in order of their first member.

    Guard against chained giant groups: a group is ``flagged`` when a member's similarity
    to the group centre is below ``min_to_centre`` (default the pairs' threshold). A group
    whose members are pairwise above the threshold is never flagged (each member then has
    similarity >= threshold to any positively weighted mean of them), so only chains are,
    and only chains long enough to drift: three identities a~b~c at 0.8 with a.c = 0.64
    all stay about 0.9 from their centre and are one unflagged group (``min_pair`` and
    ``to_centre`` are there for review; proposing instead of applying merges is the
    decision step's choice).

    Args:
        pairs: :func:`merge_candidates` result. centres: the same ``(N, D)`` unit rows.
        counts: embeddings per identity (weights of the group centre); default equal.
        min_to_centre: the lower bound; default ``pairs.threshold``.
    Returns:
        MergeGroup list; memory: the identities in pairs, not N.
    """
    n = centres.shape[0]
    if counts is not None:
        counts = np.asarray(counts)
        if counts.shape != (n,):
            raise MergeError(f"{len(counts)} counts for {n} centres")
    if len(pairs) and int(pairs.j.max()) >= n:
        raise MergeError(f"pairs name centre {int(pairs.j.max())}, the centres have {n} rows")
    bound = pairs.threshold if min_to_centre is None else float(min_to_centre)
    parent: dict[int, int] = {}

    def find(v: int) -> int:
        parent.setdefault(v, v)
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    for a, b in zip(pairs.i.tolist(), pairs.j.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comp: dict[int, list[int]] = {}
    for v in sorted(parent):
        comp.setdefault(find(v), []).append(v)
    roots = np.array([find(a) for a in pairs.i.tolist()], np.int64)
    order = np.argsort(roots, kind="stable")
    starts = np.searchsorted(roots[order], sorted(comp))
    groups = []
    for g, root in enumerate(sorted(comp)):
        members = np.array(comp[root], np.int64)
        ev = order[starts[g] : starts[g + 1] if g + 1 < len(starts) else len(order)]
        w = np.ones(len(members)) if counts is None else counts[members].astype(np.float64)
        c = (np.asarray(centres[members], np.float64) * w[:, None]).sum(0)
        c /= max(np.linalg.norm(c), 1e-12)
        to = (np.asarray(centres[members], np.float64) @ c).astype(np.float32)
        weak = members[to < bound]
        groups.append(
            MergeGroup(
                members, [pairs.keys[m] for m in members.tolist()], np.sort(ev), to,
                float(pairs.similarity[ev].min()), bool(len(weak)), weak,
            )
        )
    return groups


# ---------------------------------------------------------------------------- images


@dataclass
class CrossPairs:
    """Images under two identities: image rows ``a < b`` with ``owners[a] != owners[b]``,
    their cosine ``similarity`` (1.0 for equal content hashes), sorted by ``(a, b)``;
    ``saturated``: images that had more than ``k`` partners (the rest were left out)."""

    a: np.ndarray
    b: np.ndarray
    similarity: np.ndarray
    saturated: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def __len__(self) -> int:
        return len(self.a)


def _owners(owners, n: int) -> np.ndarray:
    o = np.asarray(owners)
    if o.shape != (n,) or o.dtype.kind not in "iu":
        raise MergeError(f"owners must be ({n},) integers (identity index per image), got {o.dtype} {o.shape}")
    return o.astype(np.int64, copy=False)


def _cap_per_row(qi: np.ndarray, mi: np.ndarray, sim: np.ndarray, k: int):
    """Of the hits ``(qi, mi)`` of a block (``qi`` ascending), at most the ``k`` with the
    highest ``sim`` per ``qi``."""
    if len(qi) <= k or np.bincount(qi).max() <= k:
        return qi, mi
    o = np.lexsort((-sim, qi))
    qi, mi = qi[o], mi[o]
    first = np.r_[True, qi[1:] != qi[:-1]]
    rank = np.arange(len(qi)) - np.maximum.accumulate(np.where(first, np.arange(len(qi)), 0))
    return qi[rank < k], mi[rank < k]


def cross_identity_images(
    embeddings: np.ndarray,
    owners: Sequence[int] | np.ndarray,
    threshold: float = DEFAULT_DUPLICATE_THRESHOLD,
    k: int = 10,
    *,
    threads: Optional[int] = None,
    nlist: Optional[int] = None,
    nprobe: int = 8,
    chunk: int = 65536,
    block: int = 4096,
    seed: int = 0,
) -> CrossPairs:
    """Images that appear under two identities: pairs of images of different owners whose
    embeddings' cosine similarity is >= ``threshold`` (a re-encoded, resized or re-cropped
    copy: 0.95), at most the ``k`` most similar per image and side (``saturated``: images
    that had more).

    A similarity join in cells: faiss k-means (spherical, ``nlist`` cells, trained on a
    seeded sample) puts each image in its nearest cell and lists its ``nprobe`` nearest
    cells; each cell's images are compared by matrix products (BLAS, blocks of ``block``
    rows) with every image that lists the cell. A pair is found when one image's cell is
    among the other's ``nprobe``: near-duplicates are close, so they share cells (raise
    ``nprobe`` for recall). ``nlist`` default: 1 (every pair compared: exact) up to
    ``FLAT_MAX_IMAGES`` images, else ``sqrt(nprobe M)`` (assigning images to cells then
    costs as much as comparing inside them).

    Streaming: ``embeddings`` is read ``chunk`` rows at a time to check and assign them, then
    gathered a cell at a time, so it may be a ``np.memmap`` of float16 rows; memory is the
    cell lists (``M x nprobe`` int64), one block product (``block^2`` float32) and the pairs.

    Args:
        embeddings: ``(M, D)`` float16/float32 L2-normalised rows.
        owners: ``(M,)`` identity index of each image (e.g. its identity's row in
            :class:`IdentityCentres`: identities of different sources never share one).
        threads: faiss and BLAS threads (faiss's are set and restored; numpy's BLAS keeps
            its own setting); default the usable cores.
    Returns:
        CrossPairs: rows ``a < b``, exact float32 similarity, sorted by ``(a, b)``.
    Raises:
        MergeError: not a 2-d float matrix, NaN/inf or non-unit rows (names the image row
        and its identity), owners of another shape or not integers, bad threshold/k/nlist.
    """
    m, d = _check_matrix(embeddings, "embeddings")
    own = _owners(owners, m)
    if not (-1.0 <= threshold <= 1.0):
        raise MergeError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
    if k < 1 or nprobe < 1 or chunk < 1 or block < 1:
        raise MergeError(f"k, nprobe, chunk and block must be >= 1, got {k}, {nprobe}, {chunk}, {block}")
    nlist = int(nlist or (1 if m <= FLAT_MAX_IMAGES else np.sqrt(nprobe * m)))
    if not 1 <= nlist <= m:
        raise MergeError(f"nlist must be in 1..{m} (the images), got {nlist}")
    nprobe = min(nprobe, nlist)

    def check(q, lo):
        _check_unit(q, lambda r: f"image {r} (identity {own[r]})", lo)

    probes = np.zeros((m, nprobe), np.int64)
    with _threads(threads) as faiss:
        km = None
        if nlist > 1:
            pick = np.sort(np.random.default_rng(seed).choice(m, min(m, max(20 * nlist, 10_000)), replace=False))
            sample = np.ascontiguousarray(embeddings[pick], np.float32)
            bad = ~np.isfinite(sample).all(axis=1)
            if bad.any():  # name the row before faiss's k-means sees it
                r = int(pick[np.argmax(bad)])
                check(_rows(embeddings, r, r + 1), r)
            km = faiss.Kmeans(d, nlist, niter=10, spherical=True, seed=seed, min_points_per_centroid=1)
            km.train(sample)
            del sample
        for lo in range(0, m, chunk):
            rows = _rows(embeddings, lo, min(m, lo + chunk))
            check(rows, lo)
            if km is not None:
                probes[lo : lo + len(rows)] = km.index.search(rows, nprobe)[1]
        del km
        cell = probes[:, 0]
        by_cell = np.argsort(cell, kind="stable")  # images in their own cell
        cell_start = np.searchsorted(cell[by_cell], np.arange(nlist + 1))
        flat = probes.reshape(-1)
        by_probe = np.argsort(flat, kind="stable")  # (image, probe) entries by probed cell
        probe_start = np.searchsorted(flat[by_probe], np.arange(nlist + 1))
        del probes, flat
        cut = np.float32(threshold - 1e-4)
        pa: list = []
        pb: list = []
        for c in range(nlist):
            mem = by_cell[cell_start[c] : cell_start[c + 1]]  # ascending rows (stable sorts)
            qry = by_probe[probe_start[c] : probe_start[c + 1]] // nprobe
            for mlo in range(0, len(mem), block):
                mb = mem[mlo : mlo + block]
                xm = np.asarray(embeddings[mb], np.float32)
                for qlo in range(0, len(qry), block):
                    if nlist == 1 and qlo < mlo:  # one cell: its blocks below the diagonal suffice
                        continue
                    qb = qry[qlo : qlo + block]
                    sim = np.asarray(embeddings[qb], np.float32) @ xm.T
                    qi, mi = np.nonzero(sim >= cut)
                    other = own[qb[qi]] != own[mb[mi]]  # same identity: part 3's duplicate
                    qi, mi = _cap_per_row(qi[other], mi[other], sim[qi[other], mi[other]], k)
                    pa.append(qb[qi])
                    pb.append(mb[mi])
    a, b = _unique_pairs(pa, pb, m)
    del pa, pb
    s = _exact_sim(embeddings, a, b)
    keep = s >= np.float32(threshold)
    a, b, s = a[keep], b[keep], s[keep]
    # at most k partners per image: a pair stays when it is among the k most similar of
    # either of its images
    rank = np.full(len(a), k, np.int64)
    sat: list = []
    for end in (a, b):
        o = np.lexsort((-s, end))
        e = end[o]
        first = np.r_[True, e[1:] != e[:-1]]
        r = np.arange(len(e)) - np.maximum.accumulate(np.where(first, np.arange(len(e)), 0))
        rank[o] = np.minimum(rank[o], r)
        sat.append(e[r >= k])
    keep = rank < k
    return CrossPairs(a[keep], b[keep], s[keep], np.unique(np.concatenate(sat)))


def cross_identity_hashes(hashes: Sequence[bytes | str], owners: Sequence[int] | np.ndarray) -> CrossPairs:
    """Exact copies under two identities: images with equal content hash (SHA-256 of the
    image bytes, raw 32 bytes or hex) and different owners. For each hash, every image of
    another owner than the hash's first image (lowest row) is paired with that first image
    (pairs ``a < b``, similarity 1.0): linear in the copies, however many there are.
    Copies inside one identity are part 3's ``duplicate``, not reported here."""
    n = len(hashes)
    own = _owners(owners, n)
    if n == 0:
        e = np.empty(0, np.int64)
        return CrossPairs(e, e, np.empty(0, np.float32))
    raw = []
    for k, x in enumerate(hashes):
        try:
            d = bytes.fromhex(x) if isinstance(x, str) else bytes(x)
        except (TypeError, ValueError) as e:
            d = e
        if not isinstance(d, bytes) or len(d) != 32:
            raise MergeError(f"hashes[{k}]: not a SHA-256 digest (32 bytes or 64 hex digits): {x!r:.80}")
        raw.append(d)
    h = np.array(raw, dtype="S32")
    order = np.lexsort((np.arange(n), h))
    hs = h[order]
    first = np.r_[True, hs[1:] != hs[:-1]]
    head = order[np.maximum.accumulate(np.where(first, np.arange(n), 0))]
    m = own[order] != own[head]
    a, b = head[m], order[m]
    o = np.lexsort((b, a))
    return CrossPairs(a[o], b[o], np.ones(len(o), np.float32))


# ---------------------------------------------------------------------------- labels


@dataclass
class Relabel:
    """New contiguous labels: ``labels[s][p]`` is the new label of source ``s``'s ``p``-th
    identity; ``count`` = M labels ``0..M-1``; ``heads[L]``: ``(source, position)`` of the
    identity whose place label ``L`` takes (a merged group's first member), ``(M, 2)`` int64."""

    labels: list[np.ndarray]
    count: int
    heads: np.ndarray


def relabel(order: Sequence[Sequence[str]], merges: Iterable[Iterable[tuple[int, Any]]]) -> Relabel:
    """New labels after merging identities across sources.

    Rule: lay the identities out in source order, source 0's identities in their order
    (its labels), then source 1's, and so on. Each merged group takes the position of its
    first member in that layout (lowest source, then lowest position); its other members
    drop out; every other identity keeps its relative order; labels are then numbered
    ``0..M-1`` along the layout. So with no merges the labels are ``0..N-1`` in layout
    order, and a merge only removes the later members' positions.

    Identity keys are ``(source index, identity name)``: the same name in two sources is two
    identities (different people unless a merge says otherwise).

    Args:
        order: per source, its identity names in label order (names unique in a source).
        merges: groups of keys to merge (disjoint; a group of one changes nothing).
    Raises:
        MergeError: a repeated name in a source, a key naming no identity (unknown source
            or name), a key in two groups.
    """
    sizes = [len(names) for names in order]
    offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    wanted: dict[int, dict[Any, int]] = {}  # source -> name -> group
    groups = []
    for g, group in enumerate(merges):
        keys = list(group)
        for key in keys:
            try:
                s, name = key
            except (TypeError, ValueError):
                raise MergeError(f"merge group {g}: key {key!r} is not (source index, identity)") from None
            if not isinstance(s, (int, np.integer)) or not 0 <= s < len(order):
                raise MergeError(f"merge group {g}: key {key!r}: no source {s!r} (sources 0..{len(order) - 1})")
            prev = wanted.setdefault(int(s), {}).setdefault(name, g)
            if prev != g:
                raise MergeError(f"identity {key!r} is in merge groups {prev} and {g}")
        groups.append(keys)
    pos: dict[tuple[int, Any], int] = {}
    for s, names in enumerate(order):
        want = wanted.get(s, {})
        seen: set = set()
        for p, name in enumerate(names):
            if name in seen:
                raise MergeError(f"source {s}: identity {name!r} listed twice")
            seen.add(name)
            if name in want:
                pos[(s, name)] = int(offsets[s]) + p
    absorbed = np.zeros(int(offsets[-1]), bool)
    target = {}
    for g, keys in enumerate(groups):
        missing = [k for k in keys if (int(k[0]), k[1]) not in pos]
        if missing:
            raise MergeError(f"merge group {g}: identity {missing[0]!r} is not in source {missing[0][0]}")
        ps = sorted(pos[(int(k[0]), k[1])] for k in keys)
        for p in ps[1:]:
            absorbed[p] = True
            target[p] = ps[0]
    new = np.cumsum(~absorbed, dtype=np.int64) - 1
    for p, head in target.items():
        new[p] = new[head]
    heads_g = np.flatnonzero(~absorbed)
    src = np.searchsorted(offsets, heads_g, side="right") - 1
    heads = np.stack([src, heads_g - offsets[src]], axis=1).astype(np.int64)
    labels = [new[offsets[s] : offsets[s + 1]].copy() for s in range(len(order))]
    return Relabel(labels, len(heads_g), heads)
