"""The ``threads`` executor's own contract (its outputs are compared with every other
executor's in ``test_engine_shards``, its Ctrl-C in ``test_run_safety``): each pool thread
keeps one shard worker, the caller's OpenCV thread count comes back, a second Ctrl-C while
the workers stop still cleans the run up."""

from __future__ import annotations

import threading

import cv2
import pytest

from conftest import link_aligned_112, write_config
from facekit.pipeline import Shard
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.stages import Sample


@pytest.fixture
def spec(tmp_path, data_dir):
    link_aligned_112(data_dir, tmp_path / "root")
    return load_config(write_config(tmp_path, """
        output: out
        executor: {plugin: threads, workers: 2}
        source: {plugin: folders, root: root, min_images: 1}
        detector: {plugin: haar}
        aligner: {plugin: boxcrop}
        sinks: [{plugin: folders, path: faces}]
        """))


def test_each_pool_thread_keeps_one_shard_worker(spec, monkeypatch):
    from facekit.pipeline import worker
    from facekit.pipeline.threads import WorkerThreads

    seen: dict[int, set] = {}
    lock = threading.Lock()
    call = worker.ShardWorker.__call__

    def recording(self, shard):
        with lock:
            seen.setdefault(threading.get_ident(), set()).add(id(self))
        return call(self, shard)

    monkeypatch.setattr(worker.ShardWorker, "__call__", recording)
    pool = WorkerThreads(spec, 2, 1)
    try:
        futs = [pool.submit(Shard(i, [Sample(0, "missing.jpg", "a")])) for i in range(12)]
        results = [pool.result(f) for f in futs]
    finally:
        pool.stop()
    assert [r.index for r in results] == list(range(12))
    assert all(len(ws) == 1 for ws in seen.values())  # a thread always used the same worker
    assert len({w for ws in seen.values() for w in ws}) == len(seen) <= 2


def test_the_callers_opencv_thread_count_comes_back(spec):
    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        run(spec, progress=False)
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)


def test_a_second_ctrl_c_while_the_workers_stop_still_cleans_up():
    """``_abort``: the executor's close interrupted by KeyboardInterrupt; the sinks, the
    results table, the rejects file and the publication are still cleaned up, then the
    interrupt goes on."""
    from facekit.pipeline.engine import _abort

    calls = []

    class Executor:
        def close(self, cancel=False):
            calls.append(("close", cancel))
            raise KeyboardInterrupt

    class Part:
        def __init__(self, name):
            self.name = name

        def abort(self):
            calls.append(self.name)

        def close(self):
            calls.append(self.name)

    with pytest.raises(KeyboardInterrupt):
        _abort(Executor(), [Part("sink")], Part("rejects"), Part("results"), Part("publication"), None)
    assert calls == [("close", True), "sink", "results", "rejects", "publication"]
