"""Shards: runs of whole identities cut from the source stream, the unit of work.

A :class:`Shard` holds about ``shard_size`` source items (samples and source rejects) in
source order, cut only where the identity changes, so every identity lies in one shard and
the identity gate can decide it from that shard alone. A shard worker
(:class:`facekit.pipeline.worker.ShardWorker`) turns a shard into a :class:`ShardResult`:
one :class:`Outcome` per item plus stats. Shards are numbered from 0 in source order; the
engine consumes results in that order whatever order an executor finishes them in, so the
outputs never depend on the executor, its worker count or timing.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from facekit.stages import Reject, Sample

#: shard size when the config sets none and the source cannot say how many items it has
DEFAULT_SHARD_SIZE = 1000
#: an automatic shard size is never below this (per-shard overhead) ...
MIN_AUTO_SHARD_SIZE = 16
#: ... and gives each executor slot about this many shards (load balance)
SHARDS_PER_SLOT = 4
#: near the end of a job on several workers, a shard holds at most the remaining items over
#: this many shards per worker (guided self-scheduling), so that no worker idles while
#: another finishes a full-size last shard ...
TAPER_SHARDS_PER_WORKER = 2
#: ... but never fewer than this many items (per-shard overhead)
MIN_TAPER_SIZE = 4
#: the reason of the rejects a shard that failed every attempt leaves for its images
SHARD_FAILED = "shard_failed"
#: the reason of an image a stage failed on with an exception (a bug, a model error)
STAGE_ERROR = "stage_error"


@dataclass(slots=True)
class Outcome:
    """What became of one source item: its identity, the kept samples (encoded, one per
    kept face or variant) and the rejects. ``read``: source images read (1, or 0 for a
    reject the source made itself)."""

    identity: str
    samples: list = field(default_factory=list)
    rejects: list = field(default_factory=list)
    read: int = 0


@dataclass
class Shard:
    """``items`` (:class:`Sample` / :class:`Reject`, source order) of whole identities;
    ``index``: the shard's position in source order (0-based)."""

    index: int
    items: list

    def digest(self) -> str:
        """A fingerprint of this shard's input (hex): every item's key, path, identity and
        label, the bytes it carries (hashed: a RecordIO or ``.bin`` record) or, for a file,
        its :func:`file_stamp`. A finished shard is reused only while its input digest is
        unchanged."""
        h = hashlib.blake2b(digest_size=16)
        for it in self.items:
            if isinstance(it, Reject):
                h.update(f"R\0{it.path}\0{it.identity}\0{it.reason}\0{it.detail}\n".encode("utf-8", "surrogateescape"))
                continue
            h.update(f"S\0{it.key}\0{it.path}\0{it.identity}\0{it.label}\0{it.stem}\0{it.record_key}\0".encode("utf-8", "surrogateescape"))
            if it.data is not None:
                h.update(hashlib.blake2b(it.data, digest_size=16).digest())
            elif it.image is not None:
                h.update(hashlib.blake2b(it.image.tobytes(), digest_size=16).digest())
            else:
                h.update(file_stamp(it.path).encode())
            h.update(b"\n")
        return h.hexdigest()


