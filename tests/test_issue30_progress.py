"""The progress bar counts images as the workers finish them, in any shard (issue 30
item 7): it used to advance only when the shards finished in order, so one slow shard held
it still while the others were done. A test detector holds shard 0 (the images of identity
``a``, 120 px where the others are 112 px) until the bar has counted an image, which only
another shard can give it; outputs stay byte-identical to a run without the bar."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from conftest import write_config
from facekit.pipeline import engine
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.pipeline.executor import Executor, ShardFailed, run_shards
from facekit.pipeline.progress import ImagesDone, ShardProgress
from facekit.pipeline.shards import Outcome, Shard, ShardResult
from facekit.pipeline.worker import BATCH
from facekit.plugins import get_registry

MODULE = "facekit_issue30_gated"
#: seconds shard 0 waits for the bar at most (then it goes on and the test fails): generous,
#: the other worker may have to start a process and load its stages on a busy machine
HOLD_S = 180

DETECTOR = '''
"""A detector that holds the images of one size until a file exists (the issue 30 item 7
progress test): the ArcFace template points, scaled to the image."""
import os, time
import numpy as np
from pydantic import Field
import facekit
from facekit.vision import template_for


class GatedParams(facekit.DetectorParams):
    release: str = Field(description="images held wait until this file exists")
    held_size: int = Field(120, description="images of this height are held")
    hold_s: float = Field(180.0, description="held at most this long; then RELEASE.timeout is written")


class GatedDetector(facekit.Detector):
    name = "gated"
    Params = GatedParams
    #: (event, image height) in this process, in order (the inprocess test reads it)
    log = []

    def detect(self, image):
        h, w = image.shape[:2]
        p = self.params
        if h == p.held_size:
            deadline = time.monotonic() + p.hold_s
            while not os.path.exists(p.release):
                if time.monotonic() > deadline:  # the test fails; the others go on at once
                    open(p.release + ".timeout", "w").close()
                    open(p.release, "w").close()
                    break
                time.sleep(0.02)
        GatedDetector.log.append(("detect", h))
        lmk = template_for(112) * np.array([w / 112, h / 112], np.float32)
        return facekit.Detections(np.array([[0, 0, w, h]], np.float32), np.ones(1, np.float32), lmk[None].astype(np.float32))
'''


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """The gated detector's class, importable in this process and in spawned workers."""
    site = tmp_path_factory.mktemp("gated-site")
    (site / f"{MODULE}.py").write_text(DETECTOR)
    sys.path.insert(0, str(site))
    try:
        import importlib

        importlib.invalidate_caches()
        yield importlib.import_module(MODULE).GatedDetector
    finally:
        sys.path.remove(str(site))
        sys.modules.pop(MODULE, None)


@pytest.fixture
def registered(gated, monkeypatch):
    monkeypatch.setitem(get_registry().stages, ("detector", "gated"), gated)
    gated.log.clear()
    return gated


@pytest.fixture(scope="module")
def root(data_dir, tmp_path_factory) -> Path:
    """Identity ``a`` (shard 0): 120 px copies of the aligned crops; ``b`` .. ``d``: the
    112 px crops themselves. Four images each."""
    import cv2

    from facekit.vision.images import decode_image, encode_jpeg

    root = tmp_path_factory.mktemp("gated") / "root"
    crops = sorted((data_dir / "aligned_112").glob("*.jpg"))
    for k, ident in enumerate("abcd"):
        (root / ident).mkdir(parents=True)
        for i in range(4):
            src = crops[(k + i) % len(crops)]
            dst = root / ident / f"{i}.jpg"
            if ident == "a":
                img = cv2.resize(decode_image(src.read_bytes()), (120, 120), interpolation=cv2.INTER_AREA)
                dst.write_bytes(encode_jpeg(img))
            else:
                os.symlink(src, dst)
    return root


