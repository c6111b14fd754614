"""Progress of the shards in flight: typed messages from the shard workers to the engine.

The data flows one way. A :class:`~facekit.pipeline.worker.ShardWorker` yields a
:class:`ShardProgress` after each batch of images (:meth:`ShardWorker.steps`); an executor
whose shards run elsewhere (threads, processes, Ray actors) gives its workers the sending
end of a bounded channel (:class:`ProgressSender` over a ``queue.Queue``, a
multiprocessing queue, a Ray queue) and reads the other end through a
:class:`ProgressInbox`; :meth:`Executor.progress <facekit.pipeline.executor.Executor.progress>`
hands the messages to :func:`~facekit.pipeline.executor.run_shards`, which turns them into
:class:`ImagesDone` counts (:class:`ProgressTally`: each item of each shard counted once,
whatever order the shards finish in) for the engine's progress bar.

A message carries the count of the shard's items done so far (cumulative), so one dropped
when the channel is full loses nothing: the next message of that shard, or its result,
carries the count. The results themselves never travel this way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

#: messages a progress channel holds at most (a full channel drops new messages)
PROGRESS_CHANNEL_SIZE = 256
#: seconds an executor's ``wait`` blocks on its shards before it looks at the progress channel
PROGRESS_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class ShardProgress:
    """A shard worker's report: ``done`` items of shard ``shard`` are processed (decoded,
    detected, aligned), counted from the start of this attempt at the shard."""

    shard: int
    done: int


@dataclass(frozen=True)
class ImagesDone:
    """What :func:`~facekit.pipeline.executor.run_shards` yields for the progress bar:
    ``count`` more source items were processed (in any shard)."""

    count: int


class ProgressSender:
    """The workers' end of a bounded progress channel (anything with ``put_nowait``).

    :meth:`send` never blocks and never fails the shard: a full channel (or one that is
    gone, a Ray queue on a lost node) drops the message, which the next one supersedes.
    Picklable when its channel is (a multiprocessing queue passed to a new process, a Ray
    queue)."""

    def __init__(self, channel, min_interval: float = 0.0):
        self.channel = channel
        #: seconds between two messages at least (a Ray queue costs a round trip per
        #: message): one arriving sooner is dropped, the next carries its count
        self.min_interval = float(min_interval)
        self._last = float("-inf")

    def send(self, msg: ShardProgress) -> None:
        """Put ``msg`` on the channel if there is room (and :attr:`min_interval` passed)."""
        if self.min_interval:
            now = time.monotonic()
            if now - self._last < self.min_interval:
                return
            self._last = now
        try:
            self.channel.put_nowait(msg)
        except Exception:  # full or gone: progress is best effort, the result is what counts
            pass

    def __getstate__(self):
        return {"channel": self.channel, "min_interval": self.min_interval}

    def __setstate__(self, state):
        self.__init__(state["channel"], state["min_interval"])


class ProgressInbox:
    """The engine's end of a progress channel (``get_nowait``, or a Ray queue's
    ``size`` / ``get_nowait_batch``): the latest count of each shard, until taken."""

    def __init__(self, channel):
        self.channel = channel
        self.latest: dict[int, int] = {}  # shard -> items done (the largest count seen)

    def collect(self) -> bool:
        """Read what the channel holds now, without blocking; True when messages came."""
        got = _drain(self.channel)
        for m in got:
            if isinstance(m, ShardProgress) and m.done > self.latest.get(m.shard, 0):
                self.latest[m.shard] = m.done
        return bool(got)

    def wait(self, finished: Callable[[float], list]) -> list:
        """An executor's ``wait``: call ``finished(timeout)`` (its handles that finish within
        ``timeout`` seconds) until some finished or progress messages came; return the
        finished ones (maybe none)."""
        while True:
            done = finished(PROGRESS_POLL_SECONDS)
            if done or self.collect():
                return done

    def take(self) -> list[ShardProgress]:
        """The messages collected so far (one per shard, its latest count), and forget them."""
        self.collect()
        out = [ShardProgress(s, d) for s, d in self.latest.items()]
        self.latest = {}
        return out


def _drain(channel) -> list:
    """Up to :data:`PROGRESS_CHANNEL_SIZE` messages from ``channel`` without blocking; none
    from a channel that is closed or broken (a worker process died while writing to it)."""
    out: list = []
    try:
        if hasattr(channel, "get_nowait_batch"):  # a Ray queue: two round trips, not one a message
            n = min(channel.size(), PROGRESS_CHANNEL_SIZE)
            return channel.get_nowait_batch(n) if n else []
        while len(out) < PROGRESS_CHANNEL_SIZE:
            out.append(channel.get_nowait())
    except Exception:  # queue.Empty (ray.util.queue.Empty is one too), a closed or broken channel
        pass
    return out


class ProgressTally:
    """Counts the items of the shards in flight once each, however many messages, retries
    and late messages (a worker process's queue may deliver after its result) there are.

    :meth:`start` a shard when it is submitted, :meth:`seen` each message, :meth:`finish`
    the shard when its result (or its failure) is known: it returns the items not yet
    counted. Messages about shards not started, or already finished, count nothing."""

    def __init__(self) -> None:
        self.counted: dict[int, int] = {}  # shard in flight -> items counted

    def start(self, shard: int) -> None:
        """Shard ``shard`` was submitted (again: its count so far stays)."""
        self.counted.setdefault(shard, 0)

    def seen(self, msg: ShardProgress) -> int:
        """The items ``msg`` adds to what was counted of its shard."""
        have = self.counted.get(msg.shard)
        if have is None or msg.done <= have:
            return 0
        self.counted[msg.shard] = msg.done
        return msg.done - have

    def finish(self, shard: int, items: int) -> int:
        """Shard ``shard`` of ``items`` items is done: the items not counted yet."""
        return max(0, items - self.counted.pop(shard, 0))