def file_stamp(path) -> str:
    """What tells a rewritten file without reading it: size, modification time, status
    change time (ctime), inode and device; ``missing <errno>`` when it cannot be stat'ed.

    Size and mtime alone can be faked by accident (a file rewritten with the same size,
    then ``touch -r`` or a copy keeping times, e.g. ``cp -p``/``rsync -t``); the ctime
    cannot: the kernel sets it to the current time on every write, rename or chmod, and no
    call sets it back (only a changed system clock would). A file replaced by another
    (``mv``, an editor's save) also changes inode. Moving or copying the dataset therefore
    makes its shards run again, which is the safe side."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"missing {e.errno}"
    return f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}"


@dataclass
class ShardResult:
    """A finished shard: ``outcomes[i]`` is what became of ``shard.items[i]``.

    ``seconds``: the worker's time on it; ``attempts``: how many times it ran (more than 1
    after a worker died); ``reused``: loaded from a previous run's work folder; ``failed``:
    every attempt was lost and its images are ``shard_failed`` rejects."""

    index: int
    outcomes: list
    seconds: float = 0.0
    attempts: int = 1
    reused: bool = False
    failed: bool = False

    def stats(self) -> dict:
        """Per-shard stats: items, images read, faces kept, rejects by reason, seconds,
        attempts (what the shard's done file records)."""
        reasons = Counter(r.reason for oc in self.outcomes for r in oc.rejects)
        return {
            "items": len(self.outcomes),
            "images_read": sum(oc.read for oc in self.outcomes),
            "faces_kept": sum(len(oc.samples) for oc in self.outcomes),
            "rejects": dict(sorted(reasons.items())),
            "seconds": round(self.seconds, 3),
            "attempts": self.attempts,
        }


def _identity(item) -> str:
    return item.identity


def cut_shards(
    items: Iterable[Sample | Reject], shard_size: int, total: int | None = None, workers: int = 1
) -> Iterator[Shard]:
    """Cut a source stream into shards of whole identities.

    A shard is closed at the first identity change after it holds its target size, so a
    shard holds at least that many items (all but the last) and more when its last identity
    is large. The target is ``shard_size``; when the stream's length ``total`` is known and
    ``workers > 1``, it shrinks near the end to the remaining items over
    :data:`TAPER_SHARDS_PER_WORKER` x ``workers`` shards (not below
    :data:`MIN_TAPER_SIZE`), so the workers finish together instead of one of them running
    a full last shard alone. The cut depends only on the stream and these three numbers
    (``total`` is an estimate: a wrong one changes the sizes, never the items or their
    order; a stream longer than ``total`` goes back to ``shard_size`` once past it), so a
    rerun with the same three numbers cuts the same shards (the work folder keeps them for a
    resume). Raises ValueError for ``shard_size < 1``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, not {shard_size}")
    index, current, last, seen = 0, [], None, 0
    target = taper_size(shard_size, total, workers)
    for it in items:
        ident = _identity(it)
        if len(current) >= target and ident != last:
            yield Shard(index, current)
            index, current = index + 1, []
            target = taper_size(shard_size, None if total is None else total - seen, workers)
        current.append(it)
        last = ident
        seen += 1
    if current:
        yield Shard(index, current)


def taper_size(shard_size: int, remaining: int | None, workers: int) -> int:
    """The target size of the next shard: ``shard_size``, or less near the end of a job on
    several ``workers`` (``remaining``: items not yet in a shard, None when unknown); see
    :func:`cut_shards`."""
    if remaining is None or workers <= 1 or remaining <= 0:  # <= 0: the count was low
        return shard_size
    share = -(-remaining // (TAPER_SHARDS_PER_WORKER * workers))
    return max(min(shard_size, MIN_TAPER_SIZE), min(shard_size, share))


def auto_shard_size(count: int | None, slots: int) -> int:
    """The shard size when the config sets none: :data:`DEFAULT_SHARD_SIZE`, made smaller
    for a small job run by several workers so that each of the executor's ``slots`` gets
    about :data:`SHARDS_PER_SLOT` shards (never below :data:`MIN_AUTO_SHARD_SIZE`).
    ``count``: the source's item count, or None when unknown."""
    if count is None or slots <= 1:
        return DEFAULT_SHARD_SIZE
    per = -(-count // (slots * SHARDS_PER_SLOT))
    return max(MIN_AUTO_SHARD_SIZE, min(DEFAULT_SHARD_SIZE, per))


def failed_result(shard: Shard, error: str, attempts: int) -> ShardResult:
    """The result of a shard that failed every attempt: each of its images becomes a
    :data:`SHARD_FAILED` reject carrying ``error``; the source's own rejects stay."""
    outs = []
    for it in shard.items:
        if isinstance(it, Reject):
            outs.append(Outcome(it.identity, rejects=[it]))
        else:
            detail = f"shard {shard.index} failed {attempts} time(s): {error}"
            outs.append(Outcome(it.identity, rejects=[Reject(it.path, SHARD_FAILED, detail, it.identity, it.required)], read=1))
    return ShardResult(shard.index, outs, attempts=attempts, failed=True)
