"""Clean within an identity (issue 26 part 3): label noise and two-people identities.

Pure functions over one identity's embeddings (``(n, D)`` rows, L2-normalised by the
recognizer; rows are normalised again here), in the identity's source order. A stage calls
them per shard, one identity at a time::

    dup = find_duplicates(emb, byte_digests=..., pixel_digests=...)   # duplicates.py, first
    rep = clean_identity(emb, exclude=dup.duplicate, norms=norms)    # norms: before L2
    rep.label_noise, rep.similarity, rep.mixed, rep.cluster        # per face / identity
    names = mixed_identity_names(identity, rep, mode="split")        # keep | split | cut

Algorithms (measured on the shared kz_celebs_112 identities, benchmarks/eval_cleaning.py):

- **Robust centre** (:func:`robust_centre`): the geometric median on the sphere
  (Weiszfeld: each face weighs 1 / its distance to the centre). With 10% strays added to
  each real identity it moves by 1 - cos = 0.0009 (random strays; the mean 0.0024) and
  0.0020 (all from one other person; the mean 0.0052, a 20%-trimmed mean 0.0027), and ranks
  the strays below the identity's faces at least as well as those (AUC 0.879 against
  0.874-0.880; with 30% from one person 0.835 against the mean's 0.810, the trimmed mean's
  0.824).
- **Label noise** (:func:`find_outliers`): a face whose cosine similarity to the robust
  centre is below ``threshold``. The similarity of a face is taken to the centre without
  that face (same scale for small and large identities).
- **Mixed identity** (:func:`find_mixed`): an identity that is two people. The faces with
  the smallest embedding norms (when the norms are given: 10%) and faces whose
  neighbourhood in the identity is sparse (mean similarity to their ``knn`` nearest faces
  in the lowest ``1 - core`` share: blurred faces, strays) are left out, the rest split in
  two by spherical 2-means (k-means++ restarts from a fixed seed; of the distinct splits
  found, the most separated one whose smaller cluster is big enough); the identity is
  mixed when the two clusters' centres are less similar than ``max_similarity`` and the
  smaller cluster holds at least ``min_fraction`` of the core faces and ``min_faces``
  faces. Every face is then given to the nearer centre; the larger cluster is cluster 0
  ("main"). The density filter favours the larger group: on synthetic isotropic clusters a
  second person is found from about 25% of the faces (20%: half the time); on the real
  identities, second people of 10-15% are.
  A distance to the identity's centre cannot find this case: when the folder is half
  another person, the centre lies between the two or on the other person.

Nothing here allocates more than ``block x block`` similarities at once (2048 by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from facekit.errors import FacekitError

LABEL_NOISE = "label_noise"
MIXED_IDENTITY = "mixed_identity"

#: Cosine similarity to the identity's robust centre below which a face is label noise,
#: calibrated on kz_celebs_112 (SCRFD-500m + arcface, MobileFaceNet 128-d, flip-summed
#: embeddings; benchmarks/eval_cleaning.py): with 5% of each identity moved elsewhere it
#: finds 74% of the moved faces and 93% of the faces judged by eye not to be the named
#: person; of what it flags, 55% is one or the other (23% the moved faces alone: the data's
#: own noise and its hard faces, profiles, blur, sunglasses, are the rest). The best F1
#: of the thresholds 0.15-0.40, and select: identity's flag_below. A model with another
#: similarity scale needs its own.
DEFAULT_OUTLIER_THRESHOLD = 0.30
#: Mixed identity: the two clusters' centres are less similar than this (below
#: facekit.clean.merge's merge threshold, 0.75, where different people of the shared
#: identities reached at most 0.735: two clusters this far apart would not be merged back
#: as one person).
DEFAULT_MIXED_MAX_SIMILARITY = 0.60
#: Mixed identity: the smaller cluster holds at least this share of the core faces (the
#: data's own second people, e.g. a singer's wife in his folder, are 10-15% of a folder)...
DEFAULT_MIXED_MIN_FRACTION = 0.10
#: ... and at least this many faces.
DEFAULT_MIXED_MIN_FACES = 3
#: Mixed identity: the share of faces with the smallest embedding norms left out of the
#: clustering (when the norms are given).
DEFAULT_LOW_QUALITY = 0.10
BLOCK = 2048

MixedMode = Literal["keep", "split", "cut"]


class CleanError(FacekitError, ValueError):
    """Bad input to a cleaning function (one line naming the row or argument)."""


def unit_rows(emb, what: str = "embeddings") -> np.ndarray:
    """``emb`` as float32 ``(n, D)`` unit rows. Raises :class:`CleanError` for an array that
    is not 2-d, a row with NaN/inf, or a zero row (naming the first such row)."""
    x = np.asarray(emb, dtype=np.float32)
    if x.ndim != 2:
        raise CleanError(f"{what}: expected an (n, D) array, got shape {x.shape}")
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        raise CleanError(f"{what}: row {int(np.argmax(bad))} is not finite (NaN or inf)")
    norm = np.linalg.norm(x, axis=1)
    if (norm == 0).any():
        raise CleanError(f"{what}: row {int(np.argmax(norm == 0))} is all zeros")
    return x / norm[:, None]


def _mask(mask, n: int, what: str) -> np.ndarray:
    if mask is None:
        return np.zeros(n, bool)
    m = np.asarray(mask, bool)
    if m.shape != (n,):
        raise CleanError(f"{what}: expected {n} flags, got shape {m.shape}")
    return m


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


# --------------------------------------------------------------------------- centre


@dataclass
class RobustCentre:
    """An identity's robust centre: ``centre`` ``(D,)`` unit vector, ``unit(sum(weights[i] *
    x[i]))``; ``weights`` ``(n,)`` each face's share (sum 1; 0 for excluded faces: far faces
    weigh less), ``iterations`` taken."""

    centre: np.ndarray
    weights: np.ndarray
    iterations: int


def robust_centre(emb, *, max_iter: int = 50, tol: float = 1e-7, exclude=None) -> RobustCentre:
    """Geometric median of one identity's embeddings, on the unit sphere.

    Weiszfeld's iteration: each face weighs ``1 / |x - c|`` (its distance to the current
    centre) and the centre is the normalised weighted mean, from the plain mean, until it
    moves by less than ``tol`` (``1 - cos``) or ``max_iter`` times. A face's pull on the
    centre is bounded whatever its distance (breakdown point 50%): a few strays barely move
    it, a coherent group of strays moves it less than the mean, the trimmed mean or the
    medoid (benchmarks/eval_cleaning.py).

    Args:
        emb: ``(n, D)`` embeddings, n >= 1.
        exclude: ``(n,)`` bool, faces not to use (e.g. duplicates); their weight is 0.
    Raises:
        CleanError: bad embeddings, or every face excluded.
    """
    x = unit_rows(emb)
    use = ~_mask(exclude, len(x), "exclude")
    if not use.any():
        raise CleanError("robust_centre: every face is excluded")
    xs = x[use]
    centre = _unit(xs.sum(0))
    it = 0
    for it in range(1, max_iter + 1):
        w = 1.0 / np.maximum(np.linalg.norm(xs - centre, axis=1), 1e-6)
        new = _unit(np.einsum("n,nd->d", w, xs))
        moved = 1.0 - float(new @ centre)
        centre = new
        if moved < tol:
            break
    weights = np.zeros(len(x), np.float64)
    weights[use] = w / w.sum()
    return RobustCentre(centre.astype(np.float32), weights, it)


def centre_similarity(emb, rc: RobustCentre) -> np.ndarray:
    """Cosine similarity of every face to the robust centre ``rc``; for a face with a
    weight in it the centre is taken without that face (leave-one-out: ``unit(sum_j w_j x_j
    - w_i x_i)``), so a face's own weight does not lift its score (it would by ~1/n: much in
    small identities). A face that is the only one with weight gets NaN (nothing to compare
    it with)."""
    x = unit_rows(emb)
    w = np.asarray(rc.weights, np.float64)
    total = np.einsum("n,nd->d", w, x)
    sim = np.einsum("nd,d->n", x, _unit(total)).astype(np.float64)
    m = np.flatnonzero(w > 0)
    rest = total[None, :] - w[m, None] * x[m]
    norm = np.linalg.norm(rest, axis=1)
    alone = norm <= 1e-9 * max(float(np.linalg.norm(total)), 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim[m] = np.where(alone, np.nan, (x[m] * rest).sum(1) / norm)
    return sim.astype(np.float32)


@dataclass
class Outliers:
    """Label-noise check of one identity: ``centre`` (:class:`RobustCentre`),
    ``similarity`` ``(n,)`` float32 to it (NaN for excluded faces), ``outlier`` ``(n,)`` bool
    (similarity below ``threshold``)."""

    centre: RobustCentre
    similarity: np.ndarray
    outlier: np.ndarray
    threshold: float


def find_outliers(emb, threshold: float = DEFAULT_OUTLIER_THRESHOLD, *, exclude=None) -> Outliers:
    """Faces of one identity less similar than ``threshold`` to its robust centre
    (:func:`robust_centre`, :func:`centre_similarity`). Excluded faces are neither used
    nor judged (similarity NaN, never outliers); an identity with one usable face has no
    outliers. Raises :class:`CleanError` on bad input."""
    x = unit_rows(emb)
    ex = _mask(exclude, len(x), "exclude")
    rc = robust_centre(x, exclude=ex)
    sim = centre_similarity(x, rc)
    sim[ex] = np.nan
    with np.errstate(invalid="ignore"):
        out = (sim < threshold) & ~ex
    return Outliers(rc, sim, out, float(threshold))


# --------------------------------------------------------------------------- mixed


def knn_density(emb, k: int, *, block: int = BLOCK) -> np.ndarray:
    """Mean cosine similarity of each row to its ``k`` most similar other rows, computed in
    ``block x block`` tiles (``k`` is clipped to ``n - 1``; n == 1 gives NaN)."""
    x = unit_rows(emb)
    n = len(x)
    k = min(int(k), n - 1)
    if k < 1:
        return np.full(n, np.nan, np.float32)
    out = np.empty(n, np.float32)
    for a in range(0, n, block):
        rows = x[a : a + block]
        best = np.full((len(rows), k), -np.inf, np.float32)
        for c in range(0, n, block):
            s = rows @ x[c : c + block].T
            if c <= a < c + block or a <= c < a + len(rows):  # this tile holds the diagonal
                r = np.arange(len(rows))
                col = r + a - c
                ok = (col >= 0) & (col < s.shape[1])
                s[r[ok], col[ok]] = -np.inf
            both = np.concatenate([best, s], axis=1)
            best = -np.partition(-both, k - 1, axis=1)[:, :k]
        out[a : a + len(rows)] = best.mean(1)
    return out


def _to_centres(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``x @ c.T`` for a few centres, without BLAS: a multi-threaded BLAS spends ~8 ms a call
    waking its threads on a busy machine for what takes 0.2 ms (1000 x 512 x 2)."""
    return np.einsum("nd,kd->nk", x, c)


