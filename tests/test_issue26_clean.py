"""Issue 26 part 3: clean within an identity (facekit.clean.identity, facekit.clean.duplicates).

Synthetic embeddings (seeded, deterministic) check each algorithm's contract; the real
kz_celebs_112 crops (re-detected and aligned by a facekit run, embedded with the shared
MobileFaceNet) check the detectors on injected noise at bars just under the values measured
on this fixed subset (the full data set's table: benchmarks/eval_cleaning.py).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import _missing

from facekit.clean.duplicates import (
    byte_digest,
    exact_duplicates,
    find_duplicates,
    near_duplicates,
    pixel_digest,
)
from facekit.clean.identity import (
    CleanError,
    centre_similarity,
    clean_identity,
    find_mixed,
    find_outliers,
    knn_density,
    mixed_identity_names,
    robust_centre,
    split_name,
)

D = 64
NOISE = 0.15  # per-dimension noise: same-person cosine ~0.4, as the shared MobileFaceNet's


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _person(rng, n, centre=None):
    """``n`` faces of one synthetic person (and the person's centre)."""
    c = _unit(rng.normal(size=D)) if centre is None else centre
    return _unit(c + NOISE * rng.normal(size=(n, D))), c


def _with_cos(rng, c, cos):
    """A unit vector whose cosine with unit ``c`` is ``cos``."""
    r = rng.normal(size=D)
    r = _unit(r - (r @ c) * c)
    return cos * c + np.sqrt(1 - cos**2) * r


# --------------------------------------------------------------------------- centre, outliers


def test_robust_centre_not_moved_by_strays():
    """Issue 26 part 3: a coherent group of strays (10%, another person) moves the plain
    mean; the robust centre stays on the identity and the strays are label noise."""
    rng = np.random.default_rng(1)
    a, ca = _person(rng, 60)
    b, _ = _person(rng, 6, _with_cos(rng, ca, 0.0))
    emb = np.concatenate([a, b])
    mean = _unit(emb.sum(0))
    rc = robust_centre(emb)
    shift = 1 - rc.centre @ robust_centre(a).centre  # against itself without the strays
    # measured: 1 - cos 0.0025 (geometric median) against 0.0063 (plain mean)
    assert shift < 0.5 * (1 - mean @ _unit(a.sum(0)))
    assert rc.centre @ ca > mean @ ca
    assert rc.weights[60:].max() < rc.weights[:60].min() and np.isclose(rc.weights.sum(), 1)
    out = find_outliers(emb)
    assert np.flatnonzero(out.outlier).tolist() == list(range(60, 66))
    assert np.all(out.similarity[:60] > 0.35) and np.all(out.similarity[60:] < 0.25)


def test_similarity_leaves_the_face_out():
    """Issue 26 part 3: a face in the centre is compared with the centre of the others, so
    two unrelated faces score 0, not 0.71 (their own weight in a mean of two)."""
    emb = np.eye(2, D, dtype=np.float32)
    rc = robust_centre(emb)
    assert np.allclose(centre_similarity(emb, rc), 0.0, atol=1e-6)
    assert find_outliers(emb).outlier.all()
    one = find_outliers(emb[:1])
    assert np.isnan(one.similarity[0]) and not one.outlier.any()  # nothing to compare with


# --------------------------------------------------------------------------- mixed identity


def test_mixed_identity_whose_centre_is_the_other_person():
    """Issue 26 part 3: a folder that is 70% another person: its centre is that person and
    the named person's faces score low against it, yet the 2-means test finds both
    clusters (main = the majority), and cleaning judges each face against its own cluster."""
    rng = np.random.default_rng(2)
    other, co = _person(rng, 56)
    named, cn = _person(rng, 24, _with_cos(rng, co, 0.3))
    emb = np.concatenate([named[:12], other, named[12:]])  # source order mixes them
    truth = np.r_[np.ones(12), np.zeros(56), np.ones(12)]
    centre = _unit(emb.sum(0))
    assert centre @ co > 0.9 and centre @ cn < 0.65  # the folder's centre is the other person
    assert (emb[truth == 1] @ centre).mean() < (emb[truth == 0] @ centre).mean() - 0.15
    res = find_mixed(emb)
    assert res.mixed, res.reason
    assert res.similarity < 0.6
    assert np.array_equal(res.cluster_of(len(emb)), truth.astype(int))
    rep = clean_identity(emb)
    assert not rep.label_noise.any()
    assert rep.similarity[truth == 1].mean() > (emb[truth == 1] @ centre).mean() + 0.15
    assert mixed_identity_names("Ann", rep, "keep") == ["Ann"] * 80
    assert mixed_identity_names("Ann", rep, "split") == ["Ann#2" if t else "Ann" for t in truth]
    assert mixed_identity_names("Ann", rep, "cut") == [None if t else "Ann" for t in truth]
    assert split_name("Ann", 0) == "Ann" and split_name("Ann", 1) == "Ann#2"


def test_half_and_half_is_mixed_one_person_with_strays_is_not():
    """Issue 26 part 3: 50/50 is mixed; one person with 10% unrelated strays (each a
    different person) is not, and its strays are label noise."""
    rng = np.random.default_rng(3)
    a, ca = _person(rng, 40)
    b, _ = _person(rng, 40, _with_cos(rng, ca, 0.4))
    assert find_mixed(np.concatenate([a, b])).mixed
    one, _ = _person(rng, 80)
    strays = np.stack([_person(rng, 1)[0][0] for _ in range(8)])
    emb = np.concatenate([one, strays])
    rep = clean_identity(emb)
    assert not rep.mixed.mixed and rep.mixed.reason
    assert (rep.cluster == 0).all()
    assert np.flatnonzero(rep.label_noise).tolist() == list(range(80, 88))


def test_low_quality_faces_of_the_same_person_are_not_a_second_person():
    """Issue 26 part 3: the named person in sunglasses (a coherent group away from the
    centre, small embedding norms) looks like a second person to the embeddings alone;
    with the norms the group is left out of the clustering and the identity is not mixed."""
    rng = np.random.default_rng(4)
    a, ca = _person(rng, 90)
    shades, _ = _person(rng, 30, _with_cos(rng, ca, 0.3))
    emb = np.concatenate([a, shades])
    norms = np.r_[rng.uniform(14, 18, 90), rng.uniform(7, 10, 30)]
    alone = find_mixed(emb)
    assert alone.mixed and alone.similarity < 0.4
    res = find_mixed(emb, norms=norms)
    assert not res.mixed and "centres' similarity" in res.reason, res.reason


def test_identity_too_small_to_split_and_excluded_faces():
    """Issue 26 part 3: too few faces: not mixed, with the reason; excluded faces (e.g.
    duplicates) get no cluster, no similarity and are never label noise."""
    rng = np.random.default_rng(5)
    a, _ = _person(rng, 5)
    assert "too few" in find_mixed(a).reason
    ex = np.zeros(5, bool)
    ex[2] = True
    rep = clean_identity(a, exclude=ex)
    assert rep.cluster[2] == -1 and np.isnan(rep.similarity[2]) and not rep.label_noise[2]
    assert not np.isnan(np.delete(rep.similarity, 2)).any()


def test_knn_density_in_blocks_equals_the_full_matrix():
    """Issue 26 part 3: the k-nearest density computed in 16x16 tiles equals the one from
    the whole similarity matrix."""
    x = _unit(np.random.default_rng(6).normal(size=(75, D)))
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    full = np.sort(s, 1)[:, -5:].mean(1)
    assert np.allclose(knn_density(x, 5, block=16), full, atol=1e-6)
    assert np.allclose(knn_density(x, 5), full, atol=1e-6)


# --------------------------------------------------------------------------- duplicates


def test_exact_duplicates_by_bytes_and_by_pixels():
    """Issue 26 part 3: the same file twice (bytes) and the same image as PNG and BMP
    (pixels) are duplicates of their first occurrence; a re-encoded JPEG is not exact."""
    img = np.random.default_rng(7).integers(0, 256, (112, 112, 3), np.uint8)
    png = cv2.imencode(".png", img)[1].tobytes()
    bmp = cv2.imencode(".bmp", img)[1].tobytes()
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    other = cv2.imencode(".png", img[::-1])[1].tobytes()
    files = [png, other, bmp, png, jpg]
    decoded = [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR) for f in files]
    assert byte_digest(png) != byte_digest(bmp) and pixel_digest(decoded[0]) == pixel_digest(decoded[2])
    assert exact_duplicates([byte_digest(f) for f in files]).tolist() == [-1, -1, -1, 0, -1]
    d = find_duplicates(
        byte_digests=[byte_digest(f) for f in files],
        pixel_digests=[pixel_digest(i) for i in decoded],
        threshold=None,
    )
    assert d.duplicate_of.tolist() == [-1, -1, 0, 0, -1]
    assert d.kind.tolist() == ["", "", "pixels", "bytes", ""]
    assert exact_duplicates([None, None, b"x", b"x"]).tolist() == [-1, -1, -1, 2]


