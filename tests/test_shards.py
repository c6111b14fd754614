"""Shards as the unit of work: cutting at identity boundaries, reassembly in shard order
under an executor that finishes shards out of order, retries of lost shards, the gate."""

from __future__ import annotations

import pytest

from facekit.errors import FacekitError
from facekit.pipeline.executor import Executor, ShardFailed, run_shards
from facekit.pipeline.gate import IDENTITY_TOO_SMALL, IdentityGate
from facekit.pipeline.shards import (
    SHARD_FAILED,
    Outcome,
    Shard,
    ShardResult,
    MIN_TAPER_SIZE,
    auto_shard_size,
    cut_shards,
    taper_size,
)
from facekit.stages import Reject, Sample


def _items(spec: str):
    """``"aab c"`` -> samples of identities a, a, b, c (a space: a source reject of c)."""
    out = []
    for i, ch in enumerate(spec.replace(" ", "")):
        out.append(Sample(i, f"{ch}/{i}.jpg", ch))
    return out


def test_shards_hold_whole_identities_and_every_item_once():
    items = _items("aaaabbcdddddde")
    for size in (1, 2, 3, 5, 100):
        shards = list(cut_shards(items, size))
        assert [s.index for s in shards] == list(range(len(shards)))
        assert [it for s in shards for it in s.items] == items
        seen = set()
        for s in shards:
            ids = {it.identity for it in s.items}
            assert not ids & seen, f"size {size}: an identity spans two shards"
            seen |= ids
            assert len(s.items) >= size or s is shards[-1]
    assert [len(s.items) for s in cut_shards(items, 3)] == [4, 3, 6, 1]
    assert [len(s.items) for s in cut_shards(items, 1)] == [4, 2, 1, 6, 1]
    with pytest.raises(ValueError):
        list(cut_shards(items, 0))


def test_source_rejects_stay_with_their_identity():
    items = [Sample(0, "a/1", "a"), Reject("a/2", "unreadable", "", "a"), Sample(1, "b/1", "b")]
    shards = list(cut_shards(items, 1))
    assert [[getattr(i, "path") for i in s.items] for s in shards] == [["a/1", "a/2"], ["b/1"]]


def _simulate(sizes: list[int], workers: int) -> tuple[float, float]:
    """Greedy list scheduling of shards (one time unit per item) on ``workers``: the finish
    time of the last worker and the time the first one ran out of work."""
    ends = [0.0] * workers
    for n in sizes:
        i = ends.index(min(ends))
        ends[i] += n
    return max(ends), min(ends)


def test_last_shards_shrink_for_several_workers_so_they_finish_together():
    items = _items("".join(chr(0x100 + i) * 3 for i in range(100)))  # 100 identities x 3
    plain = [len(s.items) for s in cut_shards(items, 24)]
    tapered = list(cut_shards(items, 24, total=len(items), workers=2))
    sizes = [len(s.items) for s in tapered]
    # the same items, in order, whole identities, numbered from 0
    assert [it for s in tapered for it in s.items] == items
    assert [s.index for s in tapered] == list(range(len(tapered)))
    assert all(len({it.identity for it in s.items}) * 3 == len(s.items) for s in tapered)
    # full size first, then never growing, down to the floor (the last shard: what is left)
    assert sizes[0] == 24 and plain == [24] * 12 + [12]
    assert sizes == sorted(sizes, reverse=True)
    assert min(sizes[:-1]) >= MIN_TAPER_SIZE - 1 and sizes[-2] <= 6
    # 2 workers: the untapered cut leaves one worker idle for half a shard (12 items) at
    # the end; tapered, the idle end is at most one smallest shard (2 identities here)
    assert _simulate(plain, 2) == (156, 144)
    end, idle_from = _simulate(sizes, 2)
    assert end < 156 and end - idle_from <= 6
    # deterministic, and plain for one worker or an unknown length
    assert [len(s.items) for s in cut_shards(items, 24, total=len(items), workers=2)] == sizes
    assert [len(s.items) for s in cut_shards(items, 24, total=len(items), workers=1)] == plain
    assert [len(s.items) for s in cut_shards(items, 24, total=None, workers=8)] == plain
    # a wrong estimate of the length changes sizes, never the items
    for total in (0, 10, 10_000):
        assert [it for s in cut_shards(items, 24, total=total, workers=3) for it in s.items] == items


