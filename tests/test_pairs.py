"""Pairs lists: LFW pairs.txt and the 'p1 p2 0|1' list parse to the right pairs; a missing
image or a malformed line fails naming the line; pairs generated from a folder."""

from __future__ import annotations

from itertools import combinations

import pytest

from conftest import write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.errors import FacekitError
from facekit.formats.pairs import PairsError, detect_format, folder_pairs, read_pairs, write_pairs


def test_lfw_pairs_txt_has_10_folds_of_300_plus_300(data_dir):
    path = data_dir / "eval" / "lfw_pairs.txt"
    assert detect_format(path) == "lfw"
    pairs = read_pairs(path)
    assert len(pairs) == 6000
    for fold in range(10):
        block = pairs[600 * fold : 600 * (fold + 1)]
        assert {p.fold for p in block} == {fold}
        assert [p.issame for p in block] == [True] * 300 + [False] * 300
    first, neg = pairs[0], pairs[300]
    # line 2: "Abel_Pacheco 1 4"; line 302: "Abdel_Madi_Shabneh 1 Dean_Barker 1"
    assert (first.line, first.a, first.b) == (
        2,
        "Abel_Pacheco/Abel_Pacheco_0001.jpg",
        "Abel_Pacheco/Abel_Pacheco_0004.jpg",
    )
    assert (neg.line, neg.a, neg.b) == (
        302,
        "Abdel_Madi_Shabneh/Abdel_Madi_Shabneh_0001.jpg",
        "Dean_Barker/Dean_Barker_0001.jpg",
    )
    assert pairs[-1].line == 6001


def test_list_format_matches_lfw_pairs(data_dir):
    path = data_dir / "eval" / "insightface_lfw_pairs_label.txt"
    assert detect_format(path) == "list"
    listed = read_pairs(path)
    lfw = read_pairs(data_dir / "eval" / "lfw_pairs.txt")
    assert len(listed) == 6000 and listed[0].line == 1 and listed[0].fold is None
    assert [(p.a, p.b, p.issame) for p in listed] == [(p.a, p.b, p.issame) for p in lfw]


@pytest.mark.parametrize(
    "text,fmt,match",
    [
        ("a.jpg b.jpg 1\nc.jpg d.jpg 2\n", "list", r"pairs.txt:2: label '2'"),
        ("a.jpg b.jpg 1\nc.jpg d.jpg\n", "list", r"pairs.txt:2: expected 'path1 path2 0\|1', found 2 fields"),
        ("1 1\nA 1 2\nB 1 C x\n", "lfw", r"pairs.txt:3: image number 'x'"),
        ("1 1\nB 1 C 1\nA 1 2\n", "lfw", r"pairs.txt:2: fold 1 must list 1 positive then 1 negative"),
        ("2 1\nA 1 2\nB 1 C 1\n", "lfw", r"header promises 2 folds x 2 x 1 = 4 pairs, the file has 2"),
        ("1 1\nA 1 2 3 4 5\n", "lfw", r"pairs.txt:2: expected 'name i j'"),
        ("\n\n", "auto", r"no pairs"),
    ],
)
def test_malformed_lines_are_named(tmp_path, text, fmt, match):
    p = tmp_path / "pairs.txt"
    p.write_text(text)
    with pytest.raises(PairsError, match=match):
        read_pairs(p, fmt)


def _pipeline(tmp_path, pairs_file, root, extra=""):
    cfg = write_config(
        tmp_path,
        f"""
        output: out
        source: {{plugin: pairs, pairs: {pairs_file}, root: {root}{extra}}}
        sinks:
          - {{plugin: evalbin, path: set.bin}}
        """,
    )
    return load_config(cfg)


def test_missing_image_fails_naming_the_line(tmp_path, data_dir):
    root = data_dir / "images" / "identities"
    p = tmp_path / "pairs.txt"
    p.write_text(
        "John_Salley/John_Salley_0001.jpg\tJohn_Salley/John_Salley_0002.jpg\t1\n"
        "Rob_Lowe/Rob_Lowe_0001.jpg\tJohn_Salley/John_Salley_0002.jpg\t0\n"
        "Rob_Lowe/Rob_Lowe_0001.jpg\tRob_Lowe/Rob_Lowe_0099.jpg\t1\n"
    )
    spec = _pipeline(tmp_path, p, root)
    with pytest.raises(PairsError) as e:
        run(spec, progress=False)
    msg = str(e.value)
    assert f"{p}:3: image b {root / 'Rob_Lowe/Rob_Lowe_0099.jpg'} does not exist" in msg
    assert "1 image(s)" in msg
    assert not (tmp_path / "out" / "set.bin").exists()