def _two_means(x: np.ndarray, rng: np.random.Generator, restarts: int, max_iter: int = 100) -> list:
    """Spherical 2-means from ``restarts`` k-means++ starts. Returns the distinct
    solutions as (score, labels, centres (2, D)), best score (sum of each row's similarity
    to its centre) first; no solution when every run collapses to one cluster."""
    n = len(x)
    found = {}
    for _ in range(restarts):
        a = int(rng.integers(n))
        p = np.clip(1.0 - np.einsum("nd,d->n", x, x[a]), 0, None) ** 2
        b = int(rng.choice(n, p=p / p.sum())) if p.sum() > 0 else (a + 1) % n
        c = x[[a, b]].copy()
        for _ in range(max_iter):
            lab = np.argmax(_to_centres(x, c), axis=1)
            if lab.min() == lab.max():
                break
            new = np.stack([_unit(x[lab == j].sum(0)) for j in range(2)])
            if np.array_equal(new, c):
                break
            c = new
        lab = np.argmax(_to_centres(x, c), axis=1)
        if lab.min() == lab.max():
            continue
        if lab[0] == 1:  # one key per partition
            lab, c = 1 - lab, c[::-1].copy()
        found.setdefault(lab.tobytes(), (float(_to_centres(x, c).max(1).sum()), lab, c))
    return sorted(found.values(), key=lambda f: -f[0])


