"""Per-sample work: decode -> detect -> align -> augment -> encode.

A :class:`Worker` holds the per-sample stages of one pipeline and turns one source sample
into an :class:`Outcome` (kept samples + rejects). It has no state between samples, so the
same work runs in this process, in a process pool or on a cluster node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from facekit.config import PipelineSpec
from facekit.errors import SampleRejected, one_line
from facekit.images import MAX_FILE_BYTES, check_image_header, decode_image, encode_jpeg, read_file
from facekit.stages import Reject, Sample

log = logging.getLogger("facekit")

ALIGN_FAILED = "align_failed"
STAGE_ERROR = "stage_error"


@dataclass(slots=True)
class Outcome:
    """Result of one source item: its identity, kept samples (encoded) and rejects."""

    identity: str
    samples: list = field(default_factory=list)
    rejects: list = field(default_factory=list)
    read: int = 0  # source images read (0 for a source-level reject)


class Worker:
    """Builds the per-sample stages of ``spec`` and processes samples."""

    def __init__(self, spec: PipelineSpec):
        self.detector = spec.detector.build() if spec.detector else None
        self.aligner = spec.aligner.build() if spec.aligner else None
        self.augmenters = [a.build() for a in spec.augmenters]
        self.quality = spec.quality
        self._warned = False
        #: False for a pass-through pipeline (no detector, aligner or augmenter): samples
        #: keep their file bytes and are never decoded
        self.needs_pixels = bool(self.detector or self.aligner or self.augmenters)

    def __call__(self, item: Sample | Reject) -> Outcome:
        if isinstance(item, Reject):
            return Outcome(item.identity, rejects=[item])
        if not self.needs_pixels:  # pass-through: the file's bytes, untouched
            if item.data is None:  # a file: read it (bounded) and check it is a whole image
                try:
                    data = read_file(item.path, item.max_bytes or MAX_FILE_BYTES)
                    check_image_header(data)  # no decode: a few microseconds
                except SampleRejected as r:
                    return Outcome(item.identity, [], [Reject(item.path, r.reason, r.detail, item.identity)], 1)
                item.data = data  # the worker owns the source's sample
            return Outcome(item.identity, [item], [], 1)
        out = Outcome(item.identity, read=1)
        try:
            out.samples = self._process(item)
        except SampleRejected as r:
            out.rejects.append(Reject(item.path, r.reason, r.detail, item.identity))
        except Exception as e:  # a bug or model failure on one sample never stops the run
            detail = f"{type(e).__name__}: {one_line(e)}"
            if not self._warned:
                # one line for the user; the traceback only when debugging (-v / FACEKIT_DEBUG)
                log.warning("stage error on %s: %s", item.path, detail)
                log.debug("stage error on %s", item.path, exc_info=True)
                self._warned = True
            out.rejects.append(Reject(item.path, STAGE_ERROR, detail, item.identity))
        return out

    def _process(self, sample: Sample) -> list[Sample]:
        data = sample.data
        image = sample.image
        if image is None:
            if data is None:
                data = read_file(sample.path, sample.max_bytes or MAX_FILE_BYTES)
            image = decode_image(data)
        if self.detector is not None:
            faces = self.detector.find_faces(image)
            samples = []
            per_face = bool(sample.meta.get("identity_per_face"))
            for i in range(len(faces)):
                lmk = None if faces.landmarks is None else faces.landmarks[i]
                s = sample.replace(
                    face_id=i,
                    box=faces.boxes[i],
                    score=float(faces.scores[i]),
                    landmarks=lmk,
                    identity=f"{sample.identity}_{i}" if per_face else sample.identity,
                    meta=dict(sample.meta),
                )
                if self.aligner is not None:
                    try:
                        crop, M = self.aligner.align_face(image, faces.boxes[i], lmk)
                    except ValueError as e:
                        raise SampleRejected(ALIGN_FAILED, str(e)) from None
                    s = s.replace(image=crop, data=None, transform=M)
                    if M is not None and lmk is not None:
                        s.aligned_landmarks = (lmk @ M[:, :2].T + M[:, 2]).astype(np.float32)
                else:
                    s = s.replace(image=image, data=data)
                samples.append(s)
        else:
            samples = [sample.replace(image=image, data=data)]
        for aug in self.augmenters:
            samples = [y for x in samples for y in aug.augment(x)]
        for i, s in enumerate(samples):
            if s.data is None:
                s = s.replace(data=encode_jpeg(s.image, self.quality))
            samples[i] = s.replace(image=None)  # only bytes travel on to the sinks
        return samples