def _chain():
    """a, b, c on a great circle: a.b = b.c = 0.95, a.c = 0.805."""
    t = np.arccos(0.95)
    e = np.eye(D, dtype=np.float32)
    return np.stack([np.cos(k * t) * e[0] + np.sin(k * t) * e[1] for k in range(3)])


def test_near_duplicates_greedy_in_source_order():
    """Issue 26 part 3: a face duplicates the most similar earlier kept face; a chain
    (a~b, b~c, a!~c) keeps c (b is not kept, so nothing kept is that similar to c)."""
    abc = _chain()
    nd = near_duplicates(abc, 0.9)
    assert nd.duplicate_of.tolist() == [-1, 0, -1]
    assert np.isclose(nd.similarity[1], 0.95) and np.isnan(nd.similarity[0])
    assert near_duplicates(abc[::-1], 0.9).duplicate_of.tolist() == [-1, 0, -1]
    assert near_duplicates(abc, 0.96).duplicate_of.tolist() == [-1, -1, -1]
    # an exact copy of a near duplicate points at the kept original
    emb = np.concatenate([abc[:2], abc[1:2]])
    d = find_duplicates(emb, byte_digests=[b"a", b"b", b"b"], threshold=0.9)
    assert d.duplicate_of.tolist() == [-1, 0, 0]
    assert d.kind.tolist() == ["", "near", "bytes"]