def _cfg(tmp_path: Path, root: Path, executor: str, release: Path, out="out", shard_size=1) -> Path:
    return write_config(
        tmp_path,
        f"""
        output: {tmp_path / out}
        executor: {executor}
        shard_size: {shard_size}
        source: {{plugin: folders, root: {root}}}
        detector: {{plugin: gated, release: "{release}", hold_s: {HOLD_S}}}
        aligner: {{plugin: arcface, size: 112}}
        sinks: [{{plugin: mxrec, path: rec}}]
        """,
        f"{out}.yaml",
    )


class _Bar:
    """A stand-in for tqdm recording what the engine shows; the first image it counts
    creates ``release`` (lets shard 0 go on)."""

    release: Path
    events: list

    def __init__(self, total=None, disable=False, **kw):
        self.total, self.disable, self.n = total, disable, 0

    def update(self, n):
        self.n += n
        _Bar.events.append(("update", n, self.release.exists()))
        self.release.touch()

    def set_postfix(self, **kw):
        _Bar.events.append(("postfix", kw["kept"], self.release.exists()))

    def close(self):
        pass


def _run_with_bar(monkeypatch, cfg: Path, release: Path):
    _Bar.release, _Bar.events = release, []
    monkeypatch.setattr(engine, "tqdm", _Bar)
    return run(load_config(cfg), progress=True)