def test_taper_size():
    assert taper_size(1000, None, 8) == 1000
    assert taper_size(1000, 10**6, 8) == 1000
    assert taper_size(1000, 8000, 4) == 1000  # 8000 / (2 x 4)
    assert taper_size(1000, 4000, 4) == 500
    assert taper_size(1000, 10, 4) == MIN_TAPER_SIZE
    assert taper_size(2, 10, 4) == 2  # never above the configured size
    assert taper_size(24, 0, 2) == 24  # past the count: the count was low, full size again


def test_a_low_count_only_tapers_until_the_stream_passes_it():
    items = _items("".join(chr(0x100 + i) * 3 for i in range(100)))
    sizes = [len(s.items) for s in cut_shards(items, 24, total=150, workers=2)]
    assert sum(sizes) == 300 and max(sizes[-5:]) == 24  # back to full size past item 150
    assert min(sizes) < 24


def test_auto_shard_size_gives_every_slot_work():
    assert auto_shard_size(None, 4) == 1000
    assert auto_shard_size(100_000, 1) == 1000
    assert auto_shard_size(300, 4) == 19  # 300 items over 4 slots x 4 shards
    assert auto_shard_size(10, 4) == 16
    assert auto_shard_size(10**7, 8) == 1000


class _Handle:
    def __init__(self, shard, attempt):
        self.shard, self.attempt = shard, attempt


class FakeExecutor(Executor):
    """Finishes the shards in flight in reverse order; loses the work of the shards in
    ``lose`` (index -> how many attempts are lost) the way a dying worker does."""

    name = "fake"

    def __init__(self, slots=3, lose=None, fatal=None):
        super().__init__(self.Params(retries=2))
        self.slots = slots
        self.lose = dict(lose or {})
        self.fatal = fatal
        self.attempts: dict[int, int] = {}
        self.in_flight_max = 0
        self.live: set = set()
        self.together: list[set] = []  # which shards were in flight when one failed

    def submit(self, shard):
        self.attempts[shard.index] = self.attempts.get(shard.index, 0) + 1
        h = _Handle(shard, self.attempts[shard.index])
        self.live.add(h)
        self.in_flight_max = max(self.in_flight_max, len(self.live))
        return h

    def wait(self, handles):
        return sorted(handles, key=lambda h: -h.shard.index)[:1]

    def result(self, h):
        self.live.discard(h)
        i = h.shard.index
        if i == self.fatal:
            raise FacekitError("stage cannot start")
        if self.lose.get(i, 0) >= h.attempt:
            self.together.append((h.attempt, {x.shard.index for x in self.live} | {i}))
            for other in list(self.live):  # a dead pool loses everything in flight
                other.lost = True
            raise ShardFailed(f"worker died on shard {i}")
        if getattr(h, "lost", False):
            raise ShardFailed("worker died beside another shard")
        return ShardResult(i, [Outcome(it.identity, [it], [], 1) for it in h.shard.items])


def test_results_come_back_in_shard_order_with_bounded_work_in_flight():
    shards = list(cut_shards(_items("aabbccddeeffgghhii"), 2))
    ex = FakeExecutor(slots=3)
    got = [r.index for r in run_shards(ex, shards)]
    assert got == list(range(len(shards)))
    assert ex.in_flight_max == 3


def test_a_lost_shard_runs_again_alone_then_becomes_rejects():
    shards = list(cut_shards(_items("aabbccddee"), 2))
    # shard 1 dies twice and succeeds the third time; shard 3 dies on every attempt
    ex = FakeExecutor(slots=3, lose={1: 2, 3: 99})
    results = list(run_shards(ex, shards))
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert results[1].attempts == 3 and results[1].outcomes[0].samples
    bad = results[3]
    assert bad.attempts == 3
    assert [r.reason for oc in bad.outcomes for r in oc.rejects] == [SHARD_FAILED, SHARD_FAILED]
    assert all(oc.read == 1 and not oc.samples for oc in bad.outcomes)
    assert "worker died on shard 3" in bad.outcomes[0].rejects[0].detail
    # the shards lost beside a dying one were not charged: each ran again and was kept
    for r in results:
        if r.index not in (1, 3):
            assert r.outcomes[0].samples, r.index
    # retries ran alone: every failure after the first of a shard had nothing beside it
    assert any(len(t) > 1 for _, t in ex.together)
    assert all(len(t) == 1 for attempt, t in ex.together if attempt > 1)


