"""Robust RecordIO reading: damaged .rec/.idx files give clear errors naming the file, key
and offset, never a hang or a huge allocation; fuzzed with hypothesis on mutated real
records (the aligned_112 photos)."""

from __future__ import annotations

import os
import random
import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from facekit.errors import RecordIOError
from facekit.formats.facerec import FaceRec
from facekit.formats.rec_verify import verify
from facekit.formats.recordio import (
    MAGIC_BYTES,
    IndexedRecordIOReader,
    IndexedRecordIOWriter,
    IRHeader,
    RecordIOReader,
    build_index,
    load_idx,
    pack,
    unpack,
)


def _aligned(data_dir) -> list[bytes]:
    return [p.read_bytes() for p in sorted((data_dir / "aligned_112").glob("*.jpg"))]


@pytest.fixture(scope="module")
def good(tmp_path_factory, data_dir) -> tuple[bytes, bytes, list[bytes]]:
    """A plain .rec/.idx of the 8 aligned faces (one with the magic inside, split in parts)."""
    d = tmp_path_factory.mktemp("good")
    imgs = _aligned(data_dir)
    imgs[3] = imgs[3][:40] + MAGIC_BYTES + imgs[3][44:]  # payload offset 64: aligned -> 2 parts
    payloads = [pack(IRHeader(0, float(i // 4), i, 0), b) for i, b in enumerate(imgs)]
    with IndexedRecordIOWriter(d / "a.idx", d / "a.rec") as w:
        for i, p in enumerate(payloads):
            w.write_idx(i, p)
    return (d / "a.rec").read_bytes(), (d / "a.idx").read_bytes(), payloads


def _files(tmp_path: Path, rec: bytes, idx: bytes) -> tuple[Path, Path]:
    (tmp_path / "t.rec").write_bytes(rec)
    (tmp_path / "t.idx").write_bytes(idx)
    return tmp_path / "t.idx", tmp_path / "t.rec"


def _offsets(idx: bytes) -> list[int]:
    return [int(line.split(b"\t")[1]) for line in idx.splitlines()]


def test_good_file_reads_back(tmp_path, good):
    rec, idx, payloads = good
    r = IndexedRecordIOReader(*_files(tmp_path, rec, idx))
    assert [r.read_idx(k) for k in r.keys] == payloads
    assert [p for _, p in r] == payloads
    assert (int.from_bytes(rec[_offsets(idx)[3] + 4 : _offsets(idx)[3] + 8], "little") >> 29) == 1  # split


def test_truncated_file_names_file_key_offset(tmp_path, good):
    rec, idx, _ = good
    off = _offsets(idx)[7]
    i, rp = _files(tmp_path, rec[: off + 100], idx)
    r = IndexedRecordIOReader(i, rp)
    with pytest.raises(RecordIOError, match=rf"t\.rec: key 7, record at offset {off}: length \d+ at offset {off} points past end of file"):
        r.read_idx(7)
    with pytest.raises(RecordIOError, match=rf"t\.rec: record at offset {off}:"):
        list(RecordIOReader(rp))
    assert r.read_idx(6)  # the records before are fine
    _, _, info = build_index(rp, partial=True)
    assert info["records"] == 7 and f"offset {off}" in info["error"]


def test_wrong_magic(tmp_path, good):
    rec, idx, _ = good
    off = _offsets(idx)[2]
    bad = bytearray(rec)
    bad[off] ^= 0xFF
    r = IndexedRecordIOReader(*_files(tmp_path, bytes(bad), idx))
    with pytest.raises(RecordIOError, match=rf"t\.rec: key 2, record at offset {off}: bad magic 0x[0-9a-f]{{8}} at offset {off}"):
        r.read_idx(2)


def test_length_past_end_allocates_nothing(tmp_path, good, monkeypatch):
    rec, idx, _ = good
    off = _offsets(idx)[1]
    bad = bytearray(rec)
    bad[off + 4 : off + 8] = struct.pack("<I", (1 << 29) - 1)  # cflag 0, length 512 MiB - 1
    i, rp = _files(tmp_path, bytes(bad), idx)
    sizes = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, o: sizes.append(n) or real(fd, n, o))
    r = IndexedRecordIOReader(i, rp)
    with pytest.raises(RecordIOError, match=rf"key 1, record at offset {off}: length 536870911 at offset {off} points past end"):
        r.read_idx(1)
    assert max(sizes) < len(rec)


def test_idx_offset_into_a_record(tmp_path, good):
    rec, idx, _ = good
    offs = _offsets(idx)
    for delta, msg in ((12, "bad magic .* not the start of a record"), (2, "offset is not on a 4-byte record boundary")):
        lines = idx.decode().splitlines()
        lines[5] = f"5\t{offs[5] + delta}"
        r = IndexedRecordIOReader(*_files(tmp_path, rec, ("\n".join(lines) + "\n").encode()))
        with pytest.raises(RecordIOError, match=rf"t\.rec: key 5, record at offset {offs[5] + delta}: {msg}"):
            r.read_idx(5)
    # an offset on the second part of a split record: a cflag out of sequence
    second = offs[3] + 8 + 64
    assert rec[second : second + 4] == MAGIC_BYTES
    lines = idx.decode().splitlines()
    lines[3] = f"3\t{second}"
    r = IndexedRecordIOReader(*_files(tmp_path, rec, ("\n".join(lines) + "\n").encode()))
    with pytest.raises(RecordIOError, match=rf"key 3, record at offset {second}: cflag 3 .*not the start of a record"):
        r.read_idx(3)


@pytest.mark.parametrize(
    "line", ["garbage", "1\t2\t3", "x\t10", "4\t-8", "7", "3 4", "5\t99999999999999999999999"]
)
def test_garbage_idx_line(tmp_path, good, line):
    rec, idx, _ = good
    lines = idx.decode().splitlines()
    lines.insert(4, line)
    i, rp = _files(tmp_path, rec, ("\n".join(lines) + "\n").encode())
    with pytest.raises(RecordIOError, match=r"t\.idx:5: (bad idx line|idx line)"):
        IndexedRecordIOReader(i, rp)


def test_idx_offset_past_end(tmp_path, good):
    rec, idx, _ = good
    i, rp = _files(tmp_path, rec, idx + f"8\t{len(rec) + 400}\n".encode())
    with pytest.raises(RecordIOError, match=rf"t\.idx: key 8 offset {len(rec) + 400} is past the end of .*t\.rec"):
        IndexedRecordIOReader(i, rp)


def test_missing_idx_is_rebuilt_by_scanning(tmp_path, good):
    rec, idx, payloads = good
    (tmp_path / "t.rec").write_bytes(rec)
    fr = FaceRec(tmp_path / "t.rec")
    assert fr.parts[0].idx_path is None and len(fr) == 8
    assert [unpack(p)[1] for p in payloads] == [img for _, _, img in fr]


def test_damaged_records_become_rejects_in_a_pipeline(tmp_path, good):
    from conftest import write_config
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run

    rec, idx, _ = good
    off = _offsets(idx)[2]
    bad = bytearray(rec)
    bad[off + 1] ^= 0x55
    _files(tmp_path, bytes(bad), idx)
    cfg = write_config(tmp_path, "output: out\nsource: {plugin: mxrec, path: t.rec}\nsinks: [{plugin: mxrec, path: rec, layout: plain}]\n")
    s = run(load_config(cfg), progress=False)
    assert s.faces_kept == 7 and s.rejects == {"bad_record": 1}
    assert f"key 2, record at offset {off}: bad magic" in (tmp_path / "out" / "rejects.tsv").read_text()


# --------------------------------------------------------------------------- fuzzing

MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.integers(1, 12)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 12)),
    st.tuples(st.just("length"), st.integers(0, 7), st.integers(0, 2**32 - 1)),
)


