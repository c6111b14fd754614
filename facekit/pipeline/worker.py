"""Shard work: decode -> detect (per batch) -> align -> augment -> encode.

A :class:`ShardWorker` holds the per-sample stages of one pipeline and turns a
:class:`~facekit.pipeline.shards.Shard` into a :class:`~facekit.pipeline.shards.ShardResult`:
one :class:`~facekit.pipeline.shards.Outcome` (kept samples + rejects) per source item. It
keeps no state between shards, so the same work runs in this process, in worker processes
or on a cluster node. Images are detected :data:`BATCH` at a time through
``Detector.detect_batch``; with a thread budget of more than one thread (or the libraries'
default), the next batch is read and decoded in a second thread while the detector runs
(libjpeg-turbo and file reads release the GIL), so the decode does not leave cores idle.
:meth:`ShardWorker.stop` (from another thread) ends the shard being processed at its next
batch. After each batch a :class:`~facekit.pipeline.progress.ShardProgress` goes to the
worker's progress channel (:meth:`ShardWorker.steps` yields them), so the run counts the
images as they are done, not when the shards before them finish.
"""

from __future__ import annotations

import logging
from collections import deque
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional, Union

import numpy as np

from facekit.errors import FacekitError, SampleRejected, one_line
from facekit.params import FaceChoiceParams
from facekit.pipeline.config import PipelineSpec
from facekit.pipeline.progress import ProgressSender, ShardProgress
from facekit.pipeline.shards import STAGE_ERROR, Outcome, Shard, ShardResult
from facekit.stages import Reject, Sample
from facekit.pipeline.gate import StageErrorGuard
from facekit.pipeline.identity import choose_faces
from facekit.clean.quality import compute_quality, judge
from facekit.vision.align import ARCFACE_TEMPLATE, template_for
from facekit.vision.detection import find_faces_batch
from facekit.vision.images import MAX_FILE_BYTES, check_image_header, decode_image, encode_jpeg, read_file

log = logging.getLogger("facekit")

ALIGN_FAILED = "align_failed"
NO_LANDMARKS = "no_landmarks"
BAD_EMBEDDING = "bad_embedding"
NO_OUTPUT = "no_output"

#: images decoded and handed to the detector at once
BATCH = 8


class ShardStopped(FacekitError):
    """Raised by :meth:`ShardWorker.process` after :meth:`ShardWorker.stop`: the shard was
    left unfinished on purpose (the run is stopping)."""


def _reject(item: Sample, reason: str, detail: str) -> Reject:
    return Reject(item.path, reason, detail, item.identity, item.required)


def _template(width: int) -> np.ndarray:
    """The five landmarks of an already aligned crop ``width`` pixels wide: the ArcFace
    template of its size (:func:`template_for`), or the 112 template scaled for a size that
    is a multiple of neither 112 nor 128."""
    try:
        return template_for(width)
    except ValueError:
        return ARCFACE_TEMPLATE * (width / 112.0)


def _stage_error(e: Exception) -> str:
    return f"{type(e).__name__}: {one_line(e)}"


def check_move(identity: str, to: str, shard_identities) -> None:
    """Raise ValueError unless a cleaner may move faces of ``identity`` to ``to``: a new
    name derived from it (``<identity>#...``, as ``mixed: split`` makes), not one of the
    source's identities in the shard (``shard_identities``); a name the source gives in
    another shard is refused by the identity gate (it writes each identity once)."""
    if not isinstance(to, str) or not to.startswith(identity + "#") or len(to) == len(identity) + 1:
        raise ValueError(
            f"cleaner moved faces of identity {identity!r} to {to!r}: a cleaner may only split an identity into "
            f"new names {identity + '#2'!r}, ... (merging identities is the merge step's)"
        )
    if to in shard_identities:
        raise ValueError(
            f"cleaner moved faces of identity {identity!r} to {to!r}, an identity of the source: a split needs "
            "a new name"
        )


def free_split_name(identity: str, taken, renamed: dict) -> str:
    """``<identity>#k`` with the smallest k >= 2 that is not an identity of the shard
    (``taken``) nor already given (``renamed``): a folder named ``Lido#2`` beside ``Lido``
    does not take the split of ``Lido`` (which becomes ``Lido#3``)."""
    k = 2
    while f"{identity}#{k}" in taken or f"{identity}#{k}" in renamed.values():
        k += 1
    return f"{identity}#{k}"