def test_a_shard_failing_before_any_finished_stops_the_run():
    shards = list(cut_shards(_items("aabb"), 2))
    with pytest.raises(FacekitError, match="failed 3 time.*no shard has finished"):
        list(run_shards(FakeExecutor(slots=1, lose={0: 99}), shards))


def test_an_executor_error_stops_the_run():
    shards = list(cut_shards(_items("aabb"), 2))
    with pytest.raises(FacekitError, match="stage cannot start"):
        list(run_shards(FakeExecutor(fatal=0), shards))


def test_reused_shards_are_not_submitted():
    shards = list(cut_shards(_items("aabbccdd"), 2))
    ex = FakeExecutor(slots=2)
    done = {1: ShardResult(1, [Outcome("b", [], [], 1)] * 2, reused=True)}
    got = list(run_shards(ex, shards, reuse=lambda s: done.get(s.index)))
    assert [r.index for r in got] == [0, 1, 2, 3] and got[1].reused
    assert sorted(ex.attempts) == [0, 2, 3]


def _result(index, spec):
    """A shard result from ``"a+ a+ a- b+"``: identity letter, + kept face, - rejected."""
    outs = []
    for k, tok in enumerate(spec.split()):
        ident, ok = tok[0], tok[1] == "+"
        if ok:
            outs.append(Outcome(ident, [Sample(k, f"{ident}{k}", ident)], [], 1))
        else:
            outs.append(Outcome(ident, [], [Reject(f"{ident}{k}", "no_face", "", ident)], 1))
    return ShardResult(index, outs)


def test_gate_labels_admitted_identities_in_order_and_rejects_small_ones():
    gate = IdentityGate(start_id=10, min_images=2)
    rows = gate.admit(_result(0, "a+ a- a+ b+ c+ c+"))
    assert [(r.sample.label if r.reject is None else r.reject.reason) for r in rows] == [
        10, "no_face", 10, IDENTITY_TOO_SMALL, 11, 11
    ]
    assert [r.item for r in rows] == [0, 1, 2, 3, 4, 5]
    rows = gate.admit(_result(1, "d+ d+ d+"))
    assert {r.sample.label for r in rows} == {12}
    assert gate.admitted == 3 and gate.dropped == 1
    counts = dict(gate.counts)
    assert list(counts) == ["a", "b", "c", "d"]  # first seen first
    assert counts["a"] == {"label": 10, "kept": 2, "rejected": 1}
    assert counts["b"] == {"label": -1, "kept": 0, "rejected": 1}


def test_gate_class_ids_stop_below_2_31():
    # class ids are below 2**31 (every reader's class_id check; the gate's account is int32):
    # a start_id that would pass it is a config error, a run that reaches it a one-line error
    from pydantic import ValidationError

    from facekit.stages import SourceParams

    assert SourceParams(start_id=2**31 - 1).start_id == 2**31 - 1
    with pytest.raises(ValidationError, match="less than 2147483648"):
        SourceParams(start_id=2**31)
    gate = IdentityGate(start_id=2**31 - 2, min_images=1)
    rows = gate.admit(_result(0, "a+ b+"))
    assert [r.sample.label for r in rows] == [2**31 - 2, 2**31 - 1]
    assert gate.counts["b"] == {"label": 2**31 - 1, "kept": 1, "rejected": 0}
    with pytest.raises(FacekitError, match=r"identity 'c': class id 2147483648 is not below 2\*\*31"):
        gate.admit(_result(1, "c+"))
    # a label the source gives (a third-party source keeping its own ids) is checked too
    gate = IdentityGate(0, 1)
    ok = ShardResult(0, [Outcome("a", [Sample(0, "a/0.jpg", "a", label=2**31 - 1)], [], 1)])
    assert [r.sample.label for r in gate.admit(ok)] == [2**31 - 1]
    big = ShardResult(1, [Outcome("b", [Sample(1, "b/0.jpg", "b", label=2**31)], [], 1)])
    with pytest.raises(FacekitError, match=r"identity 'b': the source gave class id 2147483648, not below 2\*\*31"):
        gate.admit(big)


