"""The insightface verification protocol on embeddings: 10-fold accuracy, TAR@FAR, XNorm.

Matches insightface ``recognition/arcface_torch/eval/verification.py`` (``test`` and
``evaluate``; the mxnet ``recognition/arcface_mxnet/verification.py`` is the same):

- embeddings: model output for each image and for its horizontal flip, summed, then
  L2-normalised (:func:`combine_flip`); XNorm = mean L2 norm of the raw outputs of both
  passes (:func:`xnorm`).
- distance of a pair = squared L2 distance of its two embeddings (in [0, 4]).
- accuracy: thresholds ``arange(0, 4, 0.01)``; folds = contiguous blocks as sklearn
  ``KFold(n_splits, shuffle=False)``; "same" predicted when ``dist < threshold``; per fold the
  threshold is the first argmax of accuracy on the other folds, the fold's accuracy is
  measured with it; reported: mean and std (``numpy.std``, ddof 0) of the fold accuracies.
- TAR@FAR: thresholds ``arange(0, 4, 0.001)``; per fold, FAR on the other folds at each
  threshold, the threshold for FAR = 1e-3 by linear interpolation of (FAR, threshold)
  (insightface: ``scipy.interpolate.interp1d(far, thr, kind='slinear')``, in the form the
  scipy versions it was written against evaluated repeated FAR values; 0 when no threshold
  reaches the target); TAR and FAR of the fold measured with it; reported: mean TAR, its
  std, mean FAR. TAR@FAR is undefined when a training fold has no negative pair or a test
  fold lacks positives or negatives (insightface divides by zero there and reports nan, or
  0 for a set without negatives): ``tar``/``tar_std``/``far`` are then None and
  ``tar_undefined`` gives the reason; accuracy is reported as usual.

Counts at a threshold are taken from sorted distances (``searchsorted``), which gives the
same integers as insightface's per-threshold comparisons, in a fraction of the time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

ACC_THRESHOLDS_STEP = 0.01
VAL_THRESHOLDS_STEP = 0.001
FAR_TARGET = 1e-3


@dataclass
class VerificationResult:
    """Scores of one verification set. ``accuracy``/``accuracy_std``: mean/std of the fold
    accuracies (fractions in [0, 1]); ``fold_accuracies``, ``fold_thresholds`` (best squared-L2
    threshold per fold); ``tar``/``tar_std``/``far``: TAR at FAR=``far_target`` (mean, std)
    and the FAR reached (mean), None when undefined, with the reason in ``tar_undefined``
    (e.g. a set of positive pairs only); ``xnorm``: mean raw embedding norm (None when
    unknown); ``pairs``, ``positives``, ``folds``."""

    accuracy: float
    accuracy_std: float
    tar: float | None
    tar_std: float | None
    far: float | None
    far_target: float
    pairs: int
    positives: int
    folds: int
    xnorm: float | None = None
    fold_accuracies: list = field(default_factory=list)
    fold_thresholds: list = field(default_factory=list)
    tar_undefined: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def combine_flip(emb: np.ndarray, emb_flip: np.ndarray | None = None) -> np.ndarray:
    """Sum the embeddings of each image and of its horizontal flip and L2-normalise the rows
    (insightface ``verification.test``: ``normalize(embeddings_list[0] + embeddings_list[1])``).

    Args:
        emb: ``(N, D)`` raw embeddings (any float dtype). emb_flip: ``(N, D)`` of the flipped
            images, or None (no flip: ``emb`` alone is normalised).
    Returns:
        ``(N, D)`` float64, unit rows (an all-zero row stays zero, as sklearn's ``normalize``).
    Raises:
        ValueError: shapes differ or are not 2-d.
    """
    e = np.asarray(emb, np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {e.shape}")
    if emb_flip is not None:
        f = np.asarray(emb_flip, np.float64)
        if f.shape != e.shape:
            raise ValueError(f"flipped embeddings {f.shape} do not match {e.shape}")
        e = e + f
    norm = np.linalg.norm(e, axis=1, keepdims=True)
    norm[norm == 0] = 1.0
    return e / norm


def xnorm(*raw: np.ndarray) -> float:
    """Mean L2 norm of the rows of the raw (un-normalised) embedding arrays, all of them
    together (insightface ``verification.test``'s ``_xnorm``: original and flipped passes)."""
    norms = np.concatenate([np.linalg.norm(np.asarray(r, np.float64), axis=1) for r in raw])
    return float(norms.mean())


def fold_indices(n: int, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(train, test)`` index arrays of ``folds`` contiguous folds over ``n`` items, the first
    ``n % folds`` one longer: sklearn ``KFold(folds, shuffle=False)``; ``folds == 1``: train =
    test = everything (insightface ``LFold``)."""
    idx = np.arange(n)
    if folds == 1:
        return [(idx, idx)]
    if not 2 <= folds <= n:
        raise ValueError(f"cannot split {n} pairs into {folds} folds")
    out = []
    for test in np.array_split(idx, folds):
        mask = np.ones(n, bool)
        mask[test] = False
        out.append((idx[mask], test))
    return out


def pair_distances(embeddings: np.ndarray) -> np.ndarray:
    """Squared L2 distances of the pairs of ``embeddings`` ``(2P, D)`` in pair order a0, b0,
    a1, b1, ... Returns ``(P,)`` float64."""
    e = np.asarray(embeddings, np.float64)
    if e.ndim != 2 or len(e) % 2:
        raise ValueError(f"embeddings must be (2P, D) in pair order, got shape {e.shape}")
    d = e[0::2] - e[1::2]
    return np.sum(np.square(d), 1)


def _below(sorted_d: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``sorted_d`` are ``< t`` for each threshold ``t``."""
    return np.searchsorted(sorted_d, thresholds, side="left")


def _interp_threshold(far: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    """Threshold at FAR ``target`` by linear interpolation of the non-decreasing ``far``
    curve, as ``interp1d(far, thr, kind='slinear')(target)`` evaluated (degree-1 B-spline
    with knots ``[far0, far..., far_last]``): the segment starts at the last FAR <= target."""
    m = len(far)
    j = int(np.searchsorted(far, target, side="right")) - 1
    j = min(max(j, 0), m - 2)
    span = far[j + 1] - far[j]
    if span == 0:  # target equals a repeated final FAR: the B-spline's degenerate last span
        return 0.0
    return float(thresholds[j] + (thresholds[j + 1] - thresholds[j]) * (target - far[j]) / span)


def evaluate_distances(
    dist: np.ndarray, issame: Sequence[bool], folds: int = 10, far_target: float = FAR_TARGET
) -> VerificationResult:
    """The insightface protocol (module docstring) on pair distances.

    Args:
        dist: ``(P,)`` squared L2 distances of the pairs. issame: ``P`` bools (True: same person).
        folds: number of contiguous folds (10). far_target: FAR for TAR@FAR (1e-3).
    Returns:
        :class:`VerificationResult`; TAR@FAR fields None (reason in ``tar_undefined``) when
        a training fold has no negatives or a test fold no positives or no negatives.
    Raises:
        ValueError: lengths differ or fewer pairs than folds.
    """
    dist = np.asarray(dist, np.float64)
    same = np.asarray(issame, bool)
    if dist.shape != same.shape or dist.ndim != 1:
        raise ValueError(f"{dist.shape[0] if dist.ndim else dist} distances for {len(same)} pairs")
    acc_thr = np.arange(0, 4, ACC_THRESHOLDS_STEP)
    val_thr = np.arange(0, 4, VAL_THRESHOLDS_STEP)
    accs, best, tars, fars = [], [], [], []
    undefined = _tar_undefined_reason(same)
    for k, (train, test) in enumerate(fold_indices(len(dist), folds)):
        tr_pos, tr_neg = np.sort(dist[train][same[train]]), np.sort(dist[train][~same[train]])
        te_pos, te_neg = np.sort(dist[test][same[test]]), np.sort(dist[test][~same[test]])
        # accuracy: tp = positives below, tn = negatives not below
        acc_train = (_below(tr_pos, acc_thr) + (len(tr_neg) - _below(tr_neg, acc_thr))) / len(train)
        t = acc_thr[int(np.argmax(acc_train))]
        best.append(float(t))
        accs.append(float(_below(te_pos, t) + (len(te_neg) - _below(te_neg, t))) / len(test))
        # TAR @ FAR
        if undefined is None and (len(tr_neg) == 0 or len(te_neg) == 0 or len(te_pos) == 0):
            lacks = "training negatives" if len(tr_neg) == 0 else "negatives" if len(te_neg) == 0 else "positives"
            undefined = (
                f"fold {k + 1} of {folds} has no {lacks} (order pairs LFW style: each block of "
                "P/folds pairs holds both kinds)"
            )
        if undefined is not None:
            continue
        far_train = _below(tr_neg, val_thr) / float(len(tr_neg))
        thr = _interp_threshold(far_train, val_thr, far_target) if far_train.max() >= far_target else 0.0
        tars.append(float(_below(te_pos, thr)) / float(len(te_pos)))
        fars.append(float(_below(te_neg, thr)) / float(len(te_neg)))
    defined = undefined is None
    return VerificationResult(
        accuracy=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        tar=float(np.mean(tars)) if defined else None,
        tar_std=float(np.std(tars)) if defined else None,
        far=float(np.mean(fars)) if defined else None,
        far_target=far_target,
        pairs=len(dist),
        positives=int(same.sum()),
        folds=folds,
        fold_accuracies=accs,
        fold_thresholds=best,
        tar_undefined=undefined,
    )


def _tar_undefined_reason(same: np.ndarray) -> str | None:
    """Why TAR@FAR cannot be measured on the whole set (None when it may be)."""
    if len(same) and same.all():
        return "no negative pairs: FAR is undefined"
    if not same.any():
        return "no positive pairs: TAR is undefined"
    return None


def evaluate(
    embeddings: np.ndarray, issame: Sequence[bool], folds: int = 10, far_target: float = FAR_TARGET
) -> VerificationResult:
    """insightface ``verification.evaluate`` on precomputed, normalised embeddings.

    Args:
        embeddings: ``(2P, D)`` embeddings in pair order a0, b0, a1, b1, ... (normally unit
            rows from :func:`combine_flip`). issame: ``P`` bools.
        folds, far_target: see :func:`evaluate_distances`.
    Returns:
        :class:`VerificationResult` (``xnorm`` None).
    Raises:
        ValueError: see :func:`evaluate_distances`.
    """
    d = pair_distances(embeddings)
    if len(d) != len(issame):
        raise ValueError(f"{2 * len(d)} embeddings for {len(issame)} pairs (need 2 per pair)")
    return evaluate_distances(d, issame, folds, far_target)


def verify(
    emb: np.ndarray,
    issame: Sequence[bool],
    emb_flip: np.ndarray | None = None,
    folds: int = 10,
    far_target: float = FAR_TARGET,
) -> VerificationResult:
    """insightface ``verification.test`` after the forward passes: XNorm of the raw
    embeddings, flip-sum + L2 normalisation, then :func:`evaluate`.

    Args:
        emb: ``(2P, D)`` raw model outputs of the bin's images, pair order a0, b0, ...
        issame: ``P`` bools. emb_flip: ``(2P, D)`` outputs of the horizontally flipped images
            (None: evaluate without flip).
    Returns:
        :class:`VerificationResult` with ``xnorm`` set.
    """
    raw = [emb] if emb_flip is None else [emb, emb_flip]
    res = evaluate(combine_flip(emb, emb_flip), issame, folds, far_target)
    res.xnorm = xnorm(*raw)
    return res
