"""Shard workers in spawned processes: the machinery of the ``processes`` executor.

:class:`WorkerPool` is a ``concurrent.futures`` pool of spawned processes, each holding one
:class:`~facekit.pipeline.worker.ShardWorker` with a thread budget (onnxruntime intra-op
and OpenCV threads), so that N workers on N cores do not fight over them. Workers die with
their parent (Linux ``PR_SET_PDEATHSIG``, elsewhere a watchdog thread), so a killed
``facekit run`` leaves no worker or resource tracker behind, and ignore Ctrl-C (the parent
unwinds and stops them). A stage that cannot start in a worker becomes one
:class:`~facekit.errors.FacekitError` line; a worker that dies makes the shards it held
:class:`~facekit.pipeline.executor.ShardFailed`, and the pool is started again. The
workers report their progress after each batch on a bounded multiprocessing queue of their
pool (:mod:`facekit.pipeline.progress`; a new pool, a new queue).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import signal
import threading
import time
from typing import Optional

from facekit.errors import FacekitError, one_line
from facekit.pipeline.executor import ShardFailed
from facekit.pipeline.progress import PROGRESS_CHANNEL_SIZE, ProgressInbox, ProgressSender, ShardProgress
from facekit.pipeline.shards import Shard, ShardResult

_worker = None
_init_error: Optional[str] = None


def die_with_parent(parent: int) -> None:
    """Make this process exit when process ``parent`` dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
            return
    except (OSError, AttributeError):
        pass

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="facekit-parent-watch").start()


def set_threads(threads: Optional[int]) -> None:
    """Limit OpenCV's threads in this process to ``threads`` (None: leave the default)."""
    if threads:
        import cv2

        cv2.setNumThreads(int(threads))


def init_worker(spec, threads: Optional[int], parent: int, progress=None) -> None:
    """Pool initializer: die with ``parent``, ignore Ctrl-C, build this process's shard
    worker, which sends its progress to the multiprocessing queue ``progress``. A stage that
    cannot start is remembered and reported by every shard (an initializer exception would
    only break the pool without a message)."""
    global _worker, _init_error
    die_with_parent(parent)
    # Ctrl-C reaches the whole process group: the parent unwinds and shuts the pool down;
    # a worker interrupted inside the executor's queue would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_threads(threads)
    if progress is not None:  # exiting never waits for messages the parent no longer reads
        progress.cancel_join_thread()
    try:
        from facekit.pipeline.worker import ShardWorker

        _worker = ShardWorker(spec, threads, progress=None if progress is None else ProgressSender(progress))
    except Exception as e:  # reported to the parent as one line by run_shard
        _init_error = one_line(e) if isinstance(e, FacekitError) else f"{type(e).__name__}: {one_line(e)}"


def run_shard(shard: Shard) -> ShardResult:
    """Process one shard in a pool process."""
    if _init_error is not None:
        raise FacekitError(_init_error)
    return _worker(shard)


class WorkerPool:
    """``workers`` spawned processes running shards of ``spec``, ``threads`` each."""

    def __init__(self, spec, workers: int, threads: Optional[int]):
        self.spec, self.workers, self.threads = spec, workers, threads
        self.pool: Optional[cf.ProcessPoolExecutor] = None
        self.inbox: Optional[ProgressInbox] = None  # the progress queue of the current pool

    def _pool(self) -> cf.ProcessPoolExecutor:
        if self.pool is None:
            ctx = mp.get_context("spawn")
            # a queue per pool: one a killed worker may have left half written dies with its pool
            channel = ctx.Queue(PROGRESS_CHANNEL_SIZE)
            self.inbox = ProgressInbox(channel)
            self.pool = cf.ProcessPoolExecutor(
                self.workers,
                mp_context=ctx,
                initializer=init_worker,
                initargs=(self.spec, self.threads, os.getpid(), channel),
            )
        return self.pool

    def submit(self, shard: Shard) -> cf.Future:
        try:
            fut = self._pool().submit(run_shard, shard)
        except cf.process.BrokenProcessPool:  # a worker died since the last result: a fresh pool
            self.stop(cancel=True)
            fut = self._pool().submit(run_shard, shard)
        fut.shard = shard  # for the messages
        fut.pool = self.pool
        return fut

    def wait(self, futures: list) -> list:
        """The finished ones of ``futures``, once there are some or progress messages came
        (then maybe none)."""
        if self.inbox is None:  # no pool (stopped after a death): the futures are done
            return list(cf.wait(futures, return_when=cf.FIRST_COMPLETED)[0])
        return self.inbox.wait(lambda t: list(cf.wait(futures, timeout=t, return_when=cf.FIRST_COMPLETED)[0]))

    def progress(self) -> list[ShardProgress]:
        """The shards' progress messages since the last call (the latest of each shard)."""
        return [] if self.inbox is None else self.inbox.take()

    def result(self, fut: cf.Future) -> ShardResult:
        try:
            return fut.result()
        except (cf.process.BrokenProcessPool, cf.CancelledError):  # a dead pool, or one stopped for it
            if fut.pool is self.pool:  # start a fresh pool for the next shards
                self.stop(cancel=True)
            raise ShardFailed(
                f"a worker process died while processing shard {fut.shard.index} or one beside it "
                "(killed by the system, e.g. out of memory?)"
            ) from None

    def stop(self, cancel: bool = False) -> None:
        """Shut the pool down (``cancel``: terminate its processes first) and close its
        progress queue; the next :meth:`submit` starts a new pool."""
        pool, self.pool = self.pool, None
        inbox, self.inbox = self.inbox, None
        try:
            self._shutdown(pool, cancel)
        finally:
            if inbox is not None:
                inbox.channel.close()

    @staticmethod
    def _shutdown(pool: Optional[cf.ProcessPoolExecutor], cancel: bool) -> None:
        if pool is None:
            return
        if cancel:  # do not wait for work nobody wants
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                try:
                    proc.terminate()
                except Exception:  # already gone
                    pass
        pool.shutdown(wait=True, cancel_futures=True)