def test_near_duplicates_in_blocks_equal_one_block():
    """Issue 26 part 3: near duplicates computed in 16-row tiles equal those from one tile
    (planted copies across tile borders), and every duplicate points at a kept face."""
    rng = np.random.default_rng(8)
    x = _unit(rng.normal(size=(200, D)))
    src = rng.choice(200, 40, replace=False)
    x = np.concatenate([x, _unit(x[src] + 0.02 * rng.normal(size=(40, D)))])
    x = x[rng.permutation(len(x))]
    a = near_duplicates(x, 0.9, block=16)
    b = near_duplicates(x, 0.9)
    assert np.array_equal(a.duplicate_of, b.duplicate_of)
    assert np.allclose(a.similarity, b.similarity, equal_nan=True)
    assert (a.duplicate_of >= 0).sum() == 40
    kept = a.duplicate_of < 0
    assert kept[a.duplicate_of[~kept]].all()
    assert (a.duplicate_of[~kept] < np.flatnonzero(~kept)).all()


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line():
    """Issue 26 part 3: NaN or zero rows, a wrong shape, lengths that differ, bad norms or
    mode: a CleanError naming what is wrong."""
    x = _unit(np.random.default_rng(9).normal(size=(10, D)))
    bad = x.copy()
    bad[3, 5] = np.nan
    with pytest.raises(CleanError, match="row 3 is not finite"):
        clean_identity(bad)
    bad[3] = 0
    with pytest.raises(CleanError, match="row 3 is all zeros"):
        near_duplicates(bad)
    with pytest.raises(CleanError, match="expected an \\(n, D\\) array"):
        robust_centre(x[0])
    with pytest.raises(CleanError, match="lengths differ"):
        find_duplicates(x, byte_digests=[b"a"] * 9)
    with pytest.raises(CleanError, match="norms: expected 10"):
        find_mixed(x, norms=np.ones(9))
    with pytest.raises(CleanError, match="exclude: expected 10"):
        find_outliers(x, exclude=np.zeros(3, bool))
    with pytest.raises(CleanError, match="every face is excluded"):
        robust_centre(x, exclude=np.ones(10, bool))
    with pytest.raises(CleanError, match="mixed mode"):
        mixed_identity_names("a", clean_identity(x), "drop")
    assert issubclass(CleanError, ValueError)