@dataclass
class MixedIdentity:
    """The two-cluster test of one identity.

    ``mixed``: the identity looks like two people. ``clusters``: two index arrays (main,
    the larger, first) covering every face not excluded; ``centres`` ``(2, D)`` their
    centres; ``similarity``: the centres' cosine similarity; ``core_sizes``: each cluster's
    faces among the core (dense) faces the test used; ``fraction``: the smaller cluster's
    share of the core. ``reason``: why it is not mixed (empty when mixed)."""

    mixed: bool
    clusters: list = field(default_factory=list)
    centres: np.ndarray | None = None
    similarity: float = float("nan")
    core_sizes: tuple = (0, 0)
    fraction: float = 0.0
    reason: str = ""

    def cluster_of(self, n: int) -> np.ndarray:
        """``(n,)`` int: each face's cluster (0 main, 1 other, -1 excluded or no split)."""
        out = np.full(n, -1, np.int64)
        for j, idx in enumerate(self.clusters):
            out[idx] = j
        return out


def find_mixed(
    emb,
    *,
    max_similarity: float = DEFAULT_MIXED_MAX_SIMILARITY,
    min_fraction: float = DEFAULT_MIXED_MIN_FRACTION,
    min_faces: int = DEFAULT_MIXED_MIN_FACES,
    knn: float = 0.1,
    core: float = 0.8,
    exclude=None,
    norms=None,
    low_quality: float = DEFAULT_LOW_QUALITY,
    seed: int = 0,
    restarts: int = 8,
) -> MixedIdentity:
    """Is this identity two people? (see the module docstring).

    Args:
        emb: ``(n, D)`` embeddings of one identity, in source order.
        max_similarity: the clusters' centres must be less similar than this.
        min_fraction, min_faces: the smaller cluster's least share of the core faces and
            least size.
        knn: neighbours for the density, as a share of the faces (at least 2).
        core: share of the faces (densest first) the clustering uses.
        exclude: ``(n,)`` bool, faces left out (duplicates); they get no cluster.
        norms: ``(n,)`` the embeddings' norms before L2 normalisation (a quality signal:
            blurred, turned-away and sunglassed faces have small norms); when given, the
            ``low_quality`` share of the faces with the smallest norms is left out of the
            clustering (they still join the nearer cluster): a cluster of such faces of the
            named person is otherwise taken for a second person.
        seed, restarts: the k-means++ starts (deterministic for a seed).
    Returns:
        :class:`MixedIdentity` (always; ``mixed`` False with ``reason`` when not).
    Raises:
        CleanError: bad embeddings or arguments.
    """
    x = unit_rows(emb)
    if not 0 < core <= 1 or not 0 < knn < 1 or not 0 <= min_fraction <= 0.5:
        raise CleanError(
            f"find_mixed: core {core} must be in (0, 1], knn {knn} in (0, 1), min_fraction {min_fraction} in [0, 0.5]"
        )
    ex = _mask(exclude, len(x), "exclude")
    idx = np.flatnonzero(~ex)
    use = idx
    if norms is not None:
        nv = np.asarray(norms, np.float64)
        if nv.shape != (len(x),) or not np.isfinite(nv).all():
            raise CleanError(f"norms: expected {len(x)} finite values, got shape {nv.shape}")
        if not 0 <= low_quality < 1:
            raise CleanError(f"low_quality {low_quality} must be in [0, 1)")
        if len(idx) and low_quality > 0:
            use = idx[nv[idx] >= np.quantile(nv[idx], low_quality)]
    n = len(use)
    if n < max(4, 2 * min_faces):
        return MixedIdentity(False, reason=f"{n} faces to cluster: too few to split")
    xs = x[use]
    dens = knn_density(xs, max(2, int(knn * n)))
    core_idx = np.sort(np.argsort(-dens, kind="stable")[: max(2 * min_faces, int(np.ceil(core * n)))])
    n_core = len(core_idx)
    sols = _two_means(xs[core_idx], np.random.default_rng(seed), restarts)
    if not sols:
        return MixedIdentity(False, reason="the core faces do not split in two")
    # the most separated split whose smaller cluster is big enough, else the best-scoring one
    big = [f for f in sols if np.bincount(f[1], minlength=2).min() >= max(min_faces, min_fraction * n_core)]
    _, lab, c = min(big, key=lambda f: float(f[2][0] @ f[2][1])) if big else sols[0]
    sizes = np.bincount(lab, minlength=2)
    if sizes[1] > sizes[0]:
        c, sizes, lab = c[::-1].copy(), sizes[::-1].copy(), 1 - lab
    sim = float(c[0] @ c[1])
    frac = float(sizes[1] / sizes.sum())
    assign = np.argmax(_to_centres(x[idx], c), axis=1)
    clusters = [idx[assign == 0], idx[assign == 1]]
    why = []
    if sim >= max_similarity:
        why.append(f"centres' similarity {sim:.3f} >= {max_similarity:g}")
    if frac < min_fraction:
        why.append(f"smaller cluster {frac:.0%} of the core < {min_fraction:.0%}")
    if sizes[1] < min_faces:
        why.append(f"smaller cluster {sizes[1]} faces < {min_faces}")
    core_sizes = (int(sizes[0]), int(sizes[1]))
    return MixedIdentity(not why, clusters, c.astype(np.float32), sim, core_sizes, frac, "; ".join(why))


