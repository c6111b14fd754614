"""Issue 30 items 11 and 12.

Item 11: the report's integer histograms ("images per identity") label no bin edge above
the data's maximum: the axis ends at the largest value, bins end there.

Item 12: pairs files whose numbers are written as floats (``name<TAB>70.<TAB>530.``) are
read when the value is exactly a whole number and refused, naming file:line, otherwise;
``facekit pairs`` caps the pairs per identity and in total, seeded and deterministic.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from conftest import facekit_cli, write_config
from facekit.formats.pairs import PairsError, detect_format, read_pairs
from facekit.report.charts import histogram_svg

# ------------------------------------------------------------------ item 11: histogram axis


def _axis(svg: str) -> tuple[list[float], list[tuple[float, float]]]:
    """The x-axis label values and the ``(first, last)`` integers of each bar's tooltip."""
    labels = [float(x) for x in re.findall(r'class="xl"[^>]*>([0-9.]+)<', svg)]
    bars = []
    for t in re.findall(r"<title>([^<:]+):", svg):
        a, _, b = t.partition("-")
        bars.append((float(a), float(b or a)))
    return labels, bars


@pytest.mark.parametrize("extra", [[], [936]])
def test_images_per_identity_axis_stops_at_the_largest_count(data_dir, extra):
    """issue 30 item 11: images per identity of the 25 real kz_celebs identities (69 to 101
    each), and with one identity of 936 images (the report's case, whose axis read 948):
    the axis labels are the smallest count, a value between and the largest count, and the
    last bar ends at the largest count."""
    root = data_dir / "aligned_identities" / "kz_celebs_112"
    counts = [sum(1 for _ in d.iterdir()) for d in sorted(root.iterdir()) if d.is_dir()] + extra
    assert len(counts) >= 25
    svg = histogram_svg(counts, "Kept images per identity", integer=True)
    labels, bars = _axis(svg)
    assert labels[0] == min(counts) and labels[-1] == max(counts), labels
    assert all(min(counts) <= x <= max(counts) for x in labels), labels
    assert bars[-1][1] == max(counts) and bars[0][0] == min(counts), bars
    assert sum(int(m) for m in re.findall(r"<title>[^<]*: (\d+)</title>", svg)) == len(counts)
    # the bars end at the axis' end: the last bar's right edge is the plot's right edge
    rects = [(float(x), float(w)) for x, w in re.findall(r'<rect x="([0-9.]+)" y="[0-9.]+" width="([0-9.]+)"', svg)]
    right = float(re.search(r'<line x1="[0-9.]+" y1="[0-9.]+" x2="([0-9.]+)"', svg).group(1))
    assert abs(rects[-1][0] + rects[-1][1] + 0.5 - right) < 1.0, (rects[-1], right)


# ------------------------------------------------------------------ item 12: float indices


def _float_lfw(data_dir, tmp_path, style: str):
    """The real LFW pairs.txt with its numbers written as floats (``70.`` / ``70.0`` /
    ``7e1``), tab-separated."""
    lines = (data_dir / "eval" / "lfw_pairs.txt").read_text().splitlines()
    conv = {"dot": lambda n: f"{n}.", "dot0": lambda n: f"{n}.0", "exp": lambda n: f"{n}e0"}[style]
    out = []
    for ln in lines:
        toks = ln.split()
        out.append("\t".join(conv(t) if t.isdigit() else t for t in toks))
    p = tmp_path / f"pairs_{style}.txt"
    p.write_text("\n".join(out) + "\n")
    return p


@pytest.mark.parametrize("style", ["dot", "dot0", "exp"])
def test_lfw_pairs_with_float_numbers_read_as_the_original(data_dir, tmp_path, style):
    """issue 30 item 12: ``Irada_Ramadanova<TAB>70.<TAB>530.``: numbers that are exactly
    whole read as the integers they are (header too): the same 6,000 pairs as the original."""
    p = _float_lfw(data_dir, tmp_path, style)
    assert detect_format(p) == "lfw"
    got = read_pairs(p)
    want = read_pairs(data_dir / "eval" / "lfw_pairs.txt")
    assert [(x.a, x.b, x.issame, x.fold) for x in got] == [(x.a, x.b, x.issame, x.fold) for x in want]


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 1\nA\t1.\t2.\nIrada_Ramadanova\t70.5\tB\t530.\n", "pairs.txt:3: image number '70.5' is not an integer"),
        ("1 1\nA\t1.\t2.\nB\t1.\tC\t-2.0\n", "pairs.txt:3: image number '-2.0' is negative"),
        ("1 1\nA\t1.\t2.\nB\t1.\tC\t1e999\n", "pairs.txt:3: image number '1e999' is too large (the most is 1,000,000,000,000,000)"),
        ("a.jpg\tb.jpg\t1.\nc.jpg\td.jpg\t0.5\n", "pairs.txt:2: label '0.5' must be 1 (same) or 0 (different)"),
    ],
)
def test_float_numbers_that_are_not_whole_are_refused_naming_the_line(tmp_path, text, message):
    """issue 30 item 12: 70.5 (or a negative, or an absurd exponent) is refused with one
    line naming file:line."""
    p = tmp_path / "pairs.txt"
    p.write_text(text)
    with pytest.raises(PairsError) as e:
        read_pairs(p)
    assert str(e.value) == f"{tmp_path}/{message}"


