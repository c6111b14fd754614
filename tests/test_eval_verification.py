"""The verification numbers equal the insightface protocol, derived independently here:
scikit-learn's KFold for the folds, a brute-force threshold search with scikit-learn's
accuracy_score, and scipy's degree-1 B-spline (what ``interp1d(kind='slinear')`` built) for
the FAR interpolation. Nothing is ported from insightface."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import BSpline
from sklearn.metrics import accuracy_score
from sklearn.model_selection import KFold
from sklearn.preprocessing import normalize

from facekit.eval.verification import combine_flip, evaluate, evaluate_distances, fold_indices, verify, xnorm


def reference(embeddings: np.ndarray, issame: np.ndarray, folds: int = 10, far_target: float = 1e-3) -> dict:
    """The protocol of FORMATS.md section 3, written from its description, slowly."""
    dist = np.array([np.sum((embeddings[2 * i] - embeddings[2 * i + 1]) ** 2) for i in range(len(issame))])
    acc_thr = np.arange(0, 4, 0.01)
    val_thr = np.arange(0, 4, 0.001)
    accs, best, tars, fars = [], [], [], []
    for train, test in KFold(n_splits=folds, shuffle=False).split(dist):
        train_acc = [accuracy_score(issame[train], dist[train] < t) for t in acc_thr]
        t = acc_thr[train_acc.index(max(train_acc))]  # first best
        best.append(t)
        accs.append(accuracy_score(issame[test], dist[test] < t))
        neg = dist[train][~issame[train]]
        far_train = np.array([np.count_nonzero(neg < t) / len(neg) for t in val_thr])
        if far_train.max() >= far_target:
            # interp1d(far, thr, kind='slinear') = degree-1 B-spline through the points
            spline = BSpline.construct_fast(np.r_[far_train[0], far_train, far_train[-1]], val_thr, 1)
            thr = float(spline(far_target))
        else:
            thr = 0.0
        p, n = dist[test][issame[test]], dist[test][~issame[test]]
        tars.append(np.count_nonzero(p < thr) / len(p))
        fars.append(np.count_nonzero(n < thr) / len(n))
    return {
        "accuracy": np.mean(accs),
        "accuracy_std": np.std(accs),
        "fold_accuracies": accs,
        "fold_thresholds": best,
        "tar": np.mean(tars),
        "tar_std": np.std(tars),
        "far": np.mean(fars),
    }


def random_set(seed: int, pairs: int, dim: int = 32, noise: float = 1.6):
    """Fixed random embeddings: same-person pairs are noisy copies of one vector."""
    rng = np.random.default_rng(seed)
    issame = rng.random(pairs) < 0.5
    a = rng.normal(size=(pairs, dim))
    b = np.where(issame[:, None], a + noise * rng.normal(size=(pairs, dim)), rng.normal(size=(pairs, dim)))
    raw = np.empty((2 * pairs, dim))
    raw[0::2], raw[1::2] = a, b
    flip = raw + 0.3 * rng.normal(size=raw.shape)
    return raw, flip, issame


@pytest.mark.parametrize("seed,pairs,folds", [(0, 600, 10), (1, 613, 10), (2, 257, 10), (3, 400, 5)])
def test_evaluate_equals_independent_derivation(seed, pairs, folds):
    raw, flip, issame = random_set(seed, pairs)
    emb = normalize(raw + flip)
    want = reference(emb, issame, folds)
    got = evaluate(emb, list(issame), folds=folds)
    assert got.fold_accuracies == pytest.approx(want["fold_accuracies"], abs=0)
    assert got.fold_thresholds == pytest.approx(want["fold_thresholds"], abs=0)
    assert got.accuracy == pytest.approx(want["accuracy"], abs=1e-15)
    assert got.accuracy_std == pytest.approx(want["accuracy_std"], abs=1e-15)
    assert got.tar == pytest.approx(want["tar"], abs=1e-15)
    assert got.tar_std == pytest.approx(want["tar_std"], abs=1e-15)
    assert got.far == pytest.approx(want["far"], abs=1e-15)
    assert 0.6 < got.accuracy < 0.99  # the data is neither trivial nor random
    assert got.pairs == pairs and got.positives == int(issame.sum()) and got.folds == folds


def test_flip_sum_normalisation_and_xnorm():
    raw, flip, issame = random_set(5, 300)
    assert np.allclose(combine_flip(raw, flip), normalize(raw + flip), atol=1e-15)
    assert np.allclose(combine_flip(raw), normalize(raw), atol=1e-15)
    want_xnorm = np.mean([np.linalg.norm(r) for r in np.concatenate([raw, flip])])
    res = verify(raw, issame, flip)
    assert res.xnorm == pytest.approx(want_xnorm, rel=1e-12)
    ref = reference(normalize(raw + flip), issame)
    assert res.accuracy == pytest.approx(ref["accuracy"], abs=1e-15) and res.tar == pytest.approx(ref["tar"], abs=1e-15)
    assert xnorm(raw) == pytest.approx(np.mean(np.linalg.norm(raw, axis=1)))


def test_folds_are_sklearn_kfold():
    for n, k in [(6000, 10), (574, 10), (13, 4)]:
        ours = fold_indices(n, k)
        theirs = list(KFold(n_splits=k, shuffle=False).split(np.arange(n)))
        assert len(ours) == len(theirs)
        for (a, b), (c, d) in zip(ours, theirs, strict=True):
            assert np.array_equal(a, c) and np.array_equal(b, d)
    train, test = fold_indices(5, 1)[0]
    assert np.array_equal(train, test)


def test_first_best_threshold_on_ties():
    # perfectly separable: every threshold in (0.3, 1.2] gives accuracy 1; the first wins
    dist = np.array([0.2, 1.3] * 50)
    issame = np.array([True, False] * 50)
    res = evaluate_distances(dist, issame)
    assert res.accuracy == 1.0
    assert all(t == pytest.approx(0.21) for t in res.fold_thresholds)


def test_far_target_never_reached_uses_threshold_zero():
    # every negative above the largest FAR threshold (3.999): FAR never reaches 1e-3
    issame = np.array([True, False] * 50)
    dist = np.where(issame, 0.5, 3.9995)
    res = evaluate_distances(dist, issame)
    assert res.tar == 0.0 and res.far == 0.0
    assert res.accuracy == 1.0


def _reference_accuracy(dist: np.ndarray, issame: np.ndarray, folds: int) -> tuple[list, list]:
    """Fold accuracies and thresholds, brute force (the first half of ``reference``)."""
    accs, best = [], []
    for train, test in KFold(n_splits=folds, shuffle=False).split(dist):
        train_acc = [accuracy_score(issame[train], dist[train] < t) for t in np.arange(0, 4, 0.01)]
        t = np.arange(0, 4, 0.01)[train_acc.index(max(train_acc))]
        best.append(t)
        accs.append(accuracy_score(issame[test], dist[test] < t))
    return accs, best


@pytest.mark.parametrize("kind", ["positives", "negatives"])
def test_one_class_set_has_accuracy_and_undefined_tar(kind):
    rng = np.random.default_rng(7)
    dist = rng.uniform(0.2, 1.8, 200)
    issame = np.full(200, kind == "positives")
    res = evaluate_distances(dist, issame)
    accs, best = _reference_accuracy(dist, issame, 10)
    assert res.fold_accuracies == pytest.approx(accs, abs=0) and res.fold_thresholds == pytest.approx(best, abs=0)
    assert res.accuracy == pytest.approx(np.mean(accs), abs=1e-15) and 0.9 < res.accuracy <= 1
    assert res.tar is None and res.tar_std is None and res.far is None
    missing = "negative" if kind == "positives" else "positive"
    assert res.tar_undefined.startswith(f"no {missing} pairs")
    d = res.as_dict()
    assert d["tar"] is None and d["tar_undefined"] == res.tar_undefined


def test_a_fold_without_negatives_makes_tar_undefined_naming_it():
    # both kinds overall, but the third contiguous fold holds positives only
    issame = np.array([True, False] * 10 + [True] * 10 + [True, False] * 20)
    dist = np.where(issame, 0.4, 1.6)
    res = evaluate_distances(dist, issame, folds=7)
    assert res.accuracy == 1.0 and res.tar is None
    assert res.tar_undefined.startswith("fold 3 of 7 has no negatives")


def test_bad_inputs_are_explained():
    with pytest.raises(ValueError, match="cannot split 5 pairs into 10 folds"):
        evaluate_distances(np.zeros(5), np.ones(5, bool))
    with pytest.raises(ValueError, match="pair order"):
        evaluate(np.zeros((5, 4)), [True, False])
    with pytest.raises(ValueError, match="embeddings for"):
        evaluate(np.zeros((6, 4)), [True, False])


def test_far_threshold_is_interpolated_between_grid_points():
    # each half (fold): 1500 negatives (one at 0.3004, one at 0.7004, the rest at 2.0004) and
    # 20 positives (10 at 0.1, 10 at 0.7007). Training FAR is 1/1500 up to t=0.700 and 2/1500
    # from t=0.701, so FAR=1e-3 is reached at t = 0.700 + 0.001 * (1e-3 - 1/1500) / (1/1500)
    # = 0.7005: the positives at 0.7007 are rejected (a grid threshold, 0.701, would accept them)
    half_d = np.r_[[0.3004, 0.7004], np.full(1498, 2.0004), np.full(10, 0.1), np.full(10, 0.7007)]
    half_s = np.r_[np.zeros(1500, bool), np.ones(20, bool)]
    res = evaluate_distances(np.r_[half_d, half_d], np.r_[half_s, half_s], folds=2)
    assert res.tar == 0.5 and res.tar_std == 0.0
    assert res.far == pytest.approx(2 / 1500, abs=1e-15)
