"""A sequential pass over a RecordIO dataset reads its idx in blocks (issue 13, item 5):
``FaceRec(..., stream=True)`` (the ``mxrec`` source in file order) holds no per-record
state, gives exactly what the in-memory index gives, falls back to it for any idx that is
not dense and increasing, and names the file when the idx changes under it."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from facekit.errors import FacekitError, RecordIOError
from facekit.formats.facerec import FaceRec
from facekit.formats.idx import _parse_idx_slow, idx_rows, load_idx, scan_idx
from facekit.formats.recordio import IndexedRecordIOReader, IndexedRecordIOWriter, IRHeader, pack

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ the idx itself


def _idx(p: Path, keys, offs, end=b"\n") -> Path:
    p.write_bytes(b"".join(b"%d\t%d\n" % (k, o) for k, o in zip(keys, offs))[: None if end else -1])
    return p


def test_scan_and_rows_give_load_idxs_rows_across_blocks(tmp_path):
    n = 12_000  # several 64 KiB blocks, boundaries inside lines
    keys, offs = list(range(5, 5 + n)), [4 + 1013 * k for k in range(n)]
    for end in (b"\n", b""):  # a last line without its newline too
        p = _idx(tmp_path / "a.idx", keys, offs, end)
        s = scan_idx(p, 1 << 40)
        assert (s.streamable, s.rows, s.first_key, s.first_offset, s.past_end) == (True, n, 5, 4, None)
        want_k, want_o = load_idx(p)
        for start, stop in ((0, n), (1, 7), (4095, 8193), (n - 1, n), (3, 3)):
            got = list(idx_rows(p, start, stop, s, 1 << 40))
            k = np.concatenate([g[0] for g in got]) if got else np.zeros(0, np.int64)
            o = np.concatenate([g[1] for g in got]) if got else np.zeros(0, np.int64)
            assert np.array_equal(k, want_k[start:stop]) and np.array_equal(o, want_o[start:stop]), (start, stop)


def test_scan_tells_what_cannot_be_streamed(tmp_path):
    for name, keys, offs in (
        ("gap", [0, 1, 3], [4, 8, 12]),
        ("unsorted keys", [1, 0, 2], [4, 8, 12]),
        ("same offset", [0, 1, 2], [4, 8, 8]),
        ("offsets fall", [0, 1, 2], [4, 12, 8]),
    ):
        assert not scan_idx(_idx(tmp_path / "c.idx", keys, offs), 100).streamable, name
    s = scan_idx(_idx(tmp_path / "c.idx", [0, 1, 2], [4, 100, 200]), 100)
    assert s.streamable and s.past_end == (1, 100)  # the first row past the .rec's end
    for body in (b"0\t4\n\n1\t8\n", b"0\t4\r\n1\t8\r\n", b"0\t4\n1 \t8\n", b"1" * 300_000 + b"\t4\n"):
        # valid for mxnet's line parser (blank lines, CRLF, spaces) or not: load_idx decides
        (tmp_path / "c.idx").write_bytes(body)
        assert not scan_idx(tmp_path / "c.idx", 100).streamable, body[:20]
    assert scan_idx(_idx(tmp_path / "e.idx", [], []), 100).rows == 0


def test_a_bad_line_is_named_as_load_idx_names_it(tmp_path):
    body = b"".join(b"%d\t%d\n" % (k, 4 + 8 * k) for k in range(9000)) + b"5\tnope\n"
    (tmp_path / "x.idx").write_bytes(body)
    (tmp_path / "x.rec").write_bytes(b"\0" * 100_000)
    with pytest.raises(RecordIOError) as a:
        IndexedRecordIOReader(tmp_path / "x.idx", tmp_path / "x.rec", stream=True)
    with pytest.raises(RecordIOError) as b:
        _parse_idx_slow(str(tmp_path / "x.idx"), body)
    assert str(a.value) == str(b.value) and "x.idx:9001: bad idx line" in str(a.value)
    # a line far longer than any well-formed one never grows a block without bound
    (tmp_path / "x.idx").write_bytes(b"1" * 300_000 + b"\t4\n")
    with pytest.raises(RecordIOError, match=r"x\.idx:1: bad idx line"):
        IndexedRecordIOReader(tmp_path / "x.idx", tmp_path / "x.rec", stream=True)


# ------------------------------------------------------------------ FaceRec(stream=True)


@pytest.fixture(scope="module")
def imgs(data_dir) -> list[bytes]:
    return [p.read_bytes() for p in sorted((data_dir / "aligned_112").glob("*.jpg"))]


def _run(tmp_path: Path, name: str, source: str, sink: str):
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run

    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(f"output: {tmp_path / name}\nsource: {source}\nsinks: [{sink}]\n")
    return run(load_config(cfg), progress=False)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, data_dir) -> dict[str, Path]:
    """The mxrec sink's layouts, packed from the shared aligned crops (3 identities)."""
    tmp = tmp_path_factory.mktemp("streamrec")
    root = tmp / "faces"
    crops = sorted((data_dir / "aligned_112").glob("*.jpg"))
    for i, c in enumerate(crops * 3):
        d = root / f"id{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:03d}.jpg").write_bytes(c.read_bytes())
    out = {}
    src = f"{{plugin: folders, root: {root}}}"
    for name, sink in {
        "insightface": "{plugin: mxrec, path: rec}",
        "plain": "{plugin: mxrec, path: rec, layout: plain}",
        "shards": "{plugin: mxrec, path: rec, shards: 2}",
        "shuffled": "{plugin: mxrec, path: rec, layout: plain, shuffle: true, seed: 3}",
    }.items():
        _run(tmp, name, src, sink)
        out[name] = tmp / name / "rec"
    return out