# --------------------------------------------------------------------------- real data

REAL = [
    "Aidana_Medenova",
    "Aikyn_Tolepbergen",
    "Aisaule_Bakhytbek",
    "Aiya_Shalkar",
    "Ali_Okapov",
    "Asel_Sadvakasova",
    "Asel_Sagatova",
    "Bayan_Esentayeva",
    "Denis_Ten",
    "Dilnaz_Akhmadiyeva",
    "Gennadii_Golovkin",
    "Iliya_Iliyn",
]  # none of them holds a coherent second person of its own (benchmarks/eval_cleaning.py)
PER_IDENTITY = 40
COPIES = {"copy": 2, "bmp": 4, "q75": 6, "flip": 8}  # kind: position of the copied crop


@pytest.fixture(scope="module")
def real(data_dir, scrfd_model, rec_model, tmp_path_factory):
    """The first 40 crops of 12 kz_celebs_112 identities plus a copy of 4 of them each,
    re-detected and aligned by a facekit run, embedded (flip-summed), with their norms."""
    from facekit.eval.recognition import OnnxEmbedder
    from facekit.pipeline.config import parse_config
    from facekit.pipeline.engine import run
    from facekit.vision.images import decode_image

    src = data_dir / "aligned_identities" / "kz_celebs_112"
    if not src.is_dir():
        _missing(f"{src} missing")
    tmp = tmp_path_factory.mktemp("clean26")
    root = tmp / "src"
    for ident in REAL:
        (root / ident).mkdir(parents=True)
        files = sorted(src.glob(f"{ident}/*.png"))[:PER_IDENTITY]
        for f in files:
            os.symlink(f, root / ident / f.name)
        for kind, k in COPIES.items():
            data = files[k].read_bytes()
            img = decode_image(data)
            ext = {"copy": ".png", "bmp": ".bmp", "q75": ".jpg", "flip": ".png"}[kind]
            out = root / ident / f"{files[k].stem}~{kind}{ext}"
            if kind == "copy":
                out.write_bytes(data)
            elif kind == "bmp":
                cv2.imwrite(str(out), img)
            elif kind == "q75":
                cv2.imwrite(str(out), img, [cv2.IMWRITE_JPEG_QUALITY, 75])
            else:
                cv2.imwrite(str(out), img[:, ::-1])
    text = (
        f"output: {tmp / 'out'}\nsource: {{plugin: folders, root: {root}, min_images: 1}}\n"
        f"detector: {{plugin: retinaface, model: {scrfd_model}}}\n"
        "aligner: {plugin: arcface, size: 112}\nsinks: [{plugin: folders, path: aligned}]\n"
    )
    run(parse_config(text, str(tmp / "clean26.yaml")), progress=False)
    import pyarrow.parquet as pq

    rows = pq.read_table(tmp / "out" / "results.parquet", columns=["path", "identity", "reason", "outputs"]).to_pylist()
    rows = sorted((r for r in rows if r["reason"] is None), key=lambda r: (r["identity"], Path(r["path"]).name))
    model = OnnxEmbedder(rec_model)
    crops = [(tmp / "out" / "aligned" / r["outputs"][0]).read_bytes() for r in rows]
    emb, flip = [], []
    for i in range(0, len(crops), 64):
        e, f = model.embed_encoded(crops[i : i + 64])
        emb.append(e)
        flip.append(f)
    emb, flip = np.concatenate(emb), np.concatenate(flip)
    raw = [Path(r["path"]).read_bytes() for r in rows]
    return {
        "stems": [Path(r["path"]).stem for r in rows],
        "idents": np.array([r["identity"] for r in rows]),
        "emb": _unit(_unit(emb) + _unit(flip)),
        "norms": np.linalg.norm(emb, axis=1),
        "bytes": [byte_digest(b) for b in raw],
        "pixels": [pixel_digest(decode_image(b)) for b in raw],
    }


