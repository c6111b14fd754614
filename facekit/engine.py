"""The engine: source -> per-sample work -> identity gate -> sinks, with stats.

Reader (the source) streams items; the per-sample work runs in this process or in a
process pool (ordered, bounded queue: memory stays constant whatever the dataset size);
the identity gate holds one identity at a time, applies ``min_images`` and assigns class
ids; the writer hands kept samples to every sink in order. Unusable samples go to
``<output>/rejects.tsv`` (``path, identity, reason, detail``), never silently dropped.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import json
import multiprocessing as mp
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Iterable, Iterator

from tqdm import tqdm

from facekit.atomic import AtomicFile, atomic_write_text
from facekit.config import PipelineSpec
from facekit.errors import FacekitError
from facekit.stages import Reject, Sample
from facekit.worker import Outcome, Worker, init_process, process_batch

IDENTITY_TOO_SMALL = "identity_too_small"


@dataclass
class Summary:
    """What a run did. ``rejects`` counts rejected images/faces by reason."""

    images_read: int = 0
    faces_kept: int = 0
    identities_written: int = 0
    identities_dropped: int = 0
    rejects: dict = field(default_factory=dict)
    seconds: float = 0.0
    sinks: dict = field(default_factory=dict)
    output: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class IdentityGate:
    """Buffers the kept samples of one identity; admits it when it has ``min_images``.

    Admitted identities get consecutive class ids from ``start_id`` in source order, except
    when the source already set the class id (``label >= 0`` on every sample of the
    identity, e.g. the ``mxrec`` source keeping a dataset's labels): it is kept as given.
    Raises FacekitError if the source yields an identity again after moving on, or mixes
    set and unset labels within one identity.
    """

    def __init__(self, start_id: int, min_images: int):
        self.next_id = start_id
        self.min_images = min_images
        self.current: str | None = None
        self.buffer: list[Sample] = []
        self.done: set[str] = set()
        self.admitted = 0
        self.dropped = 0

    def see(self, identity: str) -> tuple[list[Sample], list[Reject]]:
        """Note that ``identity`` is current; returns what finishing the previous released."""
        if identity == self.current:
            return [], []
        released = self.flush()
        if identity in self.done:
            raise FacekitError(
                f"source yielded identity {identity!r} again after other identities; "
                "a source must keep each identity's images together"
            )
        self.current = identity
        return released

    def push(self, sample: Sample) -> tuple[list[Sample], list[Reject]] | None:
        """Buffer ``sample``; returns what finishing the previous identity released, or
        None while the identity stays the same (the common, cheap case)."""
        if sample.identity == self.current:
            self.buffer.append(sample)
            return None
        released = self.see(sample.identity)
        self.buffer.append(sample)
        return released

    def flush(self) -> tuple[list[Sample], list[Reject]]:
        if self.current is None:
            return [], []
        self.done.add(self.current)
        buf, self.buffer = self.buffer, []
        ident, self.current = self.current, None
        if len(buf) >= self.min_images:
            given = {s.label for s in buf}
            if any(lab >= 0 for lab in given):
                if len(given) != 1:
                    raise FacekitError(f"identity {ident!r}: the source gave several or partial labels {sorted(given)}")
                self.admitted += 1
                return buf, []
            label = self.next_id
            self.next_id += 1
            self.admitted += 1
            for s in buf:  # the gate owns these samples: label them in place
                s.label = label
            return buf, []
        self.dropped += 1
        detail = f"identity {ident!r} has {len(buf)} kept face(s) < min_images {self.min_images}"
        return [], [Reject(s.path, IDENTITY_TOO_SMALL, detail, ident) for s in buf]


def _ordered_pool_map(spec: PipelineSpec, items: Iterable, batch: int = 8) -> Iterator[Outcome]:
    """Map items through worker processes, in order, with a bounded number in flight."""
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(spec.workers, mp_context=ctx, initializer=init_process, initargs=(spec,)) as ex:
        it = iter(items)
        pending: collections.deque = collections.deque()
        limit = 2 * spec.workers
        while True:
            while len(pending) < limit:
                chunk = list(islice(it, batch))
                if not chunk:
                    break
                pending.append(ex.submit(process_batch, chunk))
            if not pending:
                return
            yield from pending.popleft().result()


def run(spec: PipelineSpec, progress: bool | None = None) -> Summary:
    """Run a validated pipeline end to end.

    Outputs are published only when the whole run succeeded (each sink atomically, then
    ``rejects.tsv`` and ``summary.json`` in ``spec.output``); on error the previous outputs
    are left as they were. Returns the :class:`Summary`.
    """
    t0 = time.perf_counter()
    source = spec.source.build()
    sinks = [s.build() for s in spec.sinks]
    sp = source.params
    gate = IdentityGate(sp.start_id, sp.min_images)
    summary = Summary(output=str(spec.output))
    reasons: Counter = Counter()
    spec.output.mkdir(parents=True, exist_ok=True)
    rejects = AtomicFile(spec.output / "rejects.tsv", "w", encoding="utf-8", newline="\n")
    rejects.write("path\tidentity\treason\tdetail\n")
    opened = []

    def reject(r: Reject) -> None:
        fatal = source.fatal_reject(r)
        if fatal:
            raise FacekitError(fatal)
        reasons[r.reason] += 1
        detail = r.detail.replace("\t", " ").replace("\n", " ")
        rejects.write(f"{r.path}\t{r.identity}\t{r.reason}\t{detail}\n")

    def emit(released) -> None:
        kept, dropped = released
        for r in dropped:
            reject(r)
        if kept:
            for sink in sinks:
                sink.write_many(kept)
            summary.faces_kept += len(kept)

    try:
        for sink in sinks:
            sink.open()
            opened.append(sink)
        if spec.workers > 0:
            outcomes = _ordered_pool_map(spec, source)
        else:
            worker = Worker(spec)
            outcomes = map(worker, source)
        bar = tqdm(outcomes, desc="facekit", unit="img", disable=(not progress) if progress is not None else None)
        for oc in outcomes if bar.disable else bar:
            summary.images_read += oc.read
            if oc.read and not oc.samples:  # an image of this identity that kept no face
                emit(gate.see(oc.identity))
            for s in oc.samples:
                released = gate.push(s)
                if released is not None:
                    emit(released)
            for r in oc.rejects:
                reject(r)
            if not bar.disable:
                bar.set_postfix(kept=summary.faces_kept, rejected=sum(reasons.values()), refresh=False)
        emit(gate.flush())
        summary.identities_written = gate.admitted
        summary.identities_dropped = gate.dropped
        summary.rejects = dict(sorted(reasons.items()))
        for sc, sink in zip(spec.sinks, sinks):
            summary.sinks[sc.where] = sink.close()
        rejects.commit()
    except BaseException:
        for sink in opened:
            try:
                sink.abort()
            except Exception:
                pass
        rejects.abort()
        raise
    summary.seconds = round(time.perf_counter() - t0, 3)
    atomic_write_text(spec.output / "summary.json", json.dumps(summary.as_dict(), indent=2) + "\n")
    return summary