class WarnOnce:
    """A thread-safe flag for "the first stage error has been reported": one per run in a
    process, shared by the shard workers of the ``threads`` executor so that a stage failing
    on every image prints one warning line, not one per worker thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False

    def first(self) -> bool:
        """True exactly once: for the first caller, from any thread."""
        with self._lock:
            first, self._done = not self._done, True
        return first


class ShardWorker:
    """Builds the per-sample stages of ``spec`` and processes shards.

    ``threads``: the thread budget of this worker for stages that take one (onnxruntime
    intra-op threads of a detector whose ``threads`` param is 0 = automatic, OpenCV); None
    leaves the libraries' defaults (all cores). ``warn_once``: the :class:`WarnOnce` of the
    run's first stage-error warning, shared by workers on threads of one process (default:
    this worker's own). ``progress``: where :meth:`__call__` sends a
    :class:`~facekit.pipeline.progress.ShardProgress` after each batch (the executor's
    bounded channel; None: nowhere).

    Raises:
        FacekitError / ConfigError: a stage cannot start (one line naming it).
    """

    def __init__(
        self,
        spec: PipelineSpec,
        threads: int | None = None,
        warn_once: Optional[WarnOnce] = None,
        progress: Optional[ProgressSender] = None,
    ):
        det = spec.detector
        if det is not None and threads and getattr(det.params, "threads", None) == 0:
            det = det.with_params(threads=threads)
        self.detector = det.build() if det else None
        self.aligner = spec.aligner.build() if spec.aligner else None
        rec = spec.recognizer
        if rec is not None and threads and getattr(rec.params, "threads", None) == 0:
            rec = rec.with_params(threads=threads)
        self.recognizer = rec.build() if rec else None
        qual = spec.face_quality
        if qual is not None and threads and getattr(qual.params, "threads", None) == 0:
            qual = qual.with_params(threads=threads)
        #: the ``quality`` stage: measures every face, judged once a photo's face is chosen
        self.quality_stage = qual.build() if qual else None
        #: the ``clean`` stage: decides per identity once the shard's faces are embedded
        self.cleaner = spec.cleaner.build() if spec.cleaner else None
        #: faces embedded per recognizer call (its ``batch`` parameter)
        self.embed_batch = int(getattr(self.recognizer.params, "batch", 64)) if self.recognizer else 0
        #: select: identity, a parameter of the clean stage (every cleaner's
        #: FaceChoiceParams; detector: {select: identity} is mapped there by the config):
        #: faces are chosen per identity once the shard's faces are known
        cp = self.cleaner.params if self.cleaner is not None else None
        self.by_identity = isinstance(cp, FaceChoiceParams) and cp.chooses_faces
        #: faces wait for the whole shard before they are encoded (the clean stage: a shard
        #: holds whole identities)
        self.per_shard = self.cleaner is not None
        self.augmenters = [a.build() for a in spec.augmenters]
        #: a source may give images' five landmarks (``Source.provides_landmarks``): those
        #: images are aligned with them and not detected
        self.listed = any(getattr(s.cls, "provides_landmarks", False) for s in spec.sources)
        self.quality = spec.quality
        #: the first stage error is logged once (per run: the threads executor shares one)
        self._warn_once = warn_once or WarnOnce()  # the reader thread reports errors too
        #: False for a pass-through pipeline (no detector, aligner, recognizer or augmenter):
        #: samples keep their file bytes and are never decoded. With a recognizer and no
        #: detector (an already aligned source) the images are decoded to be embedded and
        #: keep their file bytes for the sinks
        self.needs_pixels = bool(self.detector or self.aligner or self.recognizer or self.quality_stage or self.cleaner or self.augmenters)
        #: decode the next batch while this one is detected: only with threads to spare (a
        #: worker of one thread, N of them on N cores, gains nothing from it)
        self.read_ahead = threads is None or threads > 1
        #: batches read ahead: one; with a recognizer and no detector (already aligned crops,
        #: small) enough to fill its next model call, so decoding overlaps the embedding
        #: instead of waiting for it (a batch of 64 crops: 8 reads of BATCH)
        self.read_depth = 1
        if self.recognizer is not None and self.detector is None:
            self.read_depth = max(1, self.embed_batch // BATCH)
        self._reader: Optional[ThreadPoolExecutor] = None
        self._stop = threading.Event()
        self.progress = progress

    def __call__(self, shard: Shard) -> ShardResult:
        """Process ``shard``, sending its progress to the worker's channel. Raises
        FacekitError when the run's first images (shard 0) all fail in a stage with the same
        error (:class:`~facekit.pipeline.gate.StageErrorGuard`): the run stops after a few
        images, not after a whole shard; ShardStopped after :meth:`stop`."""
        for step in self.steps(shard):
            if isinstance(step, ShardResult):
                return step
            if self.progress is not None:
                self.progress.send(step)
        raise AssertionError("steps() ends with the shard's result")

    def steps(self, shard: Shard) -> Iterator[Union[ShardProgress, ShardResult]]:
        """Process ``shard`` a batch at a time: a :class:`ShardProgress` after each batch
        (items done so far), then the :class:`ShardResult` last (what :meth:`__call__`
        returns; raises as it does). Closing the generator early leaves the shard unfinished."""
        t0 = time.perf_counter()
        outs: list[Outcome] = []
        for done in self._batches(shard.items, StageErrorGuard() if shard.index == 0 else None, outs):
            yield ShardProgress(shard.index, done)
        yield ShardResult(shard.index, outs, seconds=time.perf_counter() - t0)

    def process(self, items: list, guard: Optional[StageErrorGuard] = None) -> list[Outcome]:
        """One :class:`Outcome` per item of ``items`` (:class:`Sample` / :class:`Reject`).

        Each batch is decoded, detected, aligned and embedded; its faces are then augmented
        and encoded, except with a clean stage, where they wait for its face choice
        (``select: identity``) and decisions on the whole shard (a shard holds whole
        identities).

        Raises:
            ShardStopped: :meth:`stop` was called (checked before each batch, and every
                :data:`BATCH` images while the faces chosen per identity are encoded).
        """
        outs: list[Outcome] = []
        for _ in self._batches(items, guard, outs):
            pass
        return outs

    def _batches(self, items: list, guard: Optional[StageErrorGuard], outs: list[Outcome]) -> Iterator[int]:
        """The work of :meth:`process`, filling ``outs``; yields the items done after each
        batch is detected (with a clean stage their faces are encoded at the end).

        With a recognizer, faces wait until ``recognizer.params.batch`` of them (or the
        shard's end) are collected, so the model embeds that many in one call, across the
        photos of the shard; an image is encoded once all its faces are embedded. The run's first
        images (shard 0, until its :class:`StageErrorGuard` has decided) go one batch at a
        time, so a stage failing on every image still stops the run after a few."""
        ahead: deque = deque()  # the next batches, being read in the reader thread, in order
        waiting: list[Outcome] = []  # detected, not all of their faces embedded yet
        pending: list[tuple[Outcome, Sample]] = []  # faces of ``waiting`` not embedded yet, in order
        try:
            for i in range(0, len(items), BATCH):
                if self._stop.is_set():
                    raise ShardStopped(f"stopped after {i} of the shard's {len(items)} items")
                read = ahead.popleft().result() if ahead else self._read(items[i : i + BATCH])
                last = i + BATCH >= len(items)
                if self.read_ahead:
                    nxt = i + BATCH * (len(ahead) + 1)
                    while len(ahead) < self.read_depth and nxt < len(items):
                        ahead.append(self._reader_thread().submit(self._read, items[nxt : nxt + BATCH]))
                        nxt += BATCH
                batch = self._detect(*read)
                waiting += batch
                ready = len(waiting)
                if self.recognizer is not None:
                    pending += [(oc, s) for oc in batch for s in oc.samples]
                    undecided = guard is not None and guard.seen < guard.n  # the run's first images: fail fast
                    n = len(pending) if last or undecided else len(pending) // self.embed_batch * self.embed_batch
                    self._embed(pending[:n])
                    pending = pending[n:]
                    if pending:  # the outcomes before the first with a face still to embed are done
                        first = pending[0][0]
                        ready = next(k for k, oc in enumerate(waiting) if oc is first)
                done, waiting = waiting[:ready], waiting[ready:]
                if self.quality_stage is not None:
                    self._measure(done)
                if not self.per_shard:
                    for oc in done:
                        self._finish(oc)
                if guard is not None:
                    for oc in done:
                        guard.check(oc.read, len(oc.samples), oc.rejects)
                outs += done
                if done:
                    yield len(outs)
        finally:  # stopped by the guard (or an error): the batches read ahead are not wanted
            for f in ahead:
                f.cancel()
        if self.cleaner is not None:
            if self.by_identity:
                choose_faces(outs, self.cleaner.params)
            self._clean(outs)
        if self.per_shard:
            for k, oc in enumerate(outs):
                if k % BATCH == 0 and self._stop.is_set():
                    raise ShardStopped(f"stopped after encoding {k} of the shard's {len(outs)} images")
                self._finish(oc)

    def _finish(self, oc: Outcome) -> None:
        """Augment and encode an outcome's faces (a failure rejects the image; so do
        augmenters that return nothing, so that the image still leaves a trace)."""
        if not oc.samples or oc.samples[0].image is None:
            return
        if self.quality_stage is not None:
            self._judge(oc)
            if not oc.samples:
                return
        try:
            first = oc.samples[0]
            oc.samples = self._encode(oc.samples)
            if not oc.samples:
                oc.rejects.append(
                    Reject(first.path, NO_OUTPUT, "the augmenters returned no sample", oc.identity, first.required)
                )
        except SampleRejected as r:
            first = oc.samples[0]
            oc.samples = []
            oc.rejects.append(Reject(first.path, r.reason, r.detail, oc.identity, first.required))
        except Exception as e:
            first = oc.samples[0]
            oc.samples = []
            oc.rejects.append(self._error(first.replace(identity=oc.identity), e))

    def stop(self) -> None:
        """Ask the shard being processed (in another thread) to end at its next batch of
        :data:`BATCH` images, raising :class:`ShardStopped`; so do later shards. Thread-safe."""
        self._stop.set()

    def close(self) -> None:
        """Stop the read-ahead thread (it also ends with the worker's process)."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.shutdown(wait=False, cancel_futures=True)

    def _reader_thread(self) -> ThreadPoolExecutor:
        if self._reader is None:
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="facekit-read-ahead")
        return self._reader

    def _read(self, items: list) -> tuple[list[Outcome], list]:
        """Read and decode a batch: its outcomes so far (source rejects, unreadable files,
        pass-through samples) and ``(index, sample, BGR image)`` of the decoded ones."""
        outs = [Outcome(it.identity) for it in items]
        todo = []  # (index, sample, image)
        for i, it in enumerate(items):
            if isinstance(it, Reject):
                outs[i].rejects.append(it)
                continue
            outs[i].read = 1
            try:
                if not self.needs_pixels:
                    outs[i].samples.append(self._pass_through(it))
                    continue
                todo.append((i, *self._decode(it)))
            except SampleRejected as r:
                outs[i].rejects.append(_reject(it, r.reason, r.detail))
            except Exception as e:  # a bug or model failure on one sample never stops the run
                outs[i].rejects.append(self._error(it, e))
        return outs, todo

    def _detect(self, outs: list[Outcome], todo: list) -> list[Outcome]:
        """Detect and align the decoded images of a batch read by :meth:`_read` (an already
        aligned source's images pass as they are, keeping their file bytes)."""
        if not todo:
            return outs
        run = [t for t in todo if t[1].landmarks is None] if self.listed else todo  # landmarks given: no detection
        if self.detector is not None and run:
            try:
                found = find_faces_batch(self.detector, [im for _, _, im in run])
            except Exception:  # the batch failed: each image on its own says which
                found = []
                for _, _, im in run:
                    try:
                        found.append(find_faces_batch(self.detector, [im])[0])
                    except Exception as e:
                        found.append(e)
        else:
            found = [None] * len(run)
        if run is not todo:
            detected = iter(found)
            found = [None if t[1].landmarks is not None else next(detected) for t in todo]
        for (i, it, image), faces in zip(todo, found):
            try:
                if isinstance(faces, Exception):
                    raise faces
                outs[i].samples = self._faces(it, image, faces)
            except SampleRejected as r:
                outs[i].rejects.append(_reject(it, r.reason, r.detail))
            except Exception as e:
                outs[i].rejects.append(self._error(it, e))
        return outs

    def _embed(self, faces: list[tuple[Outcome, Sample]]) -> None:
        """Embed ``faces`` (each with the outcome holding it), ``recognizer.params.batch``
        per model call. A call that fails rejects the images whose faces it held
        (``stage_error``); a face whose embedding is not finite or is zero is rejected as
        ``bad_embedding``."""
        step = self.embed_batch
        for k in range(0, len(faces), step):
            chunk = faces[k : k + step]
            try:
                emb, norms = self.recognizer.embed_with_norms([s.image for _, s in chunk])
                emb = np.asarray(emb, np.float32)
                if emb.ndim != 2 or emb.shape[0] != len(chunk):
                    raise ValueError(
                        f"recognizer returned embeddings of shape {tuple(emb.shape)} for {len(chunk)} faces "
                        "(expected one vector per face)"
                    )
                norms = None if norms is None else np.asarray(norms, np.float32).reshape(-1)
                if norms is not None and norms.shape[0] != len(chunk):
                    raise ValueError(f"recognizer returned {norms.shape[0]} norms for {len(chunk)} faces")
            except Exception as e:
                self._fail(chunk, e)
                continue
            good = np.isfinite(emb).all(1) & (np.abs(emb).sum(1) > 0)
            if norms is not None:
                good &= np.isfinite(norms) & (norms > 0)
            for j, (oc, s) in enumerate(chunk):
                if good[j]:
                    s.embedding = emb[j]
                    s.embedding_norm = None if norms is None else float(norms[j])
                elif s in oc.samples:
                    oc.samples.remove(s)
                    what = "NaN or infinite values" if not np.isfinite(emb[j]).all() else "a zero vector"
                    oc.rejects.append(
                        Reject(s.path, BAD_EMBEDDING, f"the recognizer's embedding of face {s.face_id} has {what}",
                               oc.identity, s.required, s.replace(image=None, data=None))
                    )

    def _measure(self, outs: list[Outcome]) -> None:
        """Set ``Sample.quality`` of every face of ``outs`` (:func:`compute_quality` on the
        aligned crops; the landmarks in source pixels, or the ArcFace template of the crop's
        size for an already aligned source; the quality stage's learned scores when it has
        a model). A failure rejects the images whose faces it measured (``stage_error``)."""
        faces = [(oc, s) for oc in outs for s in oc.samples]
        if not faces:
            return
        try:
            crops = [s.image for _, s in faces]
            lmk = np.stack([s.landmarks if s.landmarks is not None else _template(s.image.shape[1]) for _, s in faces])
            boxes = np.stack([s.box for _, s in faces]) if all(s.box is not None for _, s in faces) else None
            norms = np.array([np.nan if s.embedding_norm is None else s.embedding_norm for _, s in faces])
            scores = self.quality_stage.score(crops)
            if scores is not None:
                scores = np.asarray(scores, np.float32).reshape(-1)
                if scores.shape[0] != len(faces):
                    raise ValueError(f"quality stage returned {scores.shape[0]} scores for {len(faces)} faces")
            measured = compute_quality(crops, lmk, boxes, norms, scores)
        except Exception as e:
            self._fail(faces, e)
            return
        for (_, s), q in zip(faces, measured):
            s.quality = q

    def _clean(self, outs: list[Outcome]) -> None:
        """Apply the cleaner to each identity of the shard (its kept faces, in source
        order): rejects with their reasons, flags, similarity, ``duplicate_of``, cluster, and
        moves (``FaceDecision.identity``: a split): a kept face moved gets
        ``Sample.source_identity`` = the identity it had and ``Sample.identity`` = the new
        one (the gate then writes each identity's faces together). A cleaner that fails on
        an identity rejects its images (``stage_error``); so does one that moves a face to
        a name not derived from the identity (``<identity>#...``, :func:`check_move`)."""
        blocks: dict[str, list[Outcome]] = {}
        for oc in outs:
            blocks.setdefault(oc.identity, []).append(oc)
        for ident, ocs in blocks.items():
            faces = [(oc, s) for oc in ocs for s in oc.samples]
            if not faces:
                continue
            try:
                decisions = self.cleaner.clean(ident, [s for _, s in faces])
                if len(decisions) != len(faces):
                    raise ValueError(f"cleaner returned {len(decisions)} decisions for {len(faces)} faces")
                renamed: dict[str, str] = {}
                for (_, s), d in zip(faces, decisions):
                    if d.identity is not None and d.identity != s.identity and not d.reject:
                        check_move(ident, d.identity, ())
                        if d.identity in blocks or d.identity in renamed:  # a source identity has that name
                            was = d.identity
                            d.identity = renamed.setdefault(was, free_split_name(ident, blocks, renamed))
                            d.detail = d.detail.replace(repr(was), repr(d.identity))
            except Exception as e:
                self._fail(faces, e)
                continue
            for (oc, s), d in zip(faces, decisions):
                if d.similarity is not None:
                    s.similarity = d.similarity
                s.duplicate_of, s.cluster = d.duplicate_of, d.cluster
                if d.reject:
                    # the crop is kept (encoded as the sinks would get it, without augmenters'
                    # variants): a reviewer may keep the face after all (decisions.tsv)
                    data = s.data if s.data is not None or s.image is None else encode_jpeg(s.image, self.quality)
                    oc.samples.remove(s)
                    oc.rejects.append(Reject(s.path, d.reject, d.detail, oc.identity, s.required,
                                             s.replace(image=None, data=data)))
                    continue
                if d.flag:
                    s.flag = d.flag
                if d.identity is not None and d.identity != s.identity:
                    s.source_identity, s.identity = s.identity, d.identity

    def _fail(self, faces: list[tuple[Outcome, Sample]], e: Exception) -> None:
        """A stage failed on a batch of ``faces``: each image that held one becomes a
        ``stage_error`` reject (its faces dropped)."""
        for oc in {id(oc): oc for oc, _ in faces}.values():
            if oc.samples:
                oc.rejects.append(self._error(oc.samples[0], e))
                oc.samples = []

    def _judge(self, oc: Outcome) -> None:
        """Reject the faces of ``oc`` over the quality stage's thresholds (each with the
        first rule it breaks as its reason, every broken rule in the detail)."""
        kept = []
        for s in oc.samples:
            found = judge(s.quality, self.quality_stage.params) if s.quality is not None else []
            if not found:
                kept.append(s)
                continue
            oc.rejects.append(
                Reject(s.path, found[0][0], "; ".join(d for _, d in found), oc.identity, s.required,
                       s.replace(image=None, data=None))
            )
        oc.samples = kept

    def _error(self, item: Sample, e: Exception) -> Reject:
        detail = _stage_error(e)
        if self._warn_once.first():
            # one line for the user; the traceback only when debugging (FACEKIT_DEBUG)
            log.warning("stage error on %s: %s", item.path, detail)
            log.debug("stage error on %s", item.path, exc_info=e)
        return _reject(item, STAGE_ERROR, detail)

    @staticmethod
    def _pass_through(item: Sample) -> Sample:
        """The file's bytes, untouched: read (bounded) and checked to be a whole image."""
        if item.data is None:
            data = read_file(item.path, item.max_bytes or MAX_FILE_BYTES)
            check_image_header(data)  # no decode: a few microseconds
            return item.replace(data=data)
        return item

    @staticmethod
    def _decode(item: Sample) -> tuple[Sample, np.ndarray]:
        """``(item with its file's bytes, decoded BGR pixels)``."""
        if item.image is not None:
            return item, item.image
        if item.data is None:
            item = item.replace(data=read_file(item.path, item.max_bytes or MAX_FILE_BYTES))
        return item, decode_image(item.data)

    def _faces(self, sample: Sample, image: np.ndarray, faces) -> list[Sample]:
        if faces is None and self.aligner is not None:  # not detected: the source's landmarks
            if sample.landmarks is None:
                raise SampleRejected(NO_LANDMARKS, "the source gives no five landmarks for this image and the "
                                     "pipeline has no detector")
            return [self._align(sample, image, sample.box, sample.landmarks)]
        if faces is not None:
            samples = []
            for i in range(len(faces)):
                lmk = None if faces.landmarks is None else faces.landmarks[i]
                s = sample.replace(
                    face_id=i,
                    box=faces.boxes[i],
                    score=float(faces.scores[i]),
                    landmarks=lmk,
                    identity=f"{sample.identity}_{i}" if sample.per_face_identity else sample.identity,
                )
                if self.aligner is not None:
                    s = self._align(s, image, faces.boxes[i], lmk)
                else:
                    s = s.replace(image=image)
                samples.append(s)
        else:
            samples = [sample.replace(image=image)]
        return samples

    def _align(self, s: Sample, image: np.ndarray, box, lmk) -> Sample:
        """``s`` with its face aligned: the crop, the transform, the landmarks in the crop."""
        try:
            crop, M = self.aligner.align_face(image, box, lmk)
        except ValueError as e:
            raise SampleRejected(ALIGN_FAILED, str(e)) from None
        s = s.replace(image=crop, data=None, transform=M)
        if M is not None and lmk is not None:
            s.aligned_landmarks = (lmk @ M[:, :2].T + M[:, 2]).astype(np.float32)
        return s

    def _encode(self, samples: list[Sample]) -> list[Sample]:
        """Augment then encode (JPEG at ``encode.quality``) the faces of one image; only the
        bytes travel on to the sinks."""
        for aug in self.augmenters:
            samples = [y for x in samples for y in aug.augment(x)]
        for i, s in enumerate(samples):
            if s.data is None:
                s = s.replace(data=encode_jpeg(s.image, self.quality))
            samples[i] = s.replace(image=None)
        return samples
