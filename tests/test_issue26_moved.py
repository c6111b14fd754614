"""Issue 26: images moved between identities, found across the data set (facekit.clean.moved).

Synthetic embeddings (seeded, deterministic) check the contract of :class:`CentreIndex`
(which face, which identity it likely belongs to, leave-one-out, merge groups, shards,
bad input); the real kz_celebs_112 crops (re-detected and aligned by a facekit run and
embedded by test_issue26_clean's ``real`` fixture) check recall and precision on injected
moves at bars just under the values measured on that fixed subset (the full data set's
table: benchmarks/eval_cleaning.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_issue26_clean import REAL, D, _person, _unit, _with_cos, real  # noqa: F401 (real: fixture)

from facekit.clean.duplicates import find_duplicates
from facekit.clean.identity import clean_identity
from facekit.clean.merge import MergeError, mean_centre
from facekit.clean.moved import DEFAULT_MOVED_MARGIN, CentreIndex, Moved, resultant


def _people(seed, n_people=12, faces=30):
    """``n_people`` synthetic identities of ``faces`` faces each: (embeddings, person of
    each face)."""
    rng = np.random.default_rng(seed)
    emb = np.concatenate([_person(rng, faces)[0] for _ in range(n_people)]).astype(np.float32)
    return emb, np.repeat(np.arange(n_people), faces)


def _move(person, per, seed, n_people):
    """``per`` faces of each identity filed under another (random) identity."""
    rng = np.random.default_rng(seed)
    lab = person.copy()
    for p in range(n_people):
        for i in rng.choice(np.flatnonzero(person == p), per, replace=False):
            lab[i] = rng.choice([q for q in range(n_people) if q != p])
    return lab


def _index(emb, lab, n_people, **kw):
    return CentreIndex.from_identities(((f"id{p}", emb[lab == p]) for p in range(n_people)), **kw)


# --------------------------------------------------------------------------- the check


def test_moved_faces_found_with_the_identity_they_came_from():
    """Issue 26 (moved images): 2 of each synthetic identity's 30 faces filed elsewhere are
    exactly the faces flagged, each pointing at the identity it came from, with
    own < other; the rest are not flagged."""
    emb, person = _people(1)
    lab = _move(person, 2, 1, 12)
    index = _index(emb, lab, 12)
    assert index.kind == "flat" and index.keys[3] == "id3" and index.counts.tolist() == np.bincount(lab).tolist()
    m = index.moved(emb, lab)
    assert isinstance(m, Moved) and len(m) == len(emb) and m.margin == DEFAULT_MOVED_MARGIN
    moved = lab != person
    assert np.array_equal(m.moved, moved)
    assert np.array_equal(m.other[moved], person[moved])
    assert (m.other_similarity[moved] - m.own_similarity[moved]).min() > 0.3
    assert (m.other[~moved] != lab[~moved]).all() and (m.other >= 0).all()
    assert m.own_similarity.dtype == np.float32 and m.other.dtype == np.int64


def test_shards_float16_and_ivf_give_the_same_answer():
    """Issue 26 (moved images): the check asked shard by shard (7 faces, shard offsets in
    ``first``), on float16 embeddings, with a small chunk, or through an IVF index gives the
    same faces and identities as one call."""
    emb, person = _people(2)
    lab = _move(person, 2, 2, 12)
    whole = _index(emb, lab, 12).moved(emb, lab)
    small = _index(emb, lab, 12, chunk=5)
    parts = [small.moved(emb[lo : lo + 7], lab[lo : lo + 7], first=lo) for lo in range(0, len(emb), 7)]
    for field in ("moved", "other"):
        assert np.array_equal(np.concatenate([getattr(p, field) for p in parts]), getattr(whole, field))
    assert np.allclose(np.concatenate([p.own_similarity for p in parts]), whole.own_similarity, atol=1e-6)
    half = _index(emb, lab, 12).moved(emb.astype(np.float16), lab)
    assert np.array_equal(half.moved, whole.moved) and np.array_equal(half.other, whole.other)
    assert np.allclose(half.other_similarity, whole.other_similarity, atol=2e-3)
    ivf = _index(emb, lab, 12, index="ivf", nlist=3, nprobe=3).moved(emb, lab)
    assert ivf.moved.tolist() == whole.moved.tolist() and ivf.other.tolist() == whole.other.tolist()
    assert np.allclose(ivf.other_similarity, whole.other_similarity, atol=1e-6)  # exact, not float16


def test_leave_one_out_takes_the_face_out_of_its_own_centre():
    """Issue 26 (moved images): with mean centres, a face's own similarity is exactly its
    similarity to the mean of the other faces of its identity; so a stranger filed in an
    identity of three faces is moved, where the raw centre (which holds it) hides it; a
    face not in its centre, or alone in its identity, is compared as it is / not judged."""
    rng = np.random.default_rng(3)
    a, ca = _person(rng, 2)
    b, cb = _person(rng, 20, _with_cos(rng, ca, 0.2))
    x = _unit(cb + 0.15 * rng.normal(size=D))  # one of b's faces, filed under a
    c, _ = _person(rng, 1)  # an identity of one face
    small = np.concatenate([a, x[None]]).astype(np.float32)
    ids = [("a", small), ("b", b.astype(np.float32)), ("c", c.astype(np.float32))]
    index = CentreIndex.from_identities(iter(ids), centre=mean_centre)
    emb = np.concatenate([small, c]).astype(np.float32)
    own = np.array([0, 0, 0, 2])
    m = index.moved(emb, own)
    for i in range(3):
        rest = _unit(np.delete(small, i, axis=0).sum(0))
        assert m.own_similarity[i] == pytest.approx(float(small[i] @ rest), abs=1e-5)
    assert m.moved.tolist() == [False, False, True, False] and m.other[2] == 1
    assert np.isnan(m.own_similarity[3]) and not m.moved[3]  # alone: nothing to compare with
    raw = CentreIndex(index.centres, index.keys).moved(emb, own)
    assert not raw.moved[2] and raw.own_similarity[2] > m.own_similarity[2] + 0.2
    assert raw.own_similarity[3] == pytest.approx(1.0, abs=1e-5)
    out = index.moved(emb, own, in_centre=np.array([True, True, False, True]))
    assert out.own_similarity[2] == pytest.approx(raw.own_similarity[2], abs=1e-6)
    assert resultant(small, index.centres[0]) == pytest.approx(float(np.linalg.norm(small.mean(0))), abs=1e-5)


def test_merge_groups_floor_and_margin():
    """Issue 26 (moved images): a face is not moved to an identity of its own merge group
    (the same person under two names): the nearest centre of another group is taken,
    found by widening the search past k; ``min_other`` and ``margin`` bound the flags."""
    rng = np.random.default_rng(4)
    a, ca = _person(rng, 30)
    a2, _ = _person(rng, 30, ca)  # the same person under a second name
    b, _ = _person(rng, 30, _with_cos(rng, ca, 0.3))
    ident = [("a", a), ("a2", a2), ("b", b)]
    index = CentreIndex.from_identities((k, e.astype(np.float32)) for k, e in ident)
    emb = np.concatenate([a, a2, b]).astype(np.float32)
    own = np.repeat([0, 1, 2], 30)
    # margin -0.1: faces about as near the other name's centre as their own are moved
    alone = index.moved(emb, own, margin=-0.1, k=1)
    assert (alone.other[:30] == 1).all() and (alone.other[30:60] == 0).all() and alone.moved[:60].sum() > 40
    grouped = index.moved(emb, own, margin=-0.1, groups=np.array([0, 0, 1]), k=1)
    assert (grouped.other[:60] == 2).all() and not grouped.moved.any()
    assert (grouped.other[60:] <= 1).all()
    assert not index.moved(emb, own, min_other=1.0).moved.any()
    assert index.moved(emb, own, margin=-2.0).moved.all()
    lone = CentreIndex(index.centres[:1], ["a"]).moved(emb[:3], np.zeros(3, int))
    assert (lone.other == -1).all() and np.isnan(lone.other_similarity).all() and not lone.moved.any()


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_naming_the_row():
    """Issue 26 (moved images): NaN or non-unit embeddings and centres, owners that are no
    centre row, a dimension or shape that differs, counts without resultants, bad counts,
    resultants, margins, floors, k, in_centre or groups: a MergeError of one line naming
    the image (with the shard offset), centre or argument."""
    rng = np.random.default_rng(5)
    cs = _unit(rng.normal(size=(3, D))).astype(np.float32)
    x = _unit(rng.normal(size=(6, D))).astype(np.float32)
    own = np.array([0, 1, 2, 0, 1, 2])
    index = CentreIndex(cs, ["a", "b", "c"], [2, 2, 2], [0.5, 0.5, 0.5])
    nan = x.copy()
    nan[3, 1] = np.nan
    big = x * 2
    cases = [
        (lambda: index.moved(nan, own), r"image 3 \(identity 'a'\): embedding is not finite"),
        (lambda: index.moved(nan, own, first=100), r"image 103 \(identity 'a'\)"),
        (lambda: index.moved(big, own), r"image 0 \(identity 'a'\): embedding norm 2, not L2-normalised"),
        (lambda: index.moved(x, [0, 1, 2, 0, 7, 2]), r"image 4: owner 7 is not a centre row \(0..2\)"),
        (lambda: index.moved(x, [0, 1, -1, 0, 1, 2], first=10), r"image 12: owner -1"),
        (lambda: index.moved(x, own[:5]), r"owners must be \(6,\) integers"),
        (lambda: index.moved(x, own.astype(float)), r"owners must be \(6,\) integers"),
        (lambda: index.moved(x[:, :10], own), r"embeddings have dimension 10, the centres 64"),
        (lambda: index.moved(x[0], own), r"embeddings must be a non-empty \(N, D\) float array"),
        (lambda: index.moved(x.astype(int), own), r"embeddings must be a non-empty \(N, D\) float array"),
        (lambda: index.moved(x, own, margin=float("nan")), r"margin must be a cosine difference"),
        (lambda: index.moved(x, own, min_other=1.5), r"min_other must be a cosine similarity"),
        (lambda: index.moved(x, own, k=0), r"need 1 <= k <= max_k"),
        (lambda: index.moved(x, own, in_centre=np.ones(5, bool)), r"in_centre must be \(6,\) bools"),
        (lambda: index.moved(x, own, groups=np.zeros(2, int)), r"groups must be \(3,\) integers"),
        (lambda: CentreIndex(cs * [[1], [3], [1]], ["a", "b", "c"]), r"centre 1 \(identity 'b'\): embedding norm 3"),
        (lambda: CentreIndex(cs, ["a", "b"]), r"2 keys for 3 centres"),
        (lambda: CentreIndex(cs, counts=[2, 2, 2]), r"counts and resultants go together"),
        (lambda: CentreIndex(cs, "abc", [2, 0, 2], [0.5] * 3), r"centre 1 \(identity 'b'\): count 0, must be >= 1"),
        (lambda: CentreIndex(cs, "abc", [2, 2, 2], [0.5, 0.5, 0]), r"centre 2 \(identity 'c'\): resultant 0"),
        (lambda: CentreIndex(cs, "abc", [2, 2, 2], [0.5, np.nan, 1]), r"centre 1 \(identity 'b'\): resultant nan"),
        (lambda: CentreIndex(cs, "abc", [2.0, 2, 2], [0.5] * 3), r"counts must be \(3,\) integers"),
        (lambda: CentreIndex(cs, index="tree"), r"index must be auto, flat, ivf or hnsw"),
        (lambda: CentreIndex.from_identities([("a", x), ("a", x)]), r"identity 'a': key given twice"),
    ]
    for call, pattern in cases:
        with pytest.raises(MergeError, match=pattern) as e:
            call()
        assert "\n" not in str(e.value), str(e.value)
    assert issubclass(MergeError, ValueError)


# --------------------------------------------------------------------------- real data


def test_real_moved_images_across_identities(real):  # noqa: F811 (real: the imported fixture)
    """Issue 26 (moved images), real crops: 5% of each of the 12 identities moved to another
    (seeds 0-4, 24 moves each; the moves of test_issue26_clean's within-identity test):
    the check across identities at the default margin finds 115 of 120 (recall 0.958, bar
    0.90) with precision 0.511 (225 flags; bar 0.45: the data's own noise is flagged too),
    where label_noise within each identity finds 0.825 at 0.284; 105 of the 115 point at
    the identity they came from (bar 0.85); either check firing: recall 0.992 (bar 0.95)."""
    keep = np.array(["~" not in s for s in real["stems"]])
    emb, norms, idents = real["emb"][keep], real["norms"][keep], real["idents"][keep]
    names = np.array(REAL)
    tp = flagged = total = either = right = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        lab, moved = idents.copy(), np.zeros(len(idents), bool)
        for n in REAL:
            g = np.flatnonzero(idents == n)
            for i in rng.choice(g, round(0.05 * len(g)), replace=False):
                lab[i], moved[i] = rng.choice(names[names != n]), True
        index = CentreIndex.from_identities((n, emb[lab == n]) for n in names)
        owners = np.searchsorted(names, lab)
        m = index.moved(emb, owners)
        right += (m.other == np.searchsorted(names, idents))[m.moved & moved].sum()
        within = np.zeros(len(lab), bool)
        for n in REAL:
            g = np.flatnonzero(lab == n)
            within[g] = clean_identity(emb[g], exclude=find_duplicates(emb[g]).duplicate, norms=norms[g]).label_noise
        tp, flagged, total = tp + (m.moved & moved).sum(), flagged + m.moved.sum(), total + moved.sum()
        either += ((m.moved | within) & moved).sum()
    recall, precision = tp / total, tp / flagged
    assert recall >= 0.90 and precision >= 0.45, (recall, precision, total, flagged)
    assert right / tp >= 0.85, (right, tp)
    assert either / total >= 0.95, either / total
