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
about one batch's time instead of finishing the shards in flight. Stopping is cooperative:
a thread inside one long native call (a hung network read) finishes that call first.

The shard workers report their progress after each batch on a bounded ``queue.Queue``
(:mod:`facekit.pipeline.progress`); :meth:`WorkerThreads.wait` also returns when messages
came, and :meth:`WorkerThreads.progress` hands them over.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import queue
import threading
from typing import Optional

from facekit.pipeline.progress import PROGRESS_CHANNEL_SIZE, ProgressInbox, ProgressSender, ShardProgress
from facekit.pipeline.shards import Shard, ShardResult
from facekit.pipeline.worker import ShardWorker, WarnOnce


#: the ``threads`` executor's default worker count at most: each thread holds its own models
#: and a batch of decoded images, and the GIL serialises the Python part of the work (a few
#: percent of it); past this, give ``workers`` or use ``processes``
MAX_DEFAULT_WORKERS = 8


def usable_cores() -> int:
    """The CPU cores this process may run on, at least 1: its affinity mask where the
    system has one (else ``os.cpu_count()``), and no more than a cgroup v2 CPU quota allows
    (``/sys/fs/cgroup/cpu.max``, a container limited to 2 CPUs on a 64-core host: 2)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, n)


def default_workers() -> int:
    """The ``threads`` executor's default: :func:`usable_cores`, at most
    :data:`MAX_DEFAULT_WORKERS`."""
    return min(usable_cores(), MAX_DEFAULT_WORKERS)


class WorkerThreads:
    """``workers`` threads running shards of ``spec``, ``threads`` library threads each.

    The shard workers (one per thread) are built at construction, in the calling thread,
    so that a stage that cannot start raises there (:class:`~facekit.errors.FacekitError`,
    one line naming it) before any shard is submitted; each pool thread then keeps one of
    them for the whole run.
    """

    def __init__(self, spec, workers: int, threads: Optional[int]):
        self.idle: queue.SimpleQueue = queue.SimpleQueue()
        self.all: list[ShardWorker] = []
        channel: queue.Queue = queue.Queue(PROGRESS_CHANNEL_SIZE)  # the workers' progress messages
        self.inbox = ProgressInbox(channel)
        warn_once = WarnOnce()  # a stage failing on every image: one warning, not one per thread
        try:
            for _ in range(workers):
                w = ShardWorker(spec, threads, warn_once, ProgressSender(channel))
                self.all.append(w)
                self.idle.put(w)
        except BaseException:
            self.stop(cancel=True)
            raise
        self.local = threading.local()
        self.pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="facekit-shard", initializer=self._bind)

    def _bind(self) -> None:
        """A new pool thread takes a shard worker of its own (there are as many as threads)."""
        self.local.worker = self.idle.get_nowait()

    def _run(self, shard: Shard) -> ShardResult:
        return self.local.worker(shard)

    def submit(self, shard: Shard) -> cf.Future:
        return self.pool.submit(self._run, shard)

    def wait(self, futures: list) -> list:
        """The finished ones of ``futures``, once there are some or progress messages came
        (then maybe none)."""
        # in slices: a lock wait without a timeout ignores Ctrl-C on some systems
        return self.inbox.wait(lambda t: list(cf.wait(futures, timeout=t, return_when=cf.FIRST_COMPLETED)[0]))

    def progress(self) -> list[ShardProgress]:
        """The shards' progress messages since the last call (the latest of each shard)."""
        return self.inbox.take()

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