def test_real_duplicates(real):
    """Issue 26 part 3, real crops: byte copies and PNG->BMP copies are all found; JPEG-75
    and mirrored copies (re-detected and re-aligned) at the default threshold: 24 of 24 on
    this subset, bar 21."""
    stems, idents, emb = real["stems"], real["idents"], real["emb"]
    of = np.full(len(stems), -1)
    for ident in REAL:
        g = np.flatnonzero(idents == ident)
        d = find_duplicates(
            emb[g], byte_digests=[real["bytes"][i] for i in g], pixel_digests=[real["pixels"][i] for i in g]
        )
        of[g] = np.where(d.duplicate, g[np.maximum(d.duplicate_of, 0)], -1)
    index = {s: i for i, s in enumerate(stems)}
    found = {kind: 0 for kind in COPIES}
    total = dict(found)
    for s, i in index.items():
        if "~" in s:
            orig, kind = s.split("~")
            if orig in index:
                total[kind] += 1
                o = index[orig]
                found[kind] += bool(of[i] >= 0 and of[i] in (o, of[o]))
    assert found["copy"] == total["copy"] >= 11 and found["bmp"] == total["bmp"] >= 11, (found, total)
    assert found["q75"] + found["flip"] >= 21, (found, total)


def _real_clean(real, lab):
    """Per identity of labels ``lab``: near duplicates out, then clean_identity (norms)."""
    emb, norms = real["emb"], real["norms"]
    noise = np.zeros(len(lab), bool)
    mixed = 0
    for n in np.unique(lab):
        g = np.flatnonzero(lab == n)
        rep = clean_identity(emb[g], exclude=find_duplicates(emb[g]).duplicate, norms=norms[g])
        noise[g] = rep.label_noise
        mixed += rep.mixed.mixed
    return noise, mixed


def test_real_moved_images(real):
    """Issue 26 part 3, real crops: 5% of each identity moved to another (seeds 0-4, 24
    moves each): the default threshold finds 99 of 120 (recall 0.825, per seed 0.667-0.917;
    bar 0.75) with precision 0.284 (bar 0.22): the data's own noise (children, other people)
    and hard faces are flagged too (benchmarks/eval_cleaning.py lists them). The moves make
    an identity look mixed twice in 60 identity checks (bar 4)."""
    keep = np.array(["~" not in s for s in real["stems"]])
    sub = {k: (v[keep] if isinstance(v, np.ndarray) else [x for x, m in zip(v, keep) if m]) for k, v in real.items()}
    idents = sub["idents"]
    names = np.array(REAL)
    hit = flagged = total = mixed = 0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        lab, moved = idents.copy(), np.zeros(len(idents), bool)
        for n in REAL:
            g = np.flatnonzero(idents == n)
            for i in rng.choice(g, round(0.05 * len(g)), replace=False):
                lab[i], moved[i] = rng.choice(names[names != n]), True
        noise, m = _real_clean(sub, lab)
        hit, flagged, total, mixed = hit + (noise & moved).sum(), flagged + noise.sum(), total + moved.sum(), mixed + m
    recall, precision = hit / total, hit / flagged
    assert recall >= 0.75 and precision >= 0.22, (recall, precision, total, flagged)
    assert mixed <= 4


def test_real_two_people_under_one_name(real):
    """Issue 26 part 3, real crops: every pair of the 12 identities merged under one name
    at 50/50 and at 70/30 (66 pairs each, seeded draws): measured recall 1.000 and 0.985,
    bar 0.92; none of the 12 real identities is called mixed (bar: at most 1)."""
    keep = np.array(["~" not in s for s in real["stems"]])
    emb, norms, idents = real["emb"][keep], real["norms"][keep], real["idents"][keep]
    groups = {n: np.flatnonzero(idents == n) for n in REAL}

    def mixed(g):
        return find_mixed(emb[g], exclude=find_duplicates(emb[g]).duplicate, norms=norms[g])

    assert sum(mixed(g).mixed for g in groups.values()) <= 1
    rng = np.random.default_rng(0)
    for ratio in (0.5, 0.7):
        hits = []
        for a, b in itertools.combinations(REAL, 2):
            m = min(len(groups[a]), len(groups[b]))
            na = round(m * ratio)
            ia = np.sort(rng.choice(groups[a], na, replace=False))
            g = np.concatenate([ia, np.sort(rng.choice(groups[b], m - na, replace=False))])
            hits.append(mixed(g).mixed)
        assert np.mean(hits) >= 0.92, (ratio, np.mean(hits))
