"""Shard workers on threads of this process: the machinery of the ``threads`` executor.

:class:`WorkerThreads` runs shards on ``workers`` threads, each using its own
:class:`~facekit.pipeline.worker.ShardWorker` (its own stages: detector session, aligner,
...) with a thread budget of ``threads`` (onnxruntime intra-op threads, default 1). The
per-image work spends most of its time in onnxruntime, libjpeg-turbo and OpenCV, which
release the GIL, so N threads of one thread each keep N cores busy without the start-up,
imports and pickling of worker processes, and one image per core is faster than one image
at a time on onnxruntime's intra-op threads (measured on SCRFD 500M, 2 cores: 354
inferences in 3.9-4.3 s on two single-thread sessions against 4.4-5.1 s on one two-thread
session; see ``benchmarks/RESULTS-detect-align.md``).

Stopping (an error elsewhere, Ctrl-C) asks every worker to stop at its next batch of
images (:meth:`ShardWorker.stop`) and drops the shards not started, so the run unwinds in
about one batch's time instead of finishing the shards in flight.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import queue
from typing import Optional

from facekit.pipeline.shards import Shard, ShardResult
from facekit.pipeline.worker import ShardWorker


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one,
    else ``os.cpu_count()``), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class WorkerThreads:
    """``workers`` threads running shards of ``spec``, ``threads`` library threads each.

    The shard workers (one per thread) are built at construction, in the calling thread,
    so that a stage that cannot start raises there (:class:`~facekit.errors.FacekitError`,
    one line naming it) before any shard is submitted.
    """

    def __init__(self, spec, workers: int, threads: Optional[int]):
        self.idle: queue.SimpleQueue = queue.SimpleQueue()
        self.all: list[ShardWorker] = []
        try:
            for _ in range(workers):
                w = ShardWorker(spec, threads)
                self.all.append(w)
                self.idle.put(w)
        except BaseException:
            self.stop(cancel=True)
            raise
        self.pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="facekit-shard")

    def _run(self, shard: Shard) -> ShardResult:
        w = self.idle.get()  # never waits: at most ``workers`` shards run at once
        try:
            return w(shard)
        finally:
            self.idle.put(w)

    def submit(self, shard: Shard) -> cf.Future:
        return self.pool.submit(self._run, shard)

    @staticmethod
    def wait(futures: list) -> list:
        done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
        return list(done)

    @staticmethod
    def result(fut: cf.Future) -> ShardResult:
        """The shard's result; what the shard worker raised (a FacekitError that stops the
        run, or a bug) is raised here, as the ``inprocess`` executor would raise it."""
        return fut.result()

    def stop(self, cancel: bool = False) -> None:
        """Wait for the shards in flight (``cancel``: ask them to stop at their next batch
        and drop those not started), then release the workers' stages."""
        if cancel:
            for w in self.all:
                w.stop()
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=cancel)
        for w in self.all:
            w.close()