def test_pairs_source_reads_a_float_indexed_file(tmp_path, data_dir):
    """issue 30 item 12: the ``pairs`` source of a pipeline reads a real-image LFW file
    written with float numbers (it refused it)."""
    from facekit.pipeline.config import load_config

    root = data_dir / "images" / "identities"
    p = tmp_path / "pairs.txt"
    p.write_text("1\t1\nJohn_Salley\t1.\t2.\nRob_Lowe\t1.0\tJohn_Salley\t3.\n")
    cfg = write_config(
        tmp_path,
        f"""
        output: out
        source: {{plugin: pairs, pairs: {p}, root: {root}}}
        sinks:
          - {{plugin: evalbin, path: set.bin}}
        """,
    )
    src = load_config(cfg).source.build()
    assert [s.path for s in src] == [
        str(root / x)
        for x in (
            "John_Salley/John_Salley_0001.jpg", "John_Salley/John_Salley_0002.jpg",
            "Rob_Lowe/Rob_Lowe_0001.jpg", "John_Salley/John_Salley_0003.jpg",
        )
    ]


# ------------------------------------------------------------------ item 12: pair caps


def _written(path):
    pairs = read_pairs(path)
    pos = [p for p in pairs if p.issame]
    return pairs, pos, Counter(p.a.split("/")[0] for p in pos)


def test_pairs_command_caps_per_identity_and_in_total(tmp_path, data_dir):
    """issue 30 item 12: ``--max-per-identity`` and ``--max-pairs`` cap the pairs of the 2,298
    real kz_celebs crops (25 identities of 69-101 images: 100,000+ positives uncapped), the
    same seed gives the same file, another seed another; every fold keeps both kinds; the
    options are documented in --help."""
    root = data_dir / "aligned_identities" / "kz_celebs_112"
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    r = facekit_cli("pairs", root, "-o", a, "--max-per-identity", "30", "--seed", "4")
    assert r.returncode == 0, r.stderr
    pairs, pos, per = _written(a)
    assert len(per) == 25 and set(per.values()) == {30} and len(pairs) == 2 * 750
    assert len({(p.a, p.b) for p in pos}) == 750 and all(p.a < p.b for p in pos)
    assert r.stdout.strip() == f"{a}: 1500 pairs (750 positive, 750 negative) in 10 folds"

    r = facekit_cli("pairs", root, "-o", b, "--max-per-identity", "30", "--max-pairs", "201", "--seed", "4")
    assert r.returncode == 0, r.stderr
    pairs, pos, per = _written(b)
    assert len(pairs) == 200 and len(pos) == 100 and max(per.values()) <= 30
    assert set((p.a, p.b) for p in pos) <= set((p.a, p.b) for p in _written(a)[1])  # drawn from the capped
    for f in range(10):
        assert {p.issame for p in pairs[20 * f : 20 * (f + 1)]} == {True, False}
    r = facekit_cli("pairs", root, "-o", c, "--max-per-identity", "30", "--max-pairs", "201", "--seed", "4")
    assert r.returncode == 0 and c.read_bytes() == b.read_bytes()
    r = facekit_cli("pairs", root, "-o", c, "--max-per-identity", "30", "--max-pairs", "201", "--seed", "5")
    assert r.returncode == 0 and c.read_bytes() != b.read_bytes()

    r = facekit_cli("pairs", "--help")
    assert "--max-per-identity" in r.stdout and "--max-pairs" in r.stdout and "--seed" in r.stdout
    r = facekit_cli("pairs", root, "-o", c, "--max-pairs", "1")
    assert r.returncode == 2 and "--max-pairs" in r.stderr