def _files(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("executor", ["{plugin: threads, workers: 2}", "{plugin: processes, workers: 2}"])
def test_images_are_counted_while_an_earlier_shard_runs(tmp_path, root, registered, monkeypatch, executor):
    """Issue 30 item 7: shard 0 is held until the bar counts an image: the count comes from
    another shard's worker before shard 0 finished (no timeout: shard 0 was let go by the
    bar), every image is counted once, and the outputs equal a run without the bar."""
    release = tmp_path / "release"
    s = _run_with_bar(monkeypatch, _cfg(tmp_path, root, executor, release), release)
    assert not Path(f"{release}.timeout").exists(), "the bar counted nothing while shard 0 was held"
    ev = _Bar.events
    first = ev[0]
    assert first[0] == "update" and first[2] is False, ev  # counted before any shard's result, shard 0 held
    assert sum(e[1] for e in ev if e[0] == "update") == 16 == s.images_read
    assert [e[0] for e in ev].count("postfix") == s.shards["count"] == 4
    assert s.faces_kept == 16
    # the same bytes as a run with no bar, in this process, one shard at a time
    ref = _cfg(tmp_path, root, "{plugin: inprocess}", release, out="ref", shard_size=100)
    run(load_config(ref), progress=False)
    assert _files(tmp_path / "out" / "rec") == _files(tmp_path / "ref" / "rec")


@pytest.mark.slow
def test_ray_actors_report_images_while_an_earlier_shard_runs(tmp_path, root, registered, monkeypatch, gated):
    """Issue 30 item 7, the ``ray`` executor (a local Ray instance for the run; the actors
    import the test detector through PYTHONPATH): as for threads and processes."""
    pytest.importorskip("ray")
    release = tmp_path / "release"
    site = os.path.dirname(sys.modules[MODULE].__file__)
    executor = f"{{plugin: ray, workers: 2, runtime_env: {{env_vars: {{PYTHONPATH: '{site}'}}}}}}"
    s = _run_with_bar(monkeypatch, _cfg(tmp_path, root, executor, release), release)
    assert not Path(f"{release}.timeout").exists(), "the bar counted nothing while shard 0 was held"
    first = _Bar.events[0]
    assert first[0] == "update" and first[2] is False, _Bar.events
    assert sum(e[1] for e in _Bar.events if e[0] == "update") == 16 == s.images_read and s.faces_kept == 16


def test_inprocess_counts_a_shard_batch_by_batch(tmp_path, root, registered, monkeypatch):
    """Issue 30 item 7, the ``inprocess`` executor: one shard of every image is counted a
    batch at a time while it runs (the first batch before the second is detected), not all
    at its end."""
    release = tmp_path / "release"
    release.touch()  # nothing held: the order of detection and counting is what is checked
    order = []

    class Recording(_Bar):
        def update(self, n):
            order.append((n, len(registered.log)))  # images counted, images detected so far
            super().update(n)

    _Bar.release, _Bar.events = release, []
    monkeypatch.setattr(engine, "tqdm", Recording)
    s = run(load_config(_cfg(tmp_path, root, "{plugin: inprocess}", release, shard_size=100)), progress=True)
    assert s.shards["count"] == 1 and s.images_read == 16
    assert [n for n, _ in order] == [BATCH, BATCH], order
    # the first batch was counted before the second batch's images were detected
    assert 0 < order[0][1] < order[1][1] == len(registered.log), order


class _Scripted(Executor):
    """An executor whose workers' progress messages are scripted: shard 1 reports before
    shard 0 finishes; messages come twice, late (after the shard's result) and from a lost
    attempt."""

    def __init__(self):
        super().__init__(self.Params())
        self.slots, self.calls, self.handed = 4, [], []
        self.script = [
            [ShardProgress(1, 2), ShardProgress(1, 2)],  # shard 1 half done, twice
            [ShardProgress(1, 4), ShardProgress(0, 1)],
            [ShardProgress(2, 3), ShardProgress(1, 4)],  # a late message of shard 1 (its result is in)
        ]

    def submit(self, shard):
        self.calls.append(shard.index)
        return (shard.index, len(self.calls))  # a handle: the shard's index, and which call

    def wait(self, handles):
        step = len(self.handed)
        self.handed.append(self.script[step] if step < len(self.script) else [])
        return {0: [], 1: [h for h in handles if h[0] == 1], 2: [h for h in handles if h[0] in (0, 2)]}.get(step, handles)

    def progress(self):
        return self.handed[-1]

    def result(self, handle):
        index = handle[0]
        if index == 2 and self.calls.count(2) == 1:
            raise ShardFailed("lost")  # its 3 images were counted; the retry must not count them again
        return ShardResult(index, [Outcome(str(index)) for _ in range(4)])


def test_run_shards_counts_each_image_once_as_it_is_reported():
    """Issue 30 item 7: run_shards yields ImagesDone as the workers report, before the
    results of earlier shards, each item once (duplicates, late messages, a lost attempt)."""
    from facekit.stages import Sample

    shards = [Shard(i, [Sample(0, f"{i}/{k}.jpg", str(i)) for k in range(4)]) for i in range(3)]
    got = list(run_shards(_Scripted(), shards, retries=1, progress=True))
    seq = [("n", g.count) if isinstance(g, ImagesDone) else ("r", g.index) for g in got]
    # shard 1's two images (reported twice) first; shard 0's result waits for its own
    assert seq == [("n", 2), ("n", 3), ("n", 3), ("n", 3), ("r", 0), ("r", 1), ("n", 1), ("r", 2)]
    assert sum(g.count for g in got if isinstance(g, ImagesDone)) == 12
    # without progress: the results alone, as before
    assert [g.index for g in run_shards(_Scripted(), shards, retries=1)] == [0, 1, 2]


def test_a_rate_limited_sender_drops_messages_sent_too_soon(monkeypatch):
    """issue 30 item 7 (review): on Ray each progress message is a round trip to the queue
    actor, so an actor's sender keeps at least ``min_interval`` seconds between two; a
    dropped message loses nothing (the next carries the shard's count). The limit survives
    pickling (the sender travels to the actor)."""
    import pickle
    import queue

    from facekit.pipeline import progress as prog

    clock = [100.0]
    monkeypatch.setattr(prog.time, "monotonic", lambda: clock[0])
    ch = queue.Queue()
    s = prog.ProgressSender(ch, min_interval=0.5)
    for done in (8, 16, 24):
        s.send(prog.ShardProgress(0, done))
        clock[0] += 0.2
    clock[0] += 0.5
    s.send(prog.ShardProgress(0, 32))
    assert [ch.get_nowait().done for _ in range(ch.qsize())] == [8, 32]
    mp = pickle.loads(pickle.dumps(prog.ProgressSender([], 0.5)))
    assert mp.min_interval == 0.5 and mp.channel == []
    free = prog.ProgressSender(ch)  # no limit: every message
    for done in (1, 2, 3):
        free.send(prog.ShardProgress(1, done))
    assert ch.qsize() == 3