def _everything(rec: FaceRec) -> dict:
    parts = rec.parts
    return {
        "len": len(rec),
        "layout": rec.layout,
        "header0": [p.header0 for p in parts],
        "entries": list(rec.entries()),
        "iter": list(rec),
        "labels": rec.labels(with_ids=True)[0].tolist(),
        "bounds": [p.key_bounds() for p in parts],
        "keys": [p.image_keys.tolist() for p in parts],
        "offsets": [p.image_offsets.tolist() for p in parts],
        "identities": [p.identity_ranges() for p in parts],
        "first_of": [None if p.first_of is None else p.first_of.tolist() for p in parts],
    }


@pytest.mark.parametrize("layout", ["insightface", "plain", "shards", "shuffled"])
def test_a_streamed_dataset_reads_as_the_in_memory_one(datasets, layout):
    with FaceRec(datasets[layout]) as held, FaceRec(datasets[layout], stream=True) as streamed:
        assert all(p.streamed for p in streamed.parts) and not any(p.streamed for p in held.parts)
        first = list(streamed.entries())  # before anything loads the arrays
        assert first == list(held.entries()) and len(first) == len(held) > 0
        assert [p.key_bounds() for p in streamed.parts] == [p.key_bounds() for p in held.parts]
        assert all(p.streamed for p in streamed.parts)  # entries and bounds read no array
        assert _everything(streamed) == _everything(held)


