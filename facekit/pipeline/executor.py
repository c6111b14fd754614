"""Executors: where shards run. The plugin API (:class:`Executor`) and the loop that drives
any executor (:func:`run_shards`): bounded work in flight, results in shard order, retries.

An executor plugin implements five small methods around *handles* (futures, Ray object
references, ...): ``start`` builds its workers, ``submit`` sends one shard and returns a
handle, ``wait`` blocks until some handles finished, ``result`` returns a finished handle's
:class:`ShardResult` (raising :class:`ShardFailed` when the work was lost, e.g. a worker
died), ``close`` stops everything. :func:`run_shards` does the rest, the same way for every
executor: at most ``slots`` shards in flight (memory stays flat), results handed on in shard
order, a failed shard run again alone (so one bad shard cannot use up the retries of the
shards that failed beside it), then, after ``retries`` more attempts, turned into rejects.

An executor may also report progress inside the shards (:mod:`facekit.pipeline.progress`):
its ``wait`` then also returns, with no handle finished, when progress messages arrived,
and ``progress`` hands them over; :func:`run_shards` counts the images as the workers finish
them, not only when the shards before them are done.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Callable, ClassVar, Iterable, Iterator, Optional, Union

from pydantic import Field

from facekit.errors import FacekitError
from facekit.params import Params
from facekit.pipeline.progress import ImagesDone, ProgressTally, ShardProgress
from facekit.pipeline.shards import Shard, ShardResult, failed_result
from facekit.stages import Stage

log = logging.getLogger("facekit")


class ShardFailed(Exception):
    """The work on one shard was lost (its worker died, a node left the cluster): the shard
    may be run again. Any other exception from :meth:`Executor.result` stops the run."""


class ExecutorParams(Params):
    retries: int = Field(
        2, ge=0, le=100, description="times a failed shard (its worker died) runs again before its images become rejects"
    )


class WorkersParams(ExecutorParams):
    """Parameters shared by executors that run shards on several workers at once."""

    threads: Optional[int] = Field(
        1,
        ge=1,
        le=1024,
        description="threads per worker for onnxruntime (detectors and recognizers with threads: 0) and "
        "OpenCV; 1 so that N workers on N cores do not fight",
    )
    in_flight: int = Field(2, ge=1, le=64, description="shards queued per worker (memory stays flat)")


class Executor(Stage):
    """Runs shards of a pipeline. Subclasses set ``name`` and ``Params`` and implement the
    methods below; :func:`run_shards` drives them. A worker turns a shard into a result with
    :class:`facekit.pipeline.worker.ShardWorker` built from the pipeline spec."""

    kind: ClassVar[str] = "executor"
    Params = ExecutorParams

    #: shards in flight at most (set by :meth:`start`; 2 x workers is a good value)
    slots: int = 1

    def start(self, spec) -> None:
        """Build the workers for ``spec`` (a :class:`facekit.pipeline.config.PipelineSpec`).

        Raises:
            FacekitError: a stage cannot start (one line naming it)."""

    def submit(self, shard: Shard) -> Any:
        """Start work on ``shard``; return a handle for :meth:`wait` / :meth:`result`."""
        raise NotImplementedError

    def wait(self, handles: list) -> list:
        """Block until at least one of ``handles`` finished; return the finished ones. An
        executor that reports progress also returns (maybe none finished) when
        :meth:`progress` has messages."""
        raise NotImplementedError

    def progress(self) -> list[ShardProgress]:
        """The progress messages of the shards in flight received since the last call,
        without blocking (default: none; the images are then counted as shards finish)."""
        return []

    def result(self, handle) -> ShardResult:
        """The :class:`ShardResult` of a finished handle.

        Raises:
            ShardFailed: the work was lost and may be retried (message: why, naming the shard).
            FacekitError: the pipeline cannot run (a stage failed to start): stops the run.
        """
        raise NotImplementedError

    def close(self, cancel: bool = False) -> None:
        """Stop the workers; ``cancel``: now, dropping work in flight (an error, Ctrl-C)."""

    def workers(self) -> int:
        """How many workers run shards at once (for the summary and the shard size)."""
        return 1


#: a finished shard taken from elsewhere (a previous run): a callable loading it (raising
#: :class:`ShardFailed` when it does not read back: the shard then runs again)
Ready = Union[ShardResult, Callable[[], ShardResult]]


def run_shards(
    executor: Executor,
    shards: Iterable[Shard],
    reuse: Callable[[Shard], Optional[Ready]] = lambda shard: None,
    retries: Optional[int] = None,
    progress: bool = False,
) -> Iterator[Union[ShardResult, ImagesDone]]:
    """Run ``shards`` on a started ``executor``; yield their results in shard order.

    ``progress``: also yield :class:`~facekit.pipeline.progress.ImagesDone` counts between
    the results, as the images are done in any shard (each item of each shard counted once,
    before its shard's result; a reused shard's items just before it).

    ``reuse(shard)`` returns a finished result (or a loader of one) for a shard that needs
    no work (resume), else None. A shard whose work is lost (:class:`ShardFailed`) runs
    again, alone, up to ``retries`` times (default: the executor's ``retries`` param); then
    each of its images becomes a ``shard_failed`` reject naming the error.

    Raises:
        FacekitError: the executor reported an error that stops the run, or a shard failed
            every attempt before any shard finished (the workers cannot run at all).
    """
    if retries is None:
        retries = getattr(executor.params, "retries", 0)
    it = iter(shards)
    pending: dict = {}  # handle -> (shard, attempt)
    ready: dict[int, tuple] = {}  # index -> (shard, result or loader)
    again: deque = deque()  # (shard, attempt) to run again, one at a time
    nxt = 0
    succeeded = False  # whether any shard's work came back (or was reused)
    exhausted = False
    slots = max(1, int(executor.slots))
    tally = ProgressTally()

    def submit(shard, attempt):
        tally.start(shard.index)
        pending[executor.submit(shard)] = (shard, attempt)

    while True:
        # hand on what is ready first: a finished shard is saved before more work starts
        while nxt in ready:
            shard, res = ready.pop(nxt)
            if callable(res):
                try:
                    res = res()
                except ShardFailed as e:  # a kept shard that does not read back: run it again
                    log.warning("shard %d (%s): %s; running it again", shard.index, _first(shard), e)
                    submit(shard, 1)
                    break
                news = tally.finish(shard.index, len(shard.items))  # reused: its items are done now
                if progress and news:
                    yield ImagesDone(news)
            succeeded = True
            yield res
            shard = res = None  # neither is held while the next shards are cut and run
            nxt += 1
        if again:
            if not pending:  # a failed shard runs alone: its failure is then its own
                submit(*again.popleft())
        else:
            while not exhausted and len(pending) < slots and len(ready) <= 4 * slots:
                shard = next(it, None)
                if shard is None:
                    exhausted = True
                    break
                done = reuse(shard)
                if done is not None:
                    ready[shard.index] = (shard, done)
                else:
                    submit(shard, 1)
        if not pending:
            if exhausted and not ready and not again:
                return
            continue
        finished = executor.wait(list(pending))
        news = sum(tally.seen(m) for m in executor.progress())  # drained even when not shown
        if progress and news:
            yield ImagesDone(news)
        for h in finished:
            shard, attempt = pending.pop(h)
            try:
                res = executor.result(h)
            except ShardFailed as e:
                if attempt <= retries:
                    log.warning("shard %d (%s): %s; running it again (attempt %d)", shard.index, _first(shard), e, attempt + 1)
                    again.append((shard, attempt + 1))
                    continue
                if not succeeded:  # no shard ever came back: the workers cannot run at all
                    raise FacekitError(
                        f"shard {shard.index} ({_first(shard)}) failed {attempt} time(s) and no shard has "
                        f"finished, stopping: {e}"
                    ) from None
                log.warning("shard %d (%s) failed %d time(s): %s; its images are rejected", shard.index, _first(shard), attempt, e)
                res = failed_result(shard, str(e), attempt)
            else:
                succeeded = True
            res.attempts = attempt
            ready[shard.index] = (shard, res)
            news = tally.finish(shard.index, len(shard.items))
            if progress and news:
                yield ImagesDone(news)
        h = shard = res = finished = None  # a handle holds its result: not kept while the next shards run


def _first(shard: Shard) -> str:
    paths = [getattr(i, "path", "?") for i in shard.items]
    return paths[0] + (f" and {len(paths) - 1} more" if len(paths) > 1 else "") if paths else "empty"