def test_gate_refuses_an_identity_that_comes_back():
    gate = IdentityGate(0, 1)
    gate.admit(_result(0, "a+ b+"))
    with pytest.raises(FacekitError, match="identity 'a' again"):
        gate.admit(_result(1, "a+"))
    with pytest.raises(FacekitError, match="identity 'x' again"):
        IdentityGate(0, 1).admit(_result(0, "x+ y+ x+"))


def test_shard_digest_changes_with_the_input(tmp_path):
    f = tmp_path / "a.jpg"
    f.write_bytes(b"one")
    s = Shard(0, [Sample(0, str(f), "a")])
    d1 = s.digest()
    assert Shard(0, [Sample(0, str(f), "a")]).digest() == d1
    f.write_bytes(b"three")
    assert s.digest() != d1
    assert Shard(0, [Sample(0, "x", "a", data=b"1")]).digest() != Shard(0, [Sample(0, "x", "a", data=b"2")]).digest()


def test_a_finished_shard_round_trips_through_the_work_folder_exactly(tmp_path):
    import numpy as np

    from facekit.pipeline.work import WorkFolder
    from facekit.stages import Occlusion, PairRef

    odd = "id\udcff/caf\u00e9\t1.jpg"  # undecodable byte, accent, tab: kept exactly
    s = Sample(
        7, odd, "id\udcff", data=b"\xff\xd8jpeg", face_id=2, box=np.array([1, 2, 30.5, 40.25], np.float32),
        score=0.987654321, landmarks=np.arange(10, dtype=np.float32).reshape(5, 2) / 3,
        aligned_landmarks=np.arange(10, dtype=np.float32).reshape(5, 2) * 1.5,
        transform=np.array([[0.7, -0.1, 3.3], [0.1, 0.7, -2.2]]), label=4,
        occlusion=Occlusion(b"occ", b"mask", 123, "surgical/blue"), stem="00012", record_key=12,
        per_face_identity=True, pair=PairRef(3, 1, True, 10, "pairs.txt:5", False), required="why",
    )
    outs = [
        Outcome("id\udcff", [s, s.replace(face_id=3)], [], 1),
        Outcome("b", [], [Reject("b/x.jpg", "no_face", "found none", "b", "needed")], 1),
        Outcome("c", [], [Reject("c/y", "unreadable", "FIFO", "c")], 0),
        Outcome("d", [], [], 1),  # an augmenter that dropped the sample
        Outcome("e", [], [Reject("e/1.jpg", "identity_mismatch", "nobody", "e", "", s.replace(data=None))], 1),
    ]
    shard = Shard(5, [s] * 5)
    work = WorkFolder(tmp_path, {"p": 1})
    assert work.open(7) == 0
    work.save(ShardResult(5, outs, seconds=1.5), "digest")
    assert WorkFolder(tmp_path, {"p": 2}).reuse(shard, "digest") is None  # another pipeline
    work = WorkFolder(tmp_path, {"p": 1})
    assert work.open(7) == 1
    assert work.reuse(shard, "other input") is None
    back = work.reuse(shard, "digest")()
    assert back.reused and back.index == 5
    for a, b in zip(outs, back.outcomes):
        assert (a.identity, a.read, a.rejects) == (b.identity, b.read, b.rejects)
        assert len(a.samples) == len(b.samples)
        for x, y in zip(a.samples, b.samples):
            for k, v in x.__dict__.items():
                w = y.__dict__[k]
                if isinstance(v, np.ndarray):
                    assert v.dtype == w.dtype and np.array_equal(v, w), k
                else:
                    assert v == w, k
    face = back.outcomes[4].rejects[0].face  # a face a stage decided against keeps its geometry
    assert face is not None and np.array_equal(face.box, s.box) and np.array_equal(face.landmarks, s.landmarks)
    assert back.outcomes[1].rejects[0].face is None
    assert WorkFolder(tmp_path, {"p": 2}).open(7) == 0  # a changed pipeline empties it