def _mutate(rec: bytes, idx: bytes, muts) -> tuple[bytes, bytes]:
    b = bytearray(rec)
    offs = _offsets(idx)
    for kind, pos, val in muts:
        if not b:
            break
        p = pos % len(b)
        if kind == "flip":
            b[p] ^= val
        elif kind == "truncate":
            del b[p:]
        elif kind == "insert":  # bytes derived from the example: reproducible
            b[p:p] = random.Random(pos * 31 + val).randbytes(val)
        elif kind == "delete":
            del b[p : p + val]
        elif kind == "length":
            o = offs[pos] + 4
            if o + 4 <= len(b):
                b[o : o + 4] = struct.pack("<I", val)
    return bytes(b), idx


def _check_mutation(tmp_path, good, muts, idx_junk) -> None:
    """Any mutation of real records: every read either returns bytes or raises
    RecordIOError; scans terminate; verify and inspect report instead of crashing (a
    mutated label of 1e38 or inf, a flag of 2**32-1, used to give a raw OverflowError or a
    16 GB read); no read asks for more than the file holds (beyond the 1 MiB resync
    window)."""
    from facekit.formats.rec_inspect import inspect

    rec, idx, _ = good
    rec2, idx2 = _mutate(rec, idx, muts)
    if idx_junk:
        idx2 = idx2 + idx_junk
    i, rp = _files(tmp_path, rec2, idx2)
    limit = max(len(rec2), (1 << 20) + 8) + 8
    real = os.pread

    def pread(fd, n, o):
        assert n <= limit, f"pread of {n} bytes on a {len(rec2)}-byte file"
        return real(fd, n, o)

    t0 = time.perf_counter()
    os.pread = pread
    try:
        try:
            r = IndexedRecordIOReader(i, rp)
        except RecordIOError:
            r = None
        if r is not None:
            for k in r.keys:
                try:
                    unpack(r.read_idx(k))
                except RecordIOError:
                    pass
                try:
                    r.read_header(r.idx[k], k)
                except RecordIOError:
                    pass
            r.close()
        try:
            for _ in RecordIOReader(rp):
                pass
        except RecordIOError:
            pass
        with RecordIOReader(rp) as rr:
            walked = list(rr.scan(resync=True))
        assert all(nxt > off for off, nxt, _, _ in walked)
        try:
            build_index(rp)
        except RecordIOError:
            pass
        try:
            load_idx(i)
        except RecordIOError:
            pass
        rep = verify(tmp_path, prefix="t", decode=True)
        assert rep["ok"] == (not rep["problems"])
        try:
            info = inspect(tmp_path, prefix="t", sample=8)
            assert info["images"] >= 0
        except RecordIOError as e:
            assert "\n" not in str(e)
    finally:
        os.pread = real
    assert time.perf_counter() - t0 < 30  # a hang guard, not a speed test


