"""Per-sample work in a pool of spawned worker processes, results in source order.

Bounded: at most ``2 * workers`` batches are in flight, so memory stays flat whatever the
dataset size. Workers die with their parent (Linux ``PR_SET_PDEATHSIG``, elsewhere a
watchdog thread), so a killed ``facekit run`` leaves no worker or resource tracker behind.
A stage that cannot start in a worker, and a worker that dies (killed by the system, e.g.
out of memory), become one-line errors naming the stage or the images in flight.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import multiprocessing as mp
import os
import signal
import threading
import time
from itertools import islice
from typing import Iterable, Iterator, Optional

from facekit.config import PipelineSpec
from facekit.errors import FacekitError, one_line
from facekit.stages import Reject
from facekit.worker import Outcome, Worker

_worker: Optional[Worker] = None
_init_error: Optional[str] = None


def _die_with_parent(parent: int) -> None:
    """Make this process exit when ``parent`` dies."""
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


def init_process(spec: PipelineSpec, parent: int) -> None:
    """Pool initializer: die with ``parent``, build this process's :class:`Worker`. A stage
    that cannot start is remembered and reported by every batch (an initializer exception
    would only break the pool without a message)."""
    global _worker, _init_error
    _die_with_parent(parent)
    # Ctrl-C reaches the whole process group: the parent unwinds and shuts the pool down;
    # a worker interrupted inside the executor's queue would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _worker = Worker(spec)
    except Exception as e:  # reported to the parent as one line by process_batch
        _init_error = one_line(e) if isinstance(e, FacekitError) else f"{type(e).__name__}: {one_line(e)}"


def process_batch(items: list) -> list[Outcome]:
    """Process a batch of source items in a pool process, in order."""
    if _init_error is not None:
        raise FacekitError(_init_error)
    return [_worker(it) for it in items]


def _names(chunk: list) -> str:
    paths = [getattr(it, "path", "?") for it in chunk]
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def ordered_pool_map(spec: PipelineSpec, items: Iterable, batch: int = 8) -> Iterator[Outcome]:
    """Map source items (``Sample``/``Reject``) through ``spec.workers`` spawned processes,
    yielding one :class:`Outcome` per item in source order.

    Raises:
        FacekitError: a stage cannot start in a worker (its message), or a worker died
            (names the images it was processing).
    """
    ctx = mp.get_context("spawn")
    ex = cf.ProcessPoolExecutor(spec.workers, mp_context=ctx, initializer=init_process, initargs=(spec, os.getpid()))
    finished = False
    try:
        it = iter(items)
        pending: collections.deque = collections.deque()
        limit = 2 * spec.workers
        while True:
            while len(pending) < limit:
                chunk = list(islice(it, batch))
                if not chunk:
                    break
                if all(isinstance(c, Reject) for c in chunk):  # nothing to compute
                    done: cf.Future = cf.Future()
                    done.set_result([Outcome(c.identity, rejects=[c]) for c in chunk])
                    pending.append((done, chunk))
                else:
                    pending.append((ex.submit(process_batch, chunk), chunk))
            if not pending:
                finished = True
                return
            fut, chunk = pending.popleft()
            try:
                outs = fut.result()
            except cf.process.BrokenProcessPool:
                raise FacekitError(
                    f"a worker process died while processing {_names(chunk)} "
                    "(killed by the system, e.g. out of memory?)"
                ) from None
            yield from outs
    finally:
        if not finished:  # an error, Ctrl-C or close(): do not wait for work nobody wants
            _terminate(ex)
        ex.shutdown(wait=True, cancel_futures=True)


def _terminate(ex: cf.ProcessPoolExecutor) -> None:
    """Stop the pool's worker processes now (SIGTERM), not after their current batch."""
    for proc in list((getattr(ex, "_processes", None) or {}).values()):
        try:
            proc.terminate()
        except Exception:  # already gone
            pass
