"""The engine: source -> shards -> executor -> identity gate -> sinks, with stats.

The reader (the source) streams items, cut into shards of whole identities
(:mod:`facekit.pipeline.shards`); an executor plugin runs each shard through a
:class:`~facekit.pipeline.worker.ShardWorker` (in this process, in worker processes, on a
cluster) and :func:`~facekit.pipeline.executor.run_shards` hands the results back in shard
order; each finished shard is kept in the work folder (:mod:`facekit.pipeline.work`) so a
crashed run resumes; the identity gate decides each shard's identities and labels the kept
faces; the writer hands them to every sink, writes ``rejects.tsv`` (``path, identity,
reason, detail``; fields escaped as :mod:`facekit.formats.tsv` says) and the results table
(:mod:`facekit.pipeline.results`, a row for every face and rejected image). Nothing is
dropped silently.

With a ``merge:`` step the shards are only collected as they finish; the dataset-level
decision step then runs and every kept shard is read again, changed by its plan, through
the gate to the sinks (:mod:`facekit.pipeline.decide`). Every cleaning and merge decision
is a line of ``decisions.tsv`` (:mod:`facekit.pipeline.decisions`).

A run holds ``<output>/.facekit/lock`` (one run per output), first completes a publication
a killed run left half done and removes the staging files dead runs left, then stages every
output and publishes them together (:mod:`facekit.pipeline.publish`). A run that keeps no
face, or whose stages fail the same way on the first images, raises and publishes nothing.
"""

from __future__ import annotations

import errno
import json
import logging
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from facekit.errors import FacekitError, InterruptedAfterPublication
from facekit.formats.tsv import escape
from facekit.pipeline.config import PipelineSpec
from facekit.pipeline.decide import Collector, decide
from facekit.pipeline.decisions import DECISIONS_FILE, DecisionsWriter, read_edits
from facekit.pipeline.replay import Replay, apply_face_decisions
from facekit.pipeline.executor import run_shards
from facekit.pipeline.fingerprint import pipeline_fingerprint
from facekit.pipeline.gate import IDENTITY_TOO_SMALL, IdentityGate, Row, StageErrorGuard, sink_order
from facekit.pipeline.progress import ImagesDone
from facekit.pipeline.publish import JOURNAL, STATE_DIR, Publication, clean_stale, recover
from facekit.pipeline.results import RESULTS_FILE, ResultsWriter
from facekit.pipeline.sampling import limit
from facekit.pipeline.runlock import OutputLock
from facekit.pipeline.shards import auto_shard_size, cut_shards
from facekit.pipeline.work import WorkFolder
from facekit.stages import Reject, Sample

log = logging.getLogger("facekit")


@dataclass
class Summary:
    """What a run did. ``rejects`` counts rejected images/faces by reason; ``identities``
    maps each identity name to ``{"label", "kept", "rejected"}`` (label -1: not admitted;
    after a run a read-only :class:`~facekit.pipeline.gate.IdentityCounts`, compact for
    millions of identities: :meth:`as_dict` gives plain dicts for ``json``); ``shards``: how
    many, how many were reused from a crashed run, how many ran again."""

    images_read: int = 0
    faces_kept: int = 0
    identities_written: int = 0
    identities_dropped: int = 0
    rejects: dict = field(default_factory=dict)
    seconds: float = 0.0
    executor: dict = field(default_factory=dict)
    shards: dict = field(default_factory=dict)
    sinks: dict = field(default_factory=dict)
    results: str = ""
    report: str = ""
    output: str = ""
    #: the decision step's record (``decisions.tsv`` lines by kind and decision; with a
    #: ``merge`` step its thresholds, the pairs found and merged, the verification bins
    #: checked for overlap: a contamination record that ships with the dataset)
    decisions: dict = field(default_factory=dict)
    identities: Mapping = field(default_factory=dict)

    def as_dict(self) -> dict:
        """A plain copy (``identities`` as a dict of dicts)."""
        d = asdict(replace(self, identities={}))
        d["identities"] = {name: dict(v) for name, v in self.identities.items()}
        return d

    def write_json(self, f) -> None:
        """Write the summary to text file ``f`` as ``json.dumps(self.as_dict(), indent=2)``
        plus a newline, byte for byte, without building the per-identity dicts at once
        (``identities`` is the last field: 85k identities of MS1M would be ~21 MiB of dicts)."""
        text = json.dumps(asdict(replace(self, identities={})), indent=2)
        assert text.endswith('\n  "identities": {}\n}')
        if not self.identities:
            f.write(text + "\n")
            return
        f.write(text[: -len('{}\n}')] + "{")
        sep = "\n"
        for name, v in self.identities.items():
            body = ",\n".join(f"      {json.dumps(k)}: {json.dumps(x)}" for k, x in v.items())
            f.write(f"{sep}    {json.dumps(name)}: {{\n{body}\n    }}")
            sep = ",\n"
        f.write("\n  }\n}\n")