def _rec(d: Path, imgs, keys, offsets_from=None) -> Path:
    """A plain file with the given keys; ``offsets_from``: rewrite the idx's offsets as
    the offsets of these row indices (duplicates, reordering)."""
    d.mkdir(parents=True, exist_ok=True)
    with IndexedRecordIOWriter(d / "train.idx", d / "train.rec") as w:
        for j, k in enumerate(keys):
            w.write_idx(k, pack(IRHeader(0, float(j // 3), j, 0), imgs[j % len(imgs)]))
    if offsets_from is not None:
        ks, os_ = load_idx(d / "train.idx")
        _idx(d / "train.idx", ks.tolist(), [int(os_[i]) for i in offsets_from])
    return d


def test_any_other_idx_is_held_as_before(tmp_path, imgs):
    cases = {
        "keys with a gap": _rec(tmp_path / "gap", imgs, [0, 1, 2, 5, 6, 7]),
        "keys from -2": _rec(tmp_path / "neg", imgs, [-2, -1, 0, 1, 2, 3]),
        "a repeated record": _rec(tmp_path / "dup", imgs, range(6), [0, 1, 2, 2, 4, 5]),
        "offsets falling": _rec(tmp_path / "fall", imgs, range(6), [0, 1, 2, 4, 3, 5]),
    }
    for name, d in cases.items():
        with FaceRec(d) as held, FaceRec(d, stream=True) as streamed:
            assert not streamed.parts[0].streamed, name
            assert _everything(streamed) == _everything(held), name
    with FaceRec(cases["a repeated record"], stream=True) as r:
        assert r.parts[0].duplicate_offsets == 1 and r.parts[0].first_of.tolist() == [0, 1, 2, 2, 4, 5]


def test_streaming_holds_nothing_per_record(tmp_path):
    """300,000 records: the in-memory index is 16 B a record (4.8 MB); opening the dataset
    streamed and walking every entry stays under a block's worth of Python heap."""
    n = 300_000
    d = tmp_path / "big"
    d.mkdir()
    with open(d / "train.rec", "wb") as f:  # sparse: the walk reads the idx, not the records
        f.truncate(64 * n + 64)
    _idx(d / "train.idx", range(n), [64 * k for k in range(n)])
    tracemalloc.start()
    try:
        with FaceRec(d, stream=True) as rec:
            assert rec.layout == "plain" and rec.parts[0].streamed  # key 0 is not a header record
            seen = sum(1 for _ in rec.entries())
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            with FaceRec(d) as held:
                held_peak = tracemalloc.get_traced_memory()[1]
                assert len(held) == n
    finally:
        tracemalloc.stop()
    assert seen == n
    assert peak < 2 << 20, peak  # the streamed walk: about one 64 KiB block of tokens
    assert held_peak > 16 * n, held_peak  # what it replaces (the test can fail)


def _move_record(d: Path, row: int) -> None:
    """Rewrite the idx with row ``row`` listing the record of the row before it."""
    ks, os_ = load_idx(d / "train.idx")
    os_[row] = os_[row - 1]
    _idx(d / "train.idx", ks.tolist(), os_.tolist())


def test_an_idx_that_changes_while_read_is_named(tmp_path):
    tiny = [b"\xff\xd8\xff" + bytes([i]) * 13 for i in range(5)]  # not decoded here
    d = _rec(tmp_path / "chg", tiny, range(20_000))  # several 64 KiB blocks of idx
    with FaceRec(d, stream=True) as rec:
        it = rec.entries()
        assert next(it)[1] == 0
        _move_record(d, 19_000)  # past the first block
        with pytest.raises(RecordIOError, match=r"train\.idx: the idx changed while it was being read"):
            list(it)
        with pytest.raises(RecordIOError, match=r"train\.idx: the idx changed"):
            rec.parts[0].image_keys  # loading it later checks the same


def test_a_rewritten_idx_that_still_looks_valid_is_named(tmp_path, imgs):
    """Offsets moved but still increasing, the first row changed, the idx deleted: each is
    named before a record is read at an offset the open did not check."""
    d = _rec(tmp_path / "rw", imgs, range(9))
    ks, os_ = load_idx(d / "train.idx")
    for what in ("moved", "first", "deleted"):
        with FaceRec(d, stream=True) as rec:
            if what == "deleted":
                (d / "train.idx").unlink()
                match = r"train\.idx: the idx cannot be read any more"
            else:
                o = os_.copy()
                o[5 if what == "moved" else 0] += 1  # same number of rows, keys, still increasing
                _idx(d / "train.idx", ks.tolist(), o.tolist())
                match = r"train\.idx: the idx changed"
            with pytest.raises(RecordIOError, match=match):
                list(rec.entries())
        _idx(d / "train.idx", ks.tolist(), os_.tolist())
    for row in (0, 5):  # the first row, or one that keeps the offsets increasing
        with IndexedRecordIOReader(d / "train.idx", d / "train.rec", stream=True) as r:
            o = os_.copy()
            o[row] += 4
            _idx(d / "train.idx", ks.tolist(), o.tolist())
            with pytest.raises(RecordIOError, match=r"train\.idx: the idx changed"):
                r.offset_array  # loaded later: must be the idx scanned
        _idx(d / "train.idx", ks.tolist(), os_.tolist())
        with FaceRec(d, stream=True) as rec:
            _idx(d / "train.idx", ks.tolist(), o.tolist())
            with pytest.raises(RecordIOError, match=r"train\.idx: the idx changed"):
                rec.parts[0].image_offsets  # the part's own load checks the same
        _idx(d / "train.idx", ks.tolist(), os_.tolist())


def test_the_mxrec_source_streams_and_names_a_changed_idx(tmp_path, imgs):
    from facekit.plugins import get_registry

    tiny = [b"\xff\xd8\xff" + bytes([i]) * 13 for i in range(5)]
    d = _rec(tmp_path / "src", tiny, range(20_000))
    cls = get_registry().get("source", "mxrec")
    src = cls(cls.Params(path=str(d)))
    assert src.count() == 20_000
    items = iter(src)
    first = next(items)
    assert first.path == f"{d / 'train.rec'}:0" and first.data == tiny[0]
    _move_record(d, 19_000)
    with pytest.raises(FacekitError, match=r"^mxrec source: .*train\.idx: the idx changed"):
        list(items)
    # in label order the dataset is held (random access): same samples as file order here
    d2 = _rec(tmp_path / "src2", imgs, range(12))
    by_file = [(s.path, s.data, s.label) for s in cls(cls.Params(path=str(d2)))]
    by_label = [(s.path, s.data, s.label) for s in cls(cls.Params(path=str(d2), order="label"))]
    assert by_file == by_label and len(by_file) == 12


def test_readers_random_access_is_unchanged_by_stream(tmp_path, imgs):
    d = _rec(tmp_path / "ra", imgs, range(7))
    with IndexedRecordIOReader(d / "train.idx", d / "train.rec", stream=True) as r:
        assert r.streamed and len(r) == 7
        assert r.read_idx(0) == pack(IRHeader(0, 0.0, 0, 0), imgs[0])  # row 0: no load
        assert r.streamed
        assert r.read_idx(5) == pack(IRHeader(0, 1.0, 5, 0), imgs[5 % len(imgs)])  # loads
        assert not r.streamed and r.keys == list(range(7))