# --------------------------------------------------------------------------- together


@dataclass
class IdentityReport:
    """The cleaning decisions for one identity (arrays of length n, in source order).

    ``mixed``: :class:`MixedIdentity`. ``cluster``: each face's cluster (0 main, 1 the
    other person; 0 for all when not mixed; -1 excluded). ``similarity``: each face's
    cosine similarity to its cluster's robust centre (NaN when excluded or alone).
    ``label_noise``: similarity below the threshold. ``centres``: the robust centre of each
    cluster ``(k, D)``."""

    mixed: MixedIdentity
    cluster: np.ndarray
    similarity: np.ndarray
    label_noise: np.ndarray
    centres: np.ndarray
    threshold: float


def clean_identity(
    emb,
    *,
    exclude=None,
    outlier_threshold: float = DEFAULT_OUTLIER_THRESHOLD,
    max_similarity: float = DEFAULT_MIXED_MAX_SIMILARITY,
    min_fraction: float = DEFAULT_MIXED_MIN_FRACTION,
    min_faces: int = DEFAULT_MIXED_MIN_FACES,
    norms=None,
    low_quality: float = DEFAULT_LOW_QUALITY,
    seed: int = 0,
) -> IdentityReport:
    """Label noise and the two-people test of one identity.

    :func:`find_mixed` first; when the identity is mixed, each cluster gets its own robust
    centre and a face is judged against its own cluster's (the other person's photos are
    then a cluster, not label noise: what happens to them is the ``mixed`` mode's call,
    :func:`mixed_identity_names`). Else one robust centre for all. Excluded faces (e.g.
    duplicates) take no part and get cluster -1, similarity NaN, no label noise. ``norms``
    (the embeddings' norms before normalisation, when the recognizer gives them) and
    ``low_quality``: see :func:`find_mixed`. Raises :class:`CleanError` on bad input.
    """
    x = unit_rows(emb)
    n = len(x)
    ex = _mask(exclude, n, "exclude")
    mixed = find_mixed(
        x,
        max_similarity=max_similarity,
        min_fraction=min_fraction,
        min_faces=min_faces,
        exclude=ex,
        norms=norms,
        low_quality=low_quality,
        seed=seed,
    )
    cluster = np.where(ex, -1, 0).astype(np.int64)
    if mixed.mixed:
        cluster = mixed.cluster_of(n)
    sim = np.full(n, np.nan, np.float32)
    noise = np.zeros(n, bool)
    centres = []
    for j in range(int(cluster.max()) + 1 if (cluster >= 0).any() else 0):
        part = cluster != j
        o = find_outliers(x, outlier_threshold, exclude=part)
        sim[~part] = o.similarity[~part]
        noise |= o.outlier
        centres.append(o.centre.centre)
    cs = np.stack(centres) if centres else np.zeros((0, x.shape[1]), np.float32)
    return IdentityReport(mixed, cluster, sim, noise, cs, float(outlier_threshold))


def split_name(identity: str, cluster: int) -> str:
    """The identity name of a mixed identity's cluster under ``mixed: split``: the main
    cluster (0) keeps ``identity``; cluster ``k`` >= 1 becomes ``<identity>#<k+1>``."""
    return identity if cluster == 0 else f"{identity}#{cluster + 1}"


def mixed_identity_names(identity: str, report: IdentityReport, mode: MixedMode) -> list:
    """Each face's identity after the ``mixed`` decision: ``keep``: ``identity`` for all;
    ``split``: :func:`split_name` of its cluster; ``cut``: ``identity`` for the main
    cluster and None (to be rejected or flagged ``mixed_identity``) for the other.
    Excluded faces (cluster -1) keep ``identity``. Not mixed: ``identity`` for all."""
    if mode not in ("keep", "split", "cut"):
        raise CleanError(f"mixed mode {mode!r}: expected keep, split or cut")
    if mode == "keep" or not report.mixed.mixed:
        return [identity] * len(report.cluster)
    out = []
    for c in report.cluster.tolist():
        if c <= 0:
            out.append(identity)
        else:
            out.append(split_name(identity, c) if mode == "split" else None)
    return out
