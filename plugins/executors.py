"""Built-in executors: ``threads`` (the default: shards run on threads of this process, one
per core), ``inprocess`` (shards run here, one at a time) and ``processes`` (shards run in
spawned worker processes). Written as any executor plugin is: a subclass of
:class:`facekit.Executor` registered through ``register_executors``."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

import facekit
from facekit.pipeline import (
    ShardProgress,
    ShardWorker,
    WorkerPool,
    WorkersParams,
    WorkerThreads,
    default_workers,
    set_threads,
)


class _Steps:
    """The handle of a shard run in this process: the worker's steps (run a batch at a time
    by ``wait``), then its result or the error it raised."""

    __slots__ = ("steps", "result", "error")

    def __init__(self, steps):
        self.steps, self.result, self.error = steps, None, None


class InprocessParams(facekit.ExecutorParams):
    threads: Optional[int] = Field(
        None, ge=1, le=1024, description="threads for the stages (onnxruntime, OpenCV); default: the libraries' own"
    )


class InprocessExecutor(facekit.Executor):
    """Runs shards in this process, one at a time (no start-up cost, simplest to debug).
    ``wait`` runs the shard one batch of images further and returns: the shard's progress
    is counted between its batches."""

    name = "inprocess"
    description = "shards run in this process, one at a time"
    Params = InprocessParams

    def start(self, spec):
        self.slots = 1
        set_threads(self.params.threads)
        self.worker = ShardWorker(spec, self.params.threads)
        self.running: list[_Steps] = []  # submitted, not finished
        self.latest: dict[int, int] = {}  # shard -> items done, not yet handed over

    def submit(self, shard):
        h = _Steps(self.worker.steps(shard))
        self.running.append(h)
        return h

    def wait(self, handles):
        """Run the first unfinished shard of ``handles`` one batch further: ``[handle]``
        once it finished (or failed), else ``[]`` with its progress to hand over."""
        done = [h for h in handles if h.steps is None]
        if done:
            return done
        h = handles[0]
        try:
            step = next(h.steps)
        except facekit.FacekitError as e:
            step = e
        if isinstance(step, ShardProgress):
            self.latest[step.shard] = step.done
            return []
        if isinstance(step, facekit.FacekitError):
            h.error = step
        else:
            h.result = step
        h.steps = None
        self.running.remove(h)
        return [h]

    def progress(self):
        out = [ShardProgress(s, d) for s, d in self.latest.items()]
        self.latest = {}
        return out

    def result(self, handle):
        if handle.error is not None:
            raise handle.error
        return handle.result

    def close(self, cancel=False):
        for h in getattr(self, "running", []):  # a shard left unfinished: its read-ahead stops
            if h.steps is not None:
                h.steps.close()
        self.running = []
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.close()


class ProcessesParams(WorkersParams):
    workers: int = Field(2, ge=1, le=512, description="worker processes")


class ProcessesExecutor(facekit.Executor):
    """Runs shards in spawned worker processes that die with the run."""

    name = "processes"
    description = "shards run in spawned worker processes (workers, threads per worker)"
    Params = ProcessesParams

    def start(self, spec):
        p = self.params
        self.slots = p.workers * p.in_flight
        self.pool = WorkerPool(spec, p.workers, p.threads)

    def submit(self, shard):
        return self.pool.submit(shard)

    def wait(self, handles):
        return self.pool.wait(handles)

    def progress(self):
        return self.pool.progress()

    def result(self, handle):
        return self.pool.result(handle)

    def close(self, cancel=False):
        self.pool.stop(cancel)

    def workers(self):
        return self.params.workers


class ThreadsParams(WorkersParams):
    workers: int = Field(
        default_factory=default_workers,
        ge=1,
        le=512,
        description="worker threads (default: the cores this process may use, at most 8)",
    )


class ThreadsExecutor(facekit.Executor):
    """Runs shards on threads of this process, each with its own stages and ``threads``
    onnxruntime/OpenCV threads (default 1): one image per core, no worker start-up. The
    default executor."""

    name = "threads"
    description = "shards run on threads of this process (workers: default one per core, threads per worker)"
    Params = ThreadsParams

    def start(self, spec):
        import cv2

        p = self.params
        self.slots = p.workers * p.in_flight
        # OpenCV's thread count is the process's: each worker thread's calls get ``threads``;
        # the caller's setting comes back at close (facekit used as a library)
        self.cv2_threads = cv2.getNumThreads()
        set_threads(p.threads)
        try:
            self.pool = WorkerThreads(spec, p.workers, p.threads)
        except BaseException:  # a stage that cannot start: the engine will not call close
            self.close(cancel=True)
            raise

    def submit(self, shard):
        return self.pool.submit(shard)

    def wait(self, handles):
        return self.pool.wait(handles)

    def progress(self):
        return self.pool.progress()

    def result(self, handle):
        return self.pool.result(handle)

    def close(self, cancel=False):
        pool, self.pool = getattr(self, "pool", None), None
        try:
            if pool is not None:
                pool.stop(cancel)
        finally:
            if getattr(self, "cv2_threads", None) is not None:
                import cv2

                cv2.setNumThreads(self.cv2_threads)
                self.cv2_threads = None

    def workers(self):
        return self.params.workers


@facekit.hookimpl
def register_executors(register):
    register(ThreadsExecutor)
    register(InprocessExecutor)
    register(ProcessesExecutor)


__all__ = ["InprocessExecutor", "ProcessesExecutor", "ThreadsExecutor"]