def test_a_failed_shard_is_not_kept_for_the_next_run(tmp_path):
    from facekit.pipeline.shards import failed_result
    from facekit.pipeline.work import WorkFolder

    shard = Shard(0, _items("aab"))
    work = WorkFolder(tmp_path, {"p": 1})
    work.open(7)
    work.save(failed_result(shard, "worker died", 3), "d")
    assert work.reuse(shard, "d") is None


def _kept(tmp_path, result, shard, fp=None):
    from facekit.pipeline.work import WorkFolder

    work = WorkFolder(tmp_path, fp or {"p": 1})
    work.open(7)
    work.save(result, "d")
    return WorkFolder(tmp_path, fp or {"p": 1}), work


def test_a_shard_with_stage_errors_is_not_kept(tmp_path):
    """A stage error is a fault of the code or the environment: a fixed rerun must not
    reuse it (review finding 1)."""
    shard = Shard(0, _items("ab"))
    outs = [Outcome("a", [], [Reject("a/0.jpg", "stage_error", "CUDA out of memory", "a")], 1), Outcome("b", [], [], 1)]
    again, _ = _kept(tmp_path, ShardResult(0, outs), shard)
    again.open(7)
    assert again.reuse(shard, "d") is None


def test_a_resumed_run_cuts_its_last_shards_as_the_first_run_did(tmp_path):
    """The last shards depend on the count and the worker count (the taper): the work
    folder keeps them, so a resume with another worker count cuts the same shards."""
    from facekit.pipeline.work import WorkFolder

    work = WorkFolder(tmp_path, {"p": 1})
    assert work.previous_taper() is None
    work.open(24, (300, 2))
    again = WorkFolder(tmp_path, {"p": 1})
    assert again.previous_taper() == (300, 2)
    again.open(24, (300, 8))  # the same pipeline: the folder and its cut are kept
    assert WorkFolder(tmp_path, {"p": 1}).previous_taper() == (300, 2)
    assert WorkFolder(tmp_path, {"p": 2}).previous_taper() is None
    WorkFolder(tmp_path, {"p": 3}).open(24)  # another pipeline, no count: no taper kept
    assert WorkFolder(tmp_path, {"p": 3}).previous_taper() is None


def test_a_resumed_run_keeps_the_automatic_shard_size(tmp_path):
    """The automatic size depends on the executor; a resume with another executor cuts the
    same shards (review finding 2)."""
    from facekit.pipeline.work import WorkFolder

    work = WorkFolder(tmp_path, {"p": 1})
    assert work.previous_shard_size() is None
    work.open(19)
    assert WorkFolder(tmp_path, {"p": 1}).previous_shard_size() == 19
    assert WorkFolder(tmp_path, {"p": 2}).previous_shard_size() is None


def test_reused_shards_count_as_finished_for_the_fail_fast_rule():
    """Shards 0-2 reused, shard 3 kills its worker every time: its images become rejects,
    the run is not stopped as if no worker could run (review finding 4)."""
    shards = list(cut_shards(_items("aabbccdd"), 2))
    ex = FakeExecutor(slots=2, lose={3: 99})
    done = {i: ShardResult(i, [Outcome("x", [], [], 1)] * 2, reused=True) for i in range(3)}
    got = list(run_shards(ex, shards, reuse=lambda s: done.get(s.index)))
    assert [r.index for r in got] == [0, 1, 2, 3] and got[3].failed


class EagerExecutor(FakeExecutor):
    """Runs a shard at submit time, as ``inprocess`` does; records the order of events."""

    def __init__(self, events):
        super().__init__(slots=1)
        self.events = events

    def submit(self, shard):
        self.events.append(("run", shard.index))
        return super().submit(shard)


def test_a_finished_shard_is_handed_on_before_the_next_one_runs():
    """With an executor that works at submit time, shard N reaches the engine (and the
    work folder) before shard N+1 is computed (review finding 5)."""
    events = []
    for r in run_shards(EagerExecutor(events), list(cut_shards(_items("aabbcc"), 2))):
        events.append(("saved", r.index))
    assert events == [("run", 0), ("saved", 0), ("run", 1), ("saved", 1), ("run", 2), ("saved", 2)]


