"""Memory that stays flat with the number of records (issue 13, item 5).

Python heap measured with ``tracemalloc`` (deterministic, no timing): what a writer still
holds after N records must not grow with N. The process-level peak RSS at 1k / 50k / 1M
records is measured by ``benchmarks/bench_detect_align.py --rss`` (too slow for the suite).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import pytest

from facekit.formats.idx import load_idx
from facekit.formats.recordio import IndexedRecordIOWriter


def _held_after(tmp_path, n: int, mode: str) -> int:
    """Bytes of Python heap still allocated by an open writer after ``n`` records."""
    payload = b"x" * 16
    tracemalloc.start()
    try:
        w = IndexedRecordIOWriter(tmp_path / f"{mode}{n}.idx", tmp_path / f"{mode}{n}.rec")
        base = tracemalloc.get_traced_memory()[0]
        if mode == "one":
            for k in range(1000, 1000 + n):
                w.write_idx(k, payload)
        else:
            for start in range(1000, 1000 + n, 500):
                keys = list(range(start, min(start + 500, 1000 + n)))
                w.write_many_idx(keys, [payload] * len(keys))
            del keys
        held = tracemalloc.get_traced_memory()[0] - base
        w.close()
    finally:
        tracemalloc.stop()
    keys, offs = load_idx(tmp_path / f"{mode}{n}.idx")
    assert len(keys) == n and keys[0] == 1000 and keys[-1] == 999 + n  # the idx is complete
    return held


def test_indexed_writer_holds_no_per_record_state(tmp_path):
    # the old writer kept every key in a list (~36 B a record): 20k records held ~700 kB more
    for mode in ("one", "many"):
        small = _held_after(tmp_path, 2_000, mode)
        large = _held_after(tmp_path, 20_000, mode)
        assert large - small < 32 * 1024, (mode, small, large)
    w = IndexedRecordIOWriter(tmp_path / "k.idx", tmp_path / "k.rec")
    w.close()
    assert not hasattr(w, "keys")


def _load_idx_peak(tmp_path, n: int) -> int:
    p = tmp_path / f"peak{n}.idx"
    p.write_bytes(b"".join(b"%d\t%d\n" % (k, 4 + 64 * k) for k in range(n)))
    tracemalloc.start()
    try:
        keys, offs = load_idx(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(keys) == n and int(offs[-1]) == 4 + 64 * (n - 1)
    return peak


def test_load_idx_peak_is_the_arrays_plus_one_block(tmp_path):
    """Reading an idx (FaceRecDataset, the mxrec source, every reader) must not hold the
    whole file and a Python object per token: the old parser peaked at ~130 B a record
    (1M records: +75 MiB of peak RSS for FaceRecDataset); the two int64 arrays are 16 B."""
    small = _load_idx_peak(tmp_path, 20_000)
    large = _load_idx_peak(tmp_path, 300_000)
    per_record = (large - small) / 280_000
    assert per_record < 24, per_record


def test_load_idx_blocks_give_the_slow_parsers_rows(tmp_path):
    """Block boundaries inside lines, a last line without its newline, an empty file, and a
    malformed line far past the first block (named by its line number)."""
    import numpy as np
    import pytest

    from facekit.errors import RecordIOError
    from facekit.formats.idx import _parse_idx_slow

    text = b"".join(b"%d\t%d\n" % (k * 7 - 3, 4 + 1013 * k) for k in range(12_000))
    for body in (text, text[:-1], b""):
        p = tmp_path / "x.idx"
        p.write_bytes(body)
        keys, offs = load_idx(p)
        want = _parse_idx_slow(str(p), body)
        assert np.array_equal(keys, want[0]) and np.array_equal(offs, want[1]) and keys.dtype == np.int64
    p.write_bytes(text + b"5\tnope\n")
    with pytest.raises(RecordIOError, match=r"x.idx:12001: bad idx line"):
        load_idx(p)


def test_a_finished_shard_is_not_held_while_the_next_shards_run(tmp_path, monkeypatch):
    # The engine and run_shards each kept the last shard's result (a loop variable, the
    # executor's handle) while the next shard was cut and run: two shards of samples alive,
    # 5 MB of JPEG bytes for 1,000 records, visible as peak RSS rising from 1k to 50k records.
    import weakref

    import cv2
    import numpy as np

    from facekit.pipeline import worker
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run

    rng = np.random.default_rng(0)
    for i in range(60):
        d = tmp_path / "root" / f"id{i // 10}"
        d.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
        (d / f"{i}.jpg").write_bytes(buf.tobytes())
    finished: list = []
    alive_at_start: list[int] = []
    steps = worker.ShardWorker.steps  # what every executor runs (inprocess a batch per wait)

    def recording(self, shard):
        alive_at_start.append(sum(r() is not None for r in finished))
        for step in steps(self, shard):
            if isinstance(step, worker.ShardResult):
                finished.append(weakref.ref(step))
            yield step

    monkeypatch.setattr(worker.ShardWorker, "steps", recording)
    cfg = tmp_path / "pack.yaml"
    cfg.write_text(
        f"output: {tmp_path / 'out'}\nshard_size: 10\n"
        f"source: {{plugin: folders, root: {tmp_path / 'root'}}}\nsinks: [{{plugin: mxrec, path: rec}}]\n"
    )
    s = run(load_config(cfg), progress=False)
    assert s.faces_kept == 60 and len(alive_at_start) == 6
    assert alive_at_start == [0] * 6  # no earlier shard's result alive when a shard starts


def _held_per_identity(build, n: int) -> float:
    """Python heap bytes a structure holds per identity after ``build(names)`` of ``n``
    identities (the names themselves allocated before the measurement)."""
    names = [f"identity_{i:07d}" for i in range(n)]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        held_obj = build(names)
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held_obj is not None
    return held / n


def test_the_gates_per_identity_account_is_compact():
    # summary.json lists every identity, so the gate keeps a count per identity for the
    # whole run: ~62 B each now (name index + int32 arrays; int64 arrays gave ~74 B); a dict
    # of dataclass objects plus a set of names took ~250 B (Glint360K: 360k identities).
    from facekit.pipeline.gate import IdentityGate
    from facekit.pipeline.shards import Outcome, ShardResult
    from facekit.stages import Reject, Sample

    def build(names):
        gate = IdentityGate(0, 2)
        for k in range(0, len(names), 500):
            outs = []
            for j, name in enumerate(names[k : k + 500]):
                outs.append(Outcome(name, [Sample(3 * j, f"{name}/a", name), Sample(3 * j + 1, f"{name}/b", name)], [], 2))
                outs.append(Outcome(name, [], [Reject(f"{name}/c", "no_face", "", name)], 1))
            rows = gate.admit(ShardResult(k, outs))
            assert len(rows) == 3 * len(names[k : k + 500])
            del outs, rows
        return gate

    per = _held_per_identity(build, 20_000)
    assert per < 70, per
    gate = build([f"x{i}" for i in range(3)])
    assert dict(gate.counts) == {f"x{i}": {"label": i, "kept": 2, "rejected": 1} for i in range(3)}


def test_mxrec_identity_ranges_are_compact():
    from plugins.mxrec import IdentityRanges

    def build(names):
        r = IdentityRanges()
        for label in range(len(names)):
            for k in range(3):
                r.note(label, 3 * label + k, 3 * label + k + 1)
        return r

    assert _held_per_identity(build, 20_000) < 40  # a list of 3-int lists took ~150 B
    r = build(["a", "b", "c"])
    assert len(r) == 3 and list(r) == [(0, 0, 3), (1, 3, 6), (2, 6, 9)]
    assert list(r.slice(1, 3)) == [(1, 3, 6), (2, 6, 9)]
    assert r.note(2, 9, 10) is False and list(r)[-1] == (2, 6, 10)
    assert r.note(5, 10, 11) is True and len(r) == 4


def test_the_mxrec_sink_keeps_each_identity_range_once(tmp_path):
    # a one-file mxrec sink numbers its records with the file's own keys: the ranges its
    # identity records, property and identities.tsv are written from were kept twice (the
    # sink's and the file's: 48 B an identity); one copy now (24 B). Measured as the slope
    # between two sizes, so the writer's fixed buffers do not count.
    import cv2
    import numpy as np

    from facekit.pipeline.publish import Publication
    from facekit.plugins import get_registry
    from facekit.stages import Sample

    cls = get_registry().get("sink", "mxrec")
    jpeg = cv2.imencode(".jpg", np.zeros((112, 112, 3), np.uint8))[1].tobytes()
    sinks = []

    def build(names, layout="insightface"):
        out = tmp_path / f"out{len(sinks)}"  # the sink's path absolute, as load_config makes it
        sink = cls(cls.Params(path=out / "rec", layout=layout))
        sink.open(Publication(out))
        sinks.append(sink)
        for label, name in enumerate(names):
            sink.write_many([Sample(2 * label + k, f"{name}/{k}.jpg", name, data=jpeg, label=label, stem=f"{k}") for k in range(2)])
        sink._flush()  # the pending batch is not per-identity state
        return sink

    build(["a", "b"]).close()  # one-off costs (imports) first
    for layout in ("insightface", "plain"):
        small = _held_per_identity(lambda names: build(names, layout), 10_000) * 10_000
        large = _held_per_identity(lambda names: build(names, layout), 30_000) * 30_000
        assert (large - small) / 20_000 < 32, (layout, (large - small) / 20_000)
        for sink, n in zip(sinks[-2:], (10_000, 30_000)):
            info = sink.close()
            assert info["identities"] == n and info["images"] == 2 * n


def test_the_mxrec_sources_seen_labels_are_compact_and_exact():
    # the mxrec source refuses a label met again after other labels (a shuffled file); the
    # labels met were a set of ints (~100 B a label with the ints, 2 MiB at 20,000)
    import random

    from plugins.mxrec import SeenLabels

    def build(names):
        seen = SeenLabels()
        for label in range(len(names)):
            seen.add(label)
        return seen

    assert _held_per_identity(build, 20_000) < 1  # one bit a dense label
    rng = random.Random(13)
    big = SeenLabels.BITMAP
    for _ in range(100):
        seen, ref = SeenLabels(), set()
        for _ in range(rng.randint(0, 200)):
            lab = rng.choice([rng.randint(0, 64), rng.randint(0, 1 << 28), big - rng.randint(1, 2), big + rng.randint(0, 2), (1 << 31) - 1])
            assert (lab in seen) == (lab in ref)
            seen.add(lab)
            ref.add(lab)
        probes = list(ref) + [rng.randint(0, (1 << 31) - 1) for _ in range(50)] + [0, big - 1, big]
        assert [p in seen for p in probes] == [p in ref for p in probes]
        assert len(seen.bits) <= big >> 3


def test_the_folders_sink_counts_identities_without_a_set(tmp_path):
    # the folders sink's summary gives its identities: counted as folders are made (a label
    # met twice cannot make its folder again), not kept in a set of every label (~60 B a
    # label with its int, 2 MiB of table at 20,000)
    from facekit.pipeline.publish import Publication
    from facekit.plugins import get_registry
    from facekit.stages import Sample

    cls = get_registry().get("sink", "folders")
    jpeg = b"\xff\xd8\xff\xe0" + bytes(60)
    sinks = []

    def build(names):
        out = tmp_path / f"out{len(sinks)}"  # the sink's path absolute, as load_config makes it
        sink = cls(cls.Params(path=out / "faces"))
        sink.open(Publication(out))
        sinks.append(sink)
        for label, name in enumerate(names):
            for k in range(2):
                sink.write(Sample(2 * label + k, f"{name}/{k}.jpg", name, data=jpeg, label=label, stem=f"{k}"))
        return sink

    info = build(["a", "b", "c"]).close()  # first, so that one-off costs (imports) are not counted
    assert info["identities"] == 3 and info["images"] == 6
    assert _held_per_identity(build, 3_000) < 20  # the text files' pending lines: ~10 B
    info = sinks[1].close()
    assert info["identities"] == 3_000 and info["images"] == 6_000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="facekit picks jemalloc on Linux only")
def test_import_facekit_makes_jemalloc_arrows_allocator_unless_set():
    # pyarrow's default allocator (mimalloc) keeps freed pages: a run's peak RSS grew with
    # the results table's row groups (benchmarks/RESULTS-detect-align.md)
    code = "import facekit, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["jemalloc"], out.stderr
    env["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["system"], out.stderr


def test_summary_json_is_written_from_the_compact_counts_byte_for_byte():
    # summary.json is json.dumps(summary.as_dict(), indent=2) plus a newline, but written one
    # identity at a time from the gate's arrays (no dict per identity for the whole run)
    import io
    import json

    from facekit.pipeline.engine import Summary
    from facekit.pipeline.gate import IdentityCounts

    counts = IdentityCounts()
    for i, name in enumerate(["a", "é\tx", 'q"u', "\udcff"]):
        j = counts.slot(name)
        counts.label[j], counts.kept[j], counts.rejected[j] = i - 1, 2 * i, i
    for ids in ({}, counts):
        s = Summary(images_read=5, rejects={"no_face": 1}, sinks={"sinks[0]": {"path": "x", "n": [1, 2]}}, identities=ids)
        f = io.StringIO()
        s.write_json(f)
        assert f.getvalue() == json.dumps(s.as_dict(), indent=2) + "\n"
        assert json.loads(f.getvalue())["identities"] == {n: dict(v) for n, v in ids.items()}
    assert counts["q\"u"] == {"label": 1, "kept": 4, "rejected": 2} and list(counts)[0] == "a"
