"""The run: config -> shards -> executor (workers) -> identity gate -> sinks, with resume
from a work folder, a results table and atomic publication.

Public names for executor plugins: :class:`ShardWorker` (what a worker runs on a shard),
:class:`Shard`, :class:`ShardResult`, :class:`ShardFailed`, :class:`WorkerPool` and
:func:`set_threads` (the process pool the ``processes`` executor uses), :class:`WorkerThreads` and
:func:`usable_cores` / :func:`default_workers` (the thread pool of the ``threads`` executor),
:class:`ShardProgress`, :class:`ProgressSender` / :class:`ProgressInbox` (the two ends of an
executor's progress channel, :data:`PROGRESS_CHANNEL_SIZE` messages at most).
"""

from facekit.pipeline.executor import Executor, ExecutorParams, ShardFailed, WorkersParams, run_shards
from facekit.pipeline.processes import WorkerPool, set_threads
from facekit.pipeline.progress import PROGRESS_CHANNEL_SIZE, ProgressInbox, ProgressSender, ShardProgress
from facekit.pipeline.shards import Outcome, Shard, ShardResult
from facekit.pipeline.threads import WorkerThreads, default_workers, usable_cores
from facekit.pipeline.worker import ShardWorker

__all__ = [
    "Executor",
    "ExecutorParams",
    "Outcome",
    "PROGRESS_CHANNEL_SIZE",
    "ProgressInbox",
    "ProgressSender",
    "Shard",
    "ShardFailed",
    "ShardProgress",
    "ShardResult",
    "ShardWorker",
    "WorkerPool",
    "WorkerThreads",
    "WorkersParams",
    "default_workers",
    "run_shards",
    "set_threads",
    "usable_cores",
]