# float32 label of record 0 (file bytes 12..15, little-endian) and its flag (8..11)
@example(muts=[("flip", 15, 0x7F)], idx_junk=b"")  # label 1.7e38: OverflowError in verify
@example(muts=[("flip", 14, 0x80), ("flip", 15, 0x7F)], idx_junk=b"")  # label inf
@example(muts=[("flip", 14, 0xC0), ("flip", 15, 0x7F)], idx_junk=b"")  # label nan
@example(muts=[("flip", 8, 0xFF), ("flip", 9, 0xFF), ("flip", 10, 0xFF), ("flip", 11, 0xFF)], idx_junk=b"")  # flag 2**32-1
@example(muts=[("length", 3, 2**32 - 1)], idx_junk=b"")
@example(muts=[("truncate", 0, 0)], idx_junk=b"")  # an empty .rec
@settings(
    max_examples=150, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(muts=st.lists(MUTATION, min_size=1, max_size=4), idx_junk=st.binary(max_size=24))
def test_fuzz_mutated_records(tmp_path, good, muts, idx_junk):
    """Mutated real records, deterministic (derandomized: the same 150 examples every run,
    plus the recorded failing ones): see :func:`_check_mutation`."""
    _check_mutation(tmp_path, good, muts, idx_junk)


@pytest.mark.fuzz
@settings(
    max_examples=int(os.environ.get("FACEKIT_FUZZ_EXAMPLES", "3000")), deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(muts=st.lists(MUTATION, min_size=1, max_size=6), idx_junk=st.binary(max_size=64))
def test_fuzz_mutated_records_long(tmp_path, good, muts, idx_junk):
    """The long, randomised fuzz run (``pytest -m fuzz``; excluded by default, not in CI):
    new examples every run, ``FACEKIT_FUZZ_EXAMPLES`` of them (3000)."""
    _check_mutation(tmp_path, good, muts, idx_junk)


def _dmlc_reference(p: bytes) -> bytes:
    """dmlc RecordIOWriter::WriteRecord, transcribed loop for loop (recordio.cc)."""
    n = len(p)
    out, dptr = [], 0
    for i in range(0, (n >> 2) << 2, 4):
        if p[i : i + 4] == MAGIC_BYTES:
            out += [MAGIC_BYTES, struct.pack("<I", ((1 if dptr == 0 else 2) << 29) | (i - dptr)), p[dptr:i]]
            dptr = i + 4
    out += [MAGIC_BYTES, struct.pack("<I", ((3 if dptr else 0) << 29) | (n - dptr)), p[dptr:], b"\0" * (-n % 4)]
    return b"".join(out)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    chunks=st.lists(st.one_of(st.binary(max_size=9), st.just(MAGIC_BYTES), st.just(MAGIC_BYTES * 2)), max_size=12)
)
def test_framing_matches_dmlc_and_reads_back(tmp_path_factory, chunks):
    """Payloads dense in magics at every alignment: framing equals dmlc's loop byte for
    byte, and the reader puts every payload back together."""
    from facekit.formats.recordio import encode_record

    payloads = [b"".join(chunks), b"".join(reversed(chunks)), b"x" + b"".join(chunks)]
    d = tmp_path_factory.mktemp("frame")
    with open(d / "f.rec", "wb") as f:
        for p in payloads:
            enc = encode_record(p)
            assert enc == _dmlc_reference(p)
            f.write(enc)
    assert [p for _, p in RecordIOReader(d / "f.rec")] == payloads


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(
    records=st.lists(
        st.tuples(
            st.lists(st.one_of(st.binary(max_size=9), st.just(MAGIC_BYTES)), max_size=8),
            st.integers(0, 3),
            st.sampled_from(["bytes", "pieces"]),
        ),
        max_size=8,
    )
)
def test_batched_framing_equals_record_by_record(records):
    """``encode_records`` (one framing pass and one vectorised magic scan per batch) gives
    the bytes of ``encode_record`` applied to each payload, whether a payload comes whole
    or as pieces (the IRHeader + image split, aligned or not), magics anywhere."""
    from facekit.formats.recordio import encode_record, encode_records

    payloads, given = [], []
    for chunks, cut, kind in records:
        p = b"".join(chunks)
        payloads.append(p)
        given.append(p if kind == "bytes" else (p[: cut * 4 if cut else 3], p[cut * 4 if cut else 3 :]))
    data, starts = encode_records(given)
    framed = [encode_record(p) for p in payloads]
    assert data == b"".join(framed)
    assert starts == [sum(len(f) for f in framed[:i]) for i in range(len(framed))]