def _output_finals(spec: PipelineSpec) -> list[Path]:
    finals = [spec.output / n for n in ("rejects.tsv", "summary.json", RESULTS_FILE, DECISIONS_FILE)] + [spec.output / STATE_DIR / JOURNAL]
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

    Outputs (every sink's, ``rejects.tsv``, ``results.parquet``, ``summary.json``) are
    published together only when the whole run succeeded; on error the previous outputs are
    left as they were, and the shards finished so far stay in ``<output>/.facekit/shards``
    for the next run of the same pipeline to reuse.

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
        from facekit.report.staging import remove_dead_staging

        remove_dead_staging(spec.output / "report")  # left by a `facekit report` killed there
        summary = _Run(spec, progress).run()
        if spec.report:  # after the publication: a report that fails does not undo the run
            summary.report = _report(spec.output)
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def _report(output: Path) -> str:
    """Write ``<output>/report`` (:func:`facekit.report.build_report`); returns its
    ``index.html``, or "" after a one-line warning when it cannot be written.

    Raises:
        InterruptedAfterPublication: Ctrl-C or SIGTERM while the report was written (the
            report's staging is removed; the published outputs stand).
    """
    from facekit.report.build import build_report

    try:
        build_report(output)
    except (FacekitError, OSError) as e:
        log.warning("%s: the QA report was not written: %s", output, e)
        return ""
    except KeyboardInterrupt:  # the outputs are published: say so, not "nothing was published"
        raise InterruptedAfterPublication(output, 130) from None
    except SystemExit as e:  # SIGTERM (facekit.cli.main.unwind_on_sigterm)
        raise InterruptedAfterPublication(output, e.code if isinstance(e.code, int) else 1) from None
    return str(output / "report" / "index.html")


class _Run:
    """One run's state: the writer side of the engine (gate, sinks, rejects, results)."""

    def __init__(self, spec: PipelineSpec, progress: bool | None):
        self.spec = spec
        self.progress = progress
        self.summary = Summary(output=str(spec.output))
        self.reasons: Counter = Counter()
        self.examples: list[str] = []

    def run(self) -> Summary:
        spec, summary = self.spec, self.summary
        t0 = time.perf_counter()
        if spec.source_names:
            from facekit.pipeline.sources import MultiSource

            source = MultiSource(spec.source_names, [sc.build() for sc in spec.sources])
        else:
            source = spec.source.build()
        edits = read_edits(spec.decisions) if spec.decisions is not None else None
        sinks = [s.build() for s in spec.sinks]
        executor = spec.executor.build()
        sp = source.params
        gate = IdentityGate(sp.start_id, sp.min_images)
        guard = StageErrorGuard()
        pub = Publication(spec.output)
        self.rejects = None
        self.decisions_file = None
        results = None
        opened = []
        started = False
        shard_results = None
        try:
            self.rejects = _OwnFile(spec.output / "rejects.tsv", pub)
            self.rejects.write("path\tidentity\treason\tdetail\n")
            results = _own_call(spec.output / RESULTS_FILE, ResultsWriter, pub.file(spec.output / RESULTS_FILE), len(sinks))
            self.decisions_file = _OwnFile(spec.output / DECISIONS_FILE, pub)
            writer = DecisionsWriter(self.decisions_file)
            collector = Collector(edits) if spec.merge is not None else None
            for sc, sink in zip(spec.sinks, sinks):
                _sink_call(sc, sink.open, pub)
                opened.append(sink)
            executor.start(spec)
            started = True
            shown = self.progress if self.progress is not None else sys.stderr.isatty()
            # the count sizes the progress bar, the automatic shard size and the last shards
            # of a job on several workers (see cut_shards)
            workers = executor.workers()
            total = source.count() if shown or workers > 1 or (spec.shard_size is None and executor.slots > 1) else None
            work = WorkFolder(spec.output / STATE_DIR, pipeline_fingerprint(spec) if spec.resume else None, spec.resume)
            shard_size = spec.shard_size or work.previous_shard_size() or auto_shard_size(total, executor.slots)
            # a resumed run cuts its last shards as the run that finished the others did
            taper = work.previous_taper() or (None if total is None else (total, workers))
            if work.open(shard_size, taper):
                log.warning("%s: resuming: reusing the shards a previous run of this pipeline finished", spec.output)
            digests: dict[int, str] = {}

            def reuse(shard):
                if not work.enabled:
                    return None
                digests[shard.index] = d = shard.digest()
                return work.reuse(shard, d)

            items = excluding(source, sp.exclude) if getattr(sp, "exclude", None) else source
            items = limit(items, sp)  # sample, max_images (MultiSource applies them per source, inside)
            # the bar counts images as the workers finish them (ImagesDone, from any shard);
            # the results come in shard order
            shards = cut_shards(items, shard_size, *(taper or (None, 1)))
            shard_results = run_shards(executor, shards, reuse, progress=shown)
            bar = tqdm(total=total, desc="facekit", unit="img", disable=not shown)
            n_shards = redone = 0
            for res in shard_results:
                if isinstance(res, ImagesDone):
                    bar.update(res.count)
                    continue
                digest = digests.pop(res.index, None)
                guard.check_shard(res)  # before keeping it: a stopped run must not reuse it
                if not res.reused:
                    if collector is not None:
                        work.save(res, digest, replay=True)
                    else:
                        work.save(res, digest)
                n_shards += 1
                redone += res.attempts > 1
                summary.images_read += sum(oc.read for oc in res.outcomes)
                if collector is not None:  # the decision step comes first: written in the replay
                    collector.add(res)
                else:
                    if spec.decides:
                        apply_face_decisions(res, writer, edits)
                    self._write(gate.admit(res), spec.sinks, sinks, results)
                if not bar.disable:
                    bar.set_postfix(kept=summary.faces_kept, rejected=sum(self.reasons.values()), refresh=False)
                del res  # not held while the next shard runs
            bar.close()
            executor.close()
            started = False
            if collector is not None:
                summary.decisions = self._replay(collector, work, n_shards, edits, writer, gate, sinks, results)
            if edits is not None:
                edits.check_used()
            summary.decisions = {**summary.decisions, "lines": writer.counts()}
            self.decisions_file.close()
            if summary.faces_kept == 0:
                raise _nothing_kept(summary, self.reasons, self.examples)
            summary.identities_written = gate.admitted
            summary.identities_dropped = gate.dropped
            summary.rejects = dict(sorted(self.reasons.items()))
            summary.executor = {"plugin": spec.executor.name, "workers": executor.workers()}
            summary.shards = {"size": shard_size, "count": n_shards, "reused": work.reused, "run_again": redone + work.run_again}
            summary.identities = gate.counts  # a read-only mapping, compact
            for sc, sink in zip(spec.sinks, sinks):
                summary.sinks[sc.where] = _sink_call(sc, sink.close)
            self.rejects.close()
            summary.results = str(spec.output / RESULTS_FILE)
            _own_call(spec.output / RESULTS_FILE, results.close)
            summary.seconds = round(time.perf_counter() - t0, 3)
            with open(pub.file(spec.output / "summary.json"), "w", encoding="utf-8") as f:
                summary.write_json(f)
            pub.commit()
            if not (spec.decides and work.enabled):
                work.remove()  # published: the finished shards are no longer needed
            # else kept: a rerun with other merge settings or a reviewed decisions.tsv reuses them
        except OSError as e:  # the run's own files (summary, work, journal)
            _abort(executor if started else None, opened, self.rejects, results, pub, shard_results, self.decisions_file)
            raise _file_error(e.filename or spec.output, e) from None
        except BaseException:  # the first error is the one raised: _abort never replaces it
            _abort(executor if started else None, opened, self.rejects, results, pub, shard_results, self.decisions_file)
            raise
        return summary

    def _replay(self, collector, work, n_shards: int, edits, writer, gate, sinks, results) -> dict:
        """The decision step (:func:`facekit.pipeline.decide.decide`), then every kept shard
        again, in order, changed by its plan, through the gate to the sinks. Returns the
        step's record for ``summary.json``."""
        spec = self.spec
        recognizer = spec.recognizer.build() if spec.merge.bins else None
        t = time.perf_counter()
        # the merge lines of a reviewed file are checked here, its face lines were marked in pass 1
        plan = decide(collector, spec.merge, edits, writer, recognizer, work.load)
        log.info("decision step: %d identities, %d merged away (%.1f s)", len(collector.names), len(plan.head),
                 time.perf_counter() - t)
        if edits is not None:
            edits.check_used()
        replay = Replay(collector, plan, work.load)
        for i in range(n_shards):
            res = replay.apply(work.load(i), writer, edits)
            self._write(gate.admit(res), spec.sinks, sinks, results)
        return plan.record

    def _write(self, rows: list[Row], configs, sinks, results: ResultsWriter) -> None:
        """Hand a shard's rows on: kept faces to every sink, one identity at a time; each
        reject to ``rejects.tsv``; every row, in source order, to the results table.

        Raises:
            FacekitError: a reject of a required image (``Reject.required``), before any of
                the shard's faces reach the sinks (naming the image's own reject, not the
                ``identity_too_small`` of its partner).
        """
        required = [r.reject for r in rows if r.reject is not None and r.reject.required]
        if required:
            own = [r for r in required if r.reason != IDENTITY_TOO_SMALL]
            self._reject((own or required)[0])
        kept = sink_order(rows)
        places: dict[int, list] = {}
        i, n = 0, len(kept)
        while i < n:
            j = i + 1  # the kept faces of this identity (contiguous: a shard holds whole identities)
            while j < n and kept[j].sample.label == kept[i].sample.label:
                j += 1
            batch = [r.sample for r in kept[i:j]]
            out = [_sink_call(sc, sink.write_many, batch) for sc, sink in zip(configs, sinks)]
            for k, r in enumerate(kept[i:j]):
                places[id(r)] = [None if o is None else o[k] for o in out]
            i = j
        self.summary.faces_kept += n
        try:
            for row in rows:
                if row.reject is not None:
                    self._reject(row.reject)
                results.add(row, places.get(id(row)))
        except OSError as e:  # results.add writes a row group now and then (rejects.tsv names itself)
            raise _file_error(self.spec.output / RESULTS_FILE, e) from None

    def _reject(self, r) -> None:
        if r.required:
            detail = f": {r.detail}" if r.detail else ""
            raise FacekitError(f"{r.path}: {r.reason}{detail}. {r.required}")
        self.reasons[r.reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{r.path}: {r.reason}: {r.detail}")
        self.rejects.write(f"{escape(r.path)}\t{escape(r.identity)}\t{escape(r.reason)}\t{escape(r.detail)}\n")


EXCLUDED = "excluded"
#: an exclude file larger than this is refused (a name a line: millions of identities fit)
MAX_EXCLUDE_BYTES = 256 << 20


def excluding(items, path: Path):
    """The source's items, those of the identities listed in ``path`` (one per line, as the
    source names them: folder names, class ids of a RecordIO set) turned into
    ``excluded`` rejects. Names are compared in Unicode NFC (the ``folders`` source names
    an identity by the NFC form of its folder's name, so a list written on macOS, in NFD,
    still matches).

    Raises:
        FacekitError: the file is unreadable or too large (names it).
    """
    try:
        if path.stat().st_size > MAX_EXCLUDE_BYTES:
            raise FacekitError(f"{path}: {path.stat().st_size} bytes is too large for an exclude list")
        text = path.read_bytes().decode("utf-8", "surrogateescape")
        names = {unicodedata.normalize("NFC", ln.strip()) for ln in text.splitlines()} - {""}
    except OSError as e:
        raise FacekitError(f"{path}: cannot read the exclude list: {e.strerror or e}") from None
    detail = f"identity listed in {path}"
    for it in items:
        if isinstance(it, Sample) and (it.identity in names or unicodedata.normalize("NFC", it.identity) in names):
            yield Reject(it.path, EXCLUDED, detail, it.identity, it.required)
        else:
            yield it


def _abort(executor, sinks, rejects, results, pub: Publication, shard_results, decisions=None) -> None:
    """Undo a failed run: stop the workers, let the sinks release their files, remove the
    staging (or leave it to the next run's recovery once the journal exists). The work
    folder stays: the next run resumes from it.

    Every step runs whatever the others do, and none raises: the error that failed the run
    stays the one reported (a disk that is full fails the sink's write first, then the close
    of every file still buffered). A staging place that cannot be removed is a warning (the
    next run removes it). A second Ctrl-C while the workers stop is raised once the rest is
    cleaned up."""
    interrupted = None

    def attempt(fn, *args, **kwargs):
        nonlocal interrupted
        try:
            fn(*args, **kwargs)
        except KeyboardInterrupt as e:  # a second Ctrl-C while the workers stop: clean up, then raise it
            interrupted = interrupted or e
        except Exception as e:  # the files are being removed: only the run's first error matters
            log.debug("cleaning up a failed run: %s: %s: %s", getattr(fn, "__qualname__", fn), type(e).__name__, e)

    if shard_results is not None:
        attempt(shard_results.close)
    if executor is not None:
        attempt(executor.close, cancel=True)
    for sink in sinks:
        attempt(sink.abort)
    if results is not None:
        attempt(results.abort)
    if rejects is not None:
        attempt(rejects.close)
    if decisions is not None:
        attempt(decisions.close)
    try:
        pub.abort()
    except KeyboardInterrupt as e:
        interrupted = interrupted or e
    except Exception as e:
        log.warning("%s: a staging file of this run was not removed (%s); the next run removes it", pub.output, e)
    if interrupted is not None:
        raise interrupted


def _file_error(path, e: OSError) -> FacekitError:
    """The one line for an OS error on one of the run's own files (``path``: its final name)."""
    return FacekitError(f"{path}: {e.strerror or e}" + (" (disk full?)" if e.errno == errno.ENOSPC else ""))


def _own_call(path: Path, fn, *args, **kwargs):
    """Call ``fn`` on the run's own file ``path`` (final name); an OS error names it."""
    try:
        return fn(*args, **kwargs)
    except OSError as e:
        raise _file_error(path, e) from None


class _OwnFile:
    """A text file of the run itself, staged by ``pub`` and published as ``path``
    (``rejects.tsv``): a write or close that fails (disk full) raises one line naming it."""

    def __init__(self, path: Path, pub: Publication):
        self.path = path
        self.f = _own_call(path, open, pub.file(path), "w", encoding="utf-8", newline="\n", errors="surrogateescape")

    def write(self, text: str) -> None:
        """Write ``text`` (buffered: an error may come from a later write or the close)."""
        try:
            self.f.write(text)
        except OSError as e:
            raise _file_error(self.path, e) from None

    def close(self) -> None:
        """Flush and close (the file is closed even when the flush fails)."""
        _own_call(self.path, self.f.close)


def _sink_call(sc, fn, *args):
    """Call a sink method; an OS error (disk full, permissions) names the sink and its path."""
    try:
        return fn(*args)
    except OSError as e:
        where = getattr(sc.params, "path", None)
        target = e.filename or where
        raise FacekitError(
            f"{sc.where}: writing {target}: {e.strerror or e}" + (" (disk full?)" if e.errno == errno.ENOSPC else "")
        ) from None
