"""Shard workers in spawned processes: the machinery of the ``processes`` executor.

:class:`WorkerPool` is a ``concurrent.futures`` pool of spawned processes, each holding one
:class:`~facekit.pipeline.worker.ShardWorker` with a thread budget (onnxruntime intra-op
and OpenCV threads), so that N workers on N cores do not fight over them. Workers die with
their parent (Linux ``PR_SET_PDEATHSIG``, elsewhere a watchdog thread), so a killed
``facekit run`` leaves no worker or resource tracker behind, and ignore Ctrl-C (the parent
unwinds and stops them). A stage that cannot start in a worker becomes one
:class:`~facekit.errors.FacekitError` line; a worker that dies makes the shards it held
:class:`~facekit.pipeline.executor.ShardFailed`, and the pool is started again.
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


def init_worker(spec, threads: Optional[int], parent: int) -> None:
    """Pool initializer: die with ``parent``, ignore Ctrl-C, build this process's shard
    worker. A stage that cannot start is remembered and reported by every shard (an
    initializer exception would only break the pool without a message)."""
    global _worker, _init_error
    die_with_parent(parent)
    # Ctrl-C reaches the whole process group: the parent unwinds and shuts the pool down;
    # a worker interrupted inside the executor's queue would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_threads(threads)
    try:
        from facekit.pipeline.worker import ShardWorker

        _worker = ShardWorker(spec, threads)
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

    def _pool(self) -> cf.ProcessPoolExecutor:
        if self.pool is None:
            self.pool = cf.ProcessPoolExecutor(
                self.workers,
                mp_context=mp.get_context("spawn"),
                initializer=init_worker,
                initargs=(self.spec, self.threads, os.getpid()),
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

    @staticmethod
    def wait(futures: list) -> list:
        done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
        return list(done)

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
        pool, self.pool = self.pool, None
        if pool is None:
            return
        if cancel:  # do not wait for work nobody wants
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                try:
                    proc.terminate()
                except Exception:  # already gone
                    pass
        pool.shutdown(wait=True, cancel_futures=True)