def test_lfw_pairs_against_a_root_without_lfw_fails_at_line_2(tmp_path, data_dir):
    spec = _pipeline(tmp_path, data_dir / "eval" / "lfw_pairs.txt", data_dir / "images" / "identities")
    with pytest.raises(FacekitError, match=r"lfw_pairs.txt:2: image a .*Abel_Pacheco_0001.jpg does not exist"):
        run(spec, progress=False)


def test_source_order_identities_and_flags(tmp_path, data_dir):
    root = data_dir / "images" / "identities"
    pairs = folder_pairs(root, seed=1)[:3] + [p for p in folder_pairs(root, seed=1) if not p.issame][:2]
    p = tmp_path / "pairs.txt"
    write_pairs(p, pairs)
    src = _pipeline(tmp_path, p, root).source.build()
    samples = list(src)
    assert src.count() == len(samples) == 10  # the progress total
    assert [s.key for s in samples] == list(range(10))
    assert [s.identity for s in samples] == [f"pair{i // 2:05d}" for i in range(10)]
    assert [s.path for s in samples] == [str(root / x) for q in pairs for x in (q.a, q.b)]
    refs = [s.pair for s in samples]
    assert [r.side for r in refs] == [0, 1] * 5 and [r.index for r in refs] == [i // 2 for i in range(10)]
    assert [r.issame for r in refs[::2]] == [q.issame for q in pairs] == [True] * 3 + [False] * 2
    assert refs[4].where == f"{p}:3" and refs[0].total == 5 and not refs[0].drop


def test_folder_pairs_all_positives_and_seeded_negatives(data_dir, tmp_path):
    root = data_dir / "images" / "identities"
    pairs = folder_pairs(root, seed=7)
    ids = {d.name: sorted(f.name for f in d.iterdir()) for d in root.iterdir()}
    want_pos = {(f"{n}/{a}", f"{n}/{b}") for n, files in ids.items() for a, b in combinations(files, 2)}
    pos = [(p.a, p.b) for p in pairs if p.issame]
    neg = [(p.a, p.b) for p in pairs if not p.issame]
    assert set(pos) == want_pos and len(pos) == len(want_pos) == 287
    assert len(neg) == len(pos)
    assert all(a.split("/")[0] != b.split("/")[0] for a, b in neg)
    assert len({frozenset(x) for x in neg}) == len(neg)  # no negative twice
    assert folder_pairs(root, seed=7) == pairs and folder_pairs(root, seed=8) != pairs
    # LFW-style blocks: each of the 10 contiguous evaluation folds holds both kinds
    n = len(pairs)
    for k in range(10):
        block = pairs[k * n // 10 : (k + 1) * n // 10]
        assert any(p.issame for p in block) and not all(p.issame for p in block)
    out = tmp_path / "pairs.txt"
    write_pairs(out, pairs)
    again = read_pairs(out)
    assert [(p.a, p.b, p.issame) for p in again] == [(p.a, p.b, p.issame) for p in pairs]


def test_pairs_command_writes_a_list_the_pairs_source_reads(tmp_path, data_dir):
    """`facekit pairs ROOT -o LIST`: the README's way to a verification set from your own
    folders; every fold holds both kinds, the pairs source reads it back."""
    from conftest import facekit_cli
    from facekit.formats.pairs import read_pairs

    root = data_dir / "images" / "identities"
    r = facekit_cli("pairs", root, "-o", tmp_path / "p.txt", "--seed", "3")
    assert r.returncode == 0, r.stderr
    pairs = read_pairs(tmp_path / "p.txt")
    assert len(pairs) == 574 and sum(p.issame for p in pairs) == 287
    n = len(pairs) // 10
    for f in range(10):
        block = pairs[f * n : (f + 1) * n]
        assert {p.issame for p in block} == {True, False}
    assert all((root / p.a).is_file() and (root / p.b).is_file() for p in pairs)