def test_a_kept_shard_that_does_not_read_back_runs_again(tmp_path):
    """Bytes of a kept shard damaged on disk: the page checksums catch it and the shard
    is computed again (review finding 7)."""
    shard = Shard(0, _items("aa"))
    res = ShardResult(0, [Outcome("a", [it], [], 1) for it in shard.items])
    for it in shard.items:
        it.data = b"\xff\xd8" + bytes(range(256)) * 40
    again, work = _kept(tmp_path, res, shard)
    path = work.dir / "shard-000000.parquet"
    raw = bytearray(path.read_bytes())
    for i in range(200, 2000):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    again.open(7)
    loader = again.reuse(shard, "d")
    ex = FakeExecutor(slots=1)
    got = list(run_shards(ex, [shard], reuse=lambda s: loader))
    assert ex.attempts == {0: 1} and not got[0].reused


def test_augmenters_that_return_nothing_leave_a_reject(tmp_path):
    import numpy as np

    from facekit.pipeline.worker import NO_OUTPUT, ShardWorker

    w = ShardWorker.__new__(ShardWorker)
    w.augmenters = [type("Drop", (), {"augment": lambda self, s: []})()]
    w.quality = 95
    w.quality_stage = None  # no quality: stage (the worker is built without __init__)
    oc = Outcome("a", [Sample(0, "a/0.jpg", "a", image=np.zeros((4, 4, 3), np.uint8))], [], 1)
    w._finish(oc)
    assert not oc.samples and [r.reason for r in oc.rejects] == [NO_OUTPUT]


def test_fingerprint_follows_what_shapes_the_shards(tmp_path):
    """Texture folder content and stage params change it; gate-only settings, the executor
    and the sinks do not (review finding 6)."""
    import cv2
    import numpy as np

    from facekit.pipeline.config import parse_config
    from facekit.pipeline.fingerprint import pipeline_fingerprint

    (tmp_path / "root").mkdir()
    tex = tmp_path / "tex"
    tex.mkdir()
    cv2.imwrite(str(tex / "m.png"), np.full((8, 8, 3), 10, np.uint8))

    def fp(extra="", source_extra="", sinks="[{plugin: folders, path: faces}]"):
        text = (f"output: {tmp_path / 'out'}\nsource: {{plugin: folders, root: {tmp_path / 'root'}{source_extra}}}\n"
                f"augmenters: [{{plugin: facemask, textures: {tex}{extra}}}]\nsinks: {sinks}\n")
        return pipeline_fingerprint(parse_config(text))

    base = fp()
    assert fp(source_extra=", min_images: 5, start_id: 3") == base
    assert fp(sinks="[{plugin: mxrec, path: rec}]") == base
    assert fp(extra=", seed: 7") != base
    cv2.imwrite(str(tex / "m.png"), np.full((8, 8, 3), 200, np.uint8))
    assert fp() != base


def test_a_pool_whose_worker_died_takes_the_next_shard(tmp_path, data_dir):
    """A worker killed between two shards (the OOM killer): the next submit starts a fresh
    pool instead of failing the run with BrokenProcessPool (review finding 3)."""
    import os
    import signal
    import time

    from conftest import link_aligned_112
    from facekit.pipeline.config import parse_config
    from facekit.pipeline.processes import WorkerPool

    root = link_aligned_112(data_dir, tmp_path / "root")
    spec = parse_config(f"output: {tmp_path / 'out'}\nsource: {{plugin: folders, root: {root}}}\nsinks: [{{plugin: folders, path: f}}]\n")
    items = list(spec.source.build())
    pool = WorkerPool(spec, 1, 1)
    try:
        first = pool.submit(Shard(0, items[:2]))
        assert len(pool.result(first).outcomes) == 2
        for proc in list(pool.pool._processes.values()):
            os.kill(proc.pid, signal.SIGKILL)
        time.sleep(1.0)  # the pool notices its dead worker
        fut = pool.submit(Shard(1, items[2:4]))
        assert len(pool.result(fut).outcomes) == 2
    finally:
        pool.stop(cancel=True)
