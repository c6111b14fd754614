"""The engine: source -> per-sample work -> identity gate -> sinks, with stats.

Reader (the source) streams items; the per-sample work runs in this process or in a
process pool (:mod:`facekit.pool`: ordered, bounded, workers die with their parent); the
identity gate holds one identity at a time, applies ``min_images`` and assigns class ids;
the writer hands kept samples to every sink in order. Unusable samples go to
``<output>/rejects.tsv`` (``path, identity, reason, detail``; fields escaped as
:mod:`facekit.tsv` says), never silently dropped.

A run holds ``<output>/.facekit/lock`` (one run per output), first completes a publication
a killed run left half done and removes the staging files dead runs left, then stages every
output and publishes them together (:mod:`facekit.publish`). A run that keeps no face, or
whose stages fail the same way on the first images, raises and publishes nothing.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from facekit.config import PipelineSpec
from facekit.errors import FacekitError
from facekit.publish import JOURNAL, STATE_DIR, Publication, clean_stale, recover
from facekit.runlock import OutputLock
from facekit.stages import Reject, Sample
from facekit.tsv import escape
from facekit.worker import STAGE_ERROR, Worker

log = logging.getLogger("facekit")

IDENTITY_TOO_SMALL = "identity_too_small"
#: a run stops when this many first images all fail in a stage with the same error
SYSTEMATIC_ERRORS = 5


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


class StageErrorGuard:
    """Stops a run whose stages fail systematically: when each of the first ``n`` images
    read ends in a ``stage_error`` reject with the same detail (a wrong model, a broken
    plugin), every later image would too."""

    def __init__(self, n: int = SYSTEMATIC_ERRORS):
        self.n = n
        self.seen = 0
        self.detail: str | None = None
        self.first_path = ""

    def check(self, read: int, kept: int, rejects: list[Reject]) -> None:
        """Look at one source item's outcome (``read`` images, ``kept`` faces, its rejects).

        Raises:
            FacekitError: the first ``n`` images all failed with one stage error (the message
                names it and the first image).
        """
        if self.seen >= self.n or not read:
            return
        errors = [r for r in rejects if r.reason == STAGE_ERROR]
        if kept or not errors or (self.detail is not None and errors[0].detail != self.detail):
            self.seen = self.n  # one image without that error: not systematic
            return
        if self.detail is None:
            self.detail, self.first_path = errors[0].detail, errors[0].path
        self.seen += 1
        if self.seen == self.n:
            raise FacekitError(
                f"the first {self.n} images all failed in a stage with the same error, stopping: "
                f"{self.detail} (first: {self.first_path})"
            )


def _output_finals(spec: PipelineSpec) -> list[Path]:
    finals = [spec.output / "rejects.tsv", spec.output / "summary.json", spec.output / STATE_DIR / JOURNAL]
    for sc in spec.sinks:
        finals += [v for k in type(sc.params).model_fields if isinstance(v := getattr(sc.params, k), Path)]
    return finals


def _nothing_kept(summary: Summary, reasons: Counter, examples: list[str]) -> FacekitError:
    counts = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())) or "none"
    more = "".join(f"\n  {e}" for e in examples)
    return FacekitError(
        f"no face was kept ({summary.images_read} images read; rejects: {counts}); nothing was written, "
        f"previous outputs are unchanged{more}"
    )


def run(spec: PipelineSpec, progress: bool | None = None) -> Summary:
    """Run a validated pipeline end to end.

    Outputs (every sink's, ``rejects.tsv``, ``summary.json``) are published together only
    when the whole run succeeded; on error the previous outputs are left as they were.

    Returns:
        the :class:`Summary`.
    Raises:
        FacekitError: a stage cannot start, the stages fail systematically, a worker dies,
            no face is kept, the output is locked by another run, a sink fails (the message
            names the sink and its path).
    """
    t0 = time.perf_counter()
    spec.output.mkdir(parents=True, exist_ok=True)
    with OutputLock(spec.output):
        if recover(spec.output):
            log.warning("%s: completed the publication of a run that was interrupted", spec.output)
        clean_stale(_output_finals(spec))
        summary = _run_locked(spec, progress)
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def _run_locked(spec: PipelineSpec, progress: bool | None) -> Summary:
    t0 = time.perf_counter()
    source = spec.source.build()
    sinks = [s.build() for s in spec.sinks]
    sp = source.params
    gate = IdentityGate(sp.start_id, sp.min_images)
    guard = StageErrorGuard()
    summary = Summary(output=str(spec.output))
    reasons: Counter = Counter()
    examples: list[str] = []
    pub = Publication(spec.output)
    rejects_path = pub.file(spec.output / "rejects.tsv")
    rejects = open(rejects_path, "w", encoding="utf-8", newline="\n", errors="surrogateescape")
    rejects.write("path\tidentity\treason\tdetail\n")
    opened = []
    outcomes = None

    def reject(r: Reject) -> None:
        fatal = source.fatal_reject(r)
        if fatal:
            raise FacekitError(fatal)
        reasons[r.reason] += 1
        if len(examples) < 5:
            examples.append(f"{r.path}: {r.reason}: {r.detail}")
        rejects.write(f"{escape(r.path)}\t{escape(r.identity)}\t{escape(r.reason)}\t{escape(r.detail)}\n")

    def emit(released) -> None:
        kept, dropped = released
        for r in dropped:
            reject(r)
        if kept:
            for sc, sink in zip(spec.sinks, sinks):
                _sink_call(sc, sink.write_many, kept)
            summary.faces_kept += len(kept)

    try:
        for sc, sink in zip(spec.sinks, sinks):
            _sink_call(sc, sink.open, pub)
            opened.append(sink)
        if spec.workers > 0:
            from facekit.pool import ordered_pool_map

            outcomes = ordered_pool_map(spec, source)
        else:
            outcomes = map(Worker(spec), source)
        shown = progress if progress is not None else sys.stderr.isatty()
        total = source.count() if shown else None  # a listing costs time: only for a visible bar
        bar = tqdm(outcomes, desc="facekit", unit="img", total=total, disable=not shown)
        for oc in outcomes if bar.disable else bar:
            summary.images_read += oc.read
            guard.check(oc.read, len(oc.samples), oc.rejects)
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
        if summary.faces_kept == 0:
            raise _nothing_kept(summary, reasons, examples)
        summary.identities_written = gate.admitted
        summary.identities_dropped = gate.dropped
        summary.rejects = dict(sorted(reasons.items()))
        for sc, sink in zip(spec.sinks, sinks):
            summary.sinks[sc.where] = _sink_call(sc, sink.close)
        rejects.close()
        summary.seconds = round(time.perf_counter() - t0, 3)
        summary_path = pub.file(spec.output / "summary.json")
        with open(summary_path, "w", encoding="utf-8") as f:
            f.write(json.dumps(summary.as_dict(), indent=2) + "\n")
        pub.commit()
    except OSError as e:  # the run's own files (rejects.tsv, summary.json, the journal)
        _abort(opened, rejects, pub, outcomes)
        target = e.filename or spec.output
        raise FacekitError(f"{target}: {e.strerror or e}" + (" (disk full?)" if e.errno == 28 else "")) from None
    except BaseException:
        _abort(opened, rejects, pub, outcomes)
        raise
    return summary


def _abort(sinks, rejects, pub: Publication, outcomes) -> None:
    """Undo a failed run: stop the workers, let the sinks release their files, remove the
    staging (or leave it to the next run's recovery once the journal exists)."""
    close = getattr(outcomes, "close", None)
    if close is not None:
        close()  # a pool generator: shuts its worker processes down now, not at GC time
    for sink in sinks:
        try:
            sink.abort()
        except Exception:
            pass
    rejects.close()
    pub.abort()


def _sink_call(sc, fn, *args):
    """Call a sink method; an OS error (disk full, permissions) names the sink and its path."""
    try:
        return fn(*args)
    except OSError as e:
        where = getattr(sc.params, "path", None)
        target = e.filename or where
        raise FacekitError(
            f"{sc.where}: writing {target}: {e.strerror or e}" + (" (disk full?)" if e.errno == 28 else "")
        ) from None
