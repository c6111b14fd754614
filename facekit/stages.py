"""The stage API that plugins implement: samples, faces and the five stage kinds.

Data flows one way: a :class:`Source` yields :class:`Sample` objects; per-sample stages
(:class:`Detector`, :class:`Aligner`, :class:`Augmenter`) turn one sample into zero or more
samples and may run in worker processes; :class:`Sink` objects consume the kept samples in
order. Stages hold no reference to one another.

Every stage class declares ``kind``, ``name`` and a pydantic ``Params`` model (unknown keys
are refused); the engine builds it as ``cls(params)`` after validating the config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator, Optional

import numpy as np
from pydantic import Field

from facekit.clean.quality import FaceQuality, QualityThresholds
from facekit.errors import SampleRejected
from facekit.formats.facerec import MAX_CLASS
from facekit.params import FaceChoiceParams, InputPath, OptionalInputPath, OutputPath, Params
from facekit.vision.detection import Detections, DetectorParams, find_faces

# --------------------------------------------------------------------------- data


@dataclass
class Occlusion:
    """An occluded copy of a sample's face made by an augmenter (e.g. ``facemask``), for
    sinks that store it beside the clean face (``masked_rec``).

    data: the occluded face, encoded (JPEG), same size as the clean crop. mask: the
    occlusion mask, encoded single-channel PNG, 255 = clean pixel, 0 = occluded (MSML's
    convention). covered: the number of occluded pixels. kind: what occludes it (e.g.
    ``surgical/blue``).
    """

    data: bytes
    mask: bytes
    covered: int
    kind: str = ""


@dataclass(frozen=True)
class PairRef:
    """The verification pair a sample belongs to (sources ``pairs`` and ``evalbin``): pair
    ``index`` (0-based, in the source's order), ``side`` 0 (a) or 1 (b), ``issame``,
    ``total`` pairs in the source, ``where`` (file:line or file[record]) and whether the
    source may ``drop`` whole pairs."""

    index: int
    side: int
    issame: bool
    total: int
    where: str
    drop: bool


@dataclass
class Sample:
    """One image (or, after detection, one face of an image) on its way to the sinks.

    key: position in source order (int). path: where it came from (file path, or
    ``rec:key``). identity: identity name as the source knows it (folder name).
    data: encoded image bytes (the original file, or the encoded aligned crop), or None.
    image: decoded pixels ``(H, W, 3)`` uint8 **BGR**, or None until a stage needs them.
    face_id: index of the face within its image (0 for the first/only face).
    box: ``(4,)`` float32 x1, y1, x2, y2 and landmarks ``(5, 2)`` float32, both in the
    *source* image's pixel coordinates. aligned_landmarks: ``(5, 2)`` float32, the same
    landmarks in the aligned crop's pixel coordinates, and transform: ``(2, 3)`` float64,
    the affine map from source to crop pixels (``crop_xy = transform @ [x, y, 1]``), both set
    by the worker after alignment when the aligner can say (None otherwise, e.g. samples of
    an already aligned dataset). max_bytes: the most bytes the worker reads from ``path``
    (None: facekit's default, 64 MiB; a source's size limit). label: class id, set by the
    identity gate when the identity is admitted (-1 before; a source may set it to keep a
    dataset's labels). occlusion: an :class:`Occlusion` (occluded copy + mask) that an
    augmenter attached, or None.

    What a source says about an image, for the stages after it:

    - stem: the name the source gives the image (mxrec: its record key), used by sinks
      that write files; None: the file's own name. ``<folder>/<name>`` names the
      identity's folder too (mxrec with a ``.lst``: the names it was packed from).
    - record_key: the RecordIO record the image was read from (mxrec), or None.
    - per_face_identity: each detected face becomes an identity of its own,
      ``<identity>_<face index>`` (group photos of different people).
    - pair: the :class:`PairRef` of a verification-pair image, or None.
    - required: non-empty when the run cannot go on without this image (a verification
      pair): a reject of it stops the run, and this text, saying why and what to change,
      ends the error message.

    Set by the worker when the pipeline has a recognizer: embedding ``(D,)`` float32,
    L2-normalised; embedding_norm: the embedding's L2 norm before normalisation (a quality
    signal of ArcFace-family models, MagFace; None when the recognizer cannot say); with
    ``select: identity``, similarity: cosine similarity to the identity's centre, and flag:
    ``far_from_identity`` for a likely label-noise face ("": none). Set by the worker when the
    pipeline has a ``quality`` stage: quality, the face's
    :class:`~facekit.clean.quality.FaceQuality` (blur, pose, size, brightness, contrast,
    embedding norm, a learned model's score). Set by the worker when the pipeline has a
    ``clean`` stage: similarity (to the identity's robust centre), flag (``label_noise``,
    ``mixed_identity``, ``duplicate`` when only flagged), duplicate_of (the path of the kept
    face it copies) and cluster (0 the identity's main person, 1 the other, in a
    ``mixed_identity``).

    source_identity: the identity the source gave, when a decision moved the face to
    another one (``identity``): a cleaner's ``mixed: split`` (``<identity>#2``) or the
    dataset-level ``merge`` step; None while the face is under its source's identity. The
    identity gate keeps each source identity's faces together and writes the identities
    it became one after the other; ``results.parquet`` names the source identity in
    ``identity`` and the one written in ``merge_with``.
    """

    key: int
    path: str
    identity: str
    data: Optional[bytes] = None
    image: Optional[np.ndarray] = None
    face_id: int = 0
    box: Optional[np.ndarray] = None
    score: Optional[float] = None
    landmarks: Optional[np.ndarray] = None
    aligned_landmarks: Optional[np.ndarray] = None
    transform: Optional[np.ndarray] = None
    max_bytes: Optional[int] = None
    label: int = -1
    occlusion: Optional[Occlusion] = None
    stem: Optional[str] = None
    record_key: Optional[int] = None
    per_face_identity: bool = False
    pair: Optional[PairRef] = None
    required: str = ""
    embedding: Optional[np.ndarray] = None
    embedding_norm: Optional[float] = None
    quality: Optional[FaceQuality] = None
    similarity: Optional[float] = None
    duplicate_of: Optional[str] = None
    cluster: Optional[int] = None
    flag: str = ""
    source_identity: Optional[str] = None

    def replace(self, **changes) -> "Sample":
        """A shallow copy with ``changes`` applied (like ``dataclasses.replace``, which
        costs several microseconds per call on the per-sample hot path)."""
        new = object.__new__(Sample)
        d = self.__dict__.copy()
        for k in changes:
            if k not in d:
                raise TypeError(f"Sample has no field {k!r}")
        d.update(changes)
        new.__dict__ = d
        return new


@dataclass
class Reject:
    """A sample that could not be used: written to the rejects file, counted by reason.
    ``required``: the :attr:`Sample.required` text of the rejected image (non-empty: the
    run stops). ``face``: the detected face the reject is about, when a stage decided
    against a face it found (``identity_mismatch``, ``label_noise``): its box, landmarks
    and score go to the results table (no pixels)."""

    path: str
    reason: str
    detail: str = ""
    identity: str = ""
    required: str = ""
    face: Optional[Sample] = field(default=None, compare=False)


# --------------------------------------------------------------------------- stages


class Stage:
    """Base of all stages. ``kind``: source/detector/aligner/augmenter/sink."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    #: one-line description shown by ``facekit plugins``
    description: ClassVar[str] = ""
    #: whether instances of this stage may run on several threads of one process at once,
    #: each thread with its own instance (the ``threads`` executor, the default for
    #: pipelines that decode). An instance is only ever used by one thread at a time, but
    #: module-level state (a global RNG, a cache filled lazily, a library bound to one
    #: thread) is shared; a stage that cannot allow that sets False: the default executor
    #: is then ``inprocess`` and ``executor: {plugin: threads}`` is refused.
    thread_safe: ClassVar[bool] = True

    def __init__(self, params: Params):
        self.params = params


class SourceParams(Params):
    start_id: int = Field(0, ge=0, lt=MAX_CLASS, description="class id of the first admitted identity (class ids are below 2**31)")
    exclude: Optional[InputPath] = Field(
        None,
        description="a file of identities to leave out, one per line (e.g. from 'facekit overlap --exclude'); "
        "their images are rejects with reason excluded",
    )
    min_images: int = Field(
        2, ge=1, description="identities with fewer kept faces are left out of every sink and reported"
    )
    max_images: Optional[int] = Field(
        None, ge=1, description="at most this many images per identity: a seeded choice by the images' names "
        "(the same on every run); the others are rejects over_max_images"
    )
    sample: Optional[float] = Field(
        None, gt=0, le=1, description="keep this fraction of the identities (seeded, by name: 0.1 tries a pipeline "
        "on a tenth of a dataset; a larger fraction keeps every identity a smaller one kept); the images of the "
        "others are rejects not_sampled"
    )
    seed: int = Field(0, ge=0, description="seed of max_images and sample")


class Source(Stage):
    """Yields samples with identities contiguous (all samples of one identity together).

    ``__iter__`` yields :class:`Sample` (usually with ``data`` or ``path`` to read) or
    :class:`Reject` for files it cannot use (never skipped silently).
    """

    kind = "source"
    Params = SourceParams
    #: whether the source may give an image's five landmarks (``Sample.landmarks``, with
    #: ``Sample.box`` when known, in the image's pixels): the worker aligns such an image
    #: with them and runs no detector on it, and a pipeline may have an aligner and no
    #: detector (an image without landmarks is then a ``no_landmarks`` reject)
    provides_landmarks: ClassVar[bool] = False

    def __iter__(self) -> Iterator[Sample | Reject]:
        raise NotImplementedError

    def count(self) -> Optional[int]:
        """How many items (samples and rejects) ``__iter__`` will yield, when that is cheap
        to know before the run (a directory listing, an index, a pairs file); None when it
        is not (the default). Used for the progress bar's total and ETA and to size the shards
        of a small job run by several workers."""
        return None


class Detector(Stage):
    """Finds faces. Subclasses implement :meth:`detect`; the engine calls :meth:`find_faces`."""

    kind = "detector"
    Params = DetectorParams
    #: whether :meth:`detect` returns landmarks
    provides_landmarks: ClassVar[bool] = True

    def detect(self, image: np.ndarray) -> Detections:
        """Detect faces in ``image`` (``(H, W, 3)`` uint8 BGR). Returns :class:`Detections`."""
        raise NotImplementedError

    def detect_batch(self, images: list[np.ndarray]) -> list[Detections]:
        """Detect faces in several images (each ``(H, W, 3)`` uint8 BGR, sizes may differ);
        one :class:`Detections` per image. The default calls :meth:`detect` for each; a
        detector that runs a batch at once (a GPU) overrides it."""
        return [self.detect(im) for im in images]

    def find_faces(self, image: np.ndarray) -> Detections:
        """Detect with the pad-and-retry rule, the size filter and the selection policy.

        Returns the kept faces (one for ``largest_central``/``reject``).
        Raises:
            SampleRejected: ``no_face``, ``face_too_small`` or ``multiple_faces``.
        """
        return find_faces(self, image)


class Aligner(Stage):
    """Turns one detected face into a fixed-size crop."""

    kind = "aligner"
    needs_landmarks: ClassVar[bool] = True

    def align(self, image: np.ndarray, box: np.ndarray, landmarks: Optional[np.ndarray]) -> np.ndarray:
        """Crop the face. image: ``(H, W, 3)`` uint8 BGR; box ``(4,)``; landmarks ``(5, 2)``
        or None. Returns ``(S, S, 3)`` uint8 BGR."""
        raise NotImplementedError

    def transform(self, image_shape: tuple, box: np.ndarray, landmarks: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """The ``(2, 3)`` float64 affine map from source-image pixels to crop pixels that
        :meth:`align` applies for this face, or None when the aligner cannot say (default)."""
        return None

    def align_face(self, image: np.ndarray, box: np.ndarray, landmarks: Optional[np.ndarray]):
        """``(crop, transform)``: :meth:`align` and :meth:`transform` together (what the
        worker calls; an aligner computing both at once overrides this).

        Raises:
            ValueError: the face cannot be aligned (degenerate landmarks, empty box).
        """
        return self.align(image, box, landmarks), self.transform(image.shape, box, landmarks)


class RecognizerParams(Params):
    """Base of every recognizer's parameters."""

    batch: int = Field(
        64, ge=1, le=4096, description="aligned faces embedded per model call (across the photos of a shard)"
    )


class Recognizer(Stage):
    """Embeds aligned faces (a face-recognition model). The worker collects the aligned
    crops of a shard (after an aligner, or the decoded images of an already aligned source:
    a ``mxrec`` source or folders of crops with no detector) and calls
    :meth:`embed_with_norms` on ``params.batch`` of them at a time; it stores
    ``Sample.embedding`` and ``Sample.embedding_norm``."""

    kind = "recognizer"
    Params = RecognizerParams

    def embed(self, crops: list[np.ndarray]) -> np.ndarray:
        """Embeddings of aligned crops (each ``(S, S, 3)`` uint8 BGR): ``(N, D)`` float32,
        L2-normalised (cosine similarity is a dot product)."""
        raise NotImplementedError

    def embed_with_norms(self, crops: list[np.ndarray]) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """``(embeddings, norms)``: the :meth:`embed` result ``(N, D)`` float32 L2-normalised
        and the ``(N,)`` float32 L2 norms of the model's raw outputs before normalisation
        (None when the model cannot say). The default calls :meth:`embed` and gives no
        norms; a recognizer whose raw output is an ArcFace-style embedding overrides it."""
        return self.embed(crops), None


class QualityParams(QualityThresholds):
    """Base of every quality stage's parameters: the reject thresholds on the quality
    signals (:class:`facekit.clean.quality.QualityThresholds`, each None = not checked)."""


class Quality(Stage):
    """Measures each aligned face's quality (issue 26). The worker computes the model-free
    signals of every face (:func:`facekit.clean.quality.compute_quality`: blur, yaw/pitch/
    roll from the five landmarks, face size, brightness, contrast, the recognizer's
    embedding norm) and asks :meth:`score` for a learned model's scores of the same crops;
    faces are then judged against ``params`` (:func:`facekit.clean.quality.judge`) once a
    photo's face is chosen: a face over a threshold is rejected with the rule's reason
    (``blurry``, ``extreme_pose``, ``too_dark``, ``too_bright``, ``low_contrast``,
    ``low_embedding_norm``, ``face_too_small``, ``low_quality``). A third party plugs in
    a learned quality model (CR-FIQA, eDifFIQA) by overriding :meth:`score`."""

    kind = "quality"
    Params = QualityParams
    #: whether :meth:`score` gives a learned score (``min_quality`` is refused otherwise)
    scores: ClassVar[bool] = False

    def score(self, crops: list[np.ndarray]) -> Optional[np.ndarray]:
        """A learned model's quality of aligned crops (each ``(S, S, 3)`` uint8 BGR):
        ``(N,)`` float32, higher is better (the model's scale), NaN for a face it cannot
        score; None (the default) when the stage has no model."""
        return None


@dataclass
class FaceDecision:
    """A :class:`Cleaner`'s decision on one face. ``reject``: a reason (``duplicate``,
    ``label_noise``, ``mixed_identity``...): the face is rejected, with ``detail``; else the
    face is kept, flagged ``flag`` when not "" . ``similarity``: to the identity's centre;
    ``duplicate_of``: the path of the kept face it copies; ``cluster``: its cluster in a
    two-people identity; ``identity``: None (the face stays under its identity), or the new
    identity a kept face moves to, a split (``mixed: split``: ``<identity>#2``): a name
    ``<identity>#...`` derived from the identity the cleaner was given, not one of the
    source's identities (the worker refuses any other move as a ``stage_error``); the
    worker sets ``Sample.source_identity`` to the identity it came from."""

    reject: str = ""
    flag: str = ""
    detail: str = ""
    similarity: Optional[float] = None
    duplicate_of: Optional[str] = None
    cluster: Optional[int] = None
    identity: Optional[str] = None


class CleanerParams(FaceChoiceParams):
    """Base of every cleaner's parameters: face choice in group photos (``select:
    identity``, :class:`facekit.params.FaceChoiceParams`) is part of every cleaner."""


class Cleaner(Stage):
    """Decides on the faces of each identity once a shard's faces are embedded (a shard
    holds whole identities; issue 26): duplicates, label noise, two people under one name.
    The worker first chooses each photo's face when ``params.select`` is ``identity`` (a
    parameter of every cleaner, :class:`CleanerParams`: the choice needs candidates, the
    faces a detector found; without a detector each image is one face and only its
    similarity to the identity's other photos is judged), then calls :meth:`clean` once per
    identity of the shard, in source order, and applies the decisions before the faces
    are encoded. The shard's crops stay in memory until then (~37 kB a 112x112 face)."""

    kind = "cleaner"
    Params = CleanerParams

    def clean(self, identity: str, faces: list[Sample]) -> list[FaceDecision]:
        """One :class:`FaceDecision` per face of ``identity`` (in source order; each with
        ``embedding``, ``embedding_norm``, ``image`` (the aligned crop, BGR) and ``data``
        (the file's bytes for an already aligned source, else None))."""
        raise NotImplementedError


class Augmenter(Stage):
    """Turns one (aligned) sample into zero or more samples (e.g. masked variants)."""

    kind = "augmenter"
    #: whether :meth:`augment` needs the face's five landmarks in crop coordinates
    #: (``Sample.aligned_landmarks``, set after a landmark detector and an aligner) or an
    #: already aligned crop (no detector): ``validate`` refuses a pipeline that gives neither
    needs_landmarks: ClassVar[bool] = False

    def augment(self, sample: Sample) -> Iterable[Sample]:
        """Return the samples to pass on; ``sample.image`` is set (BGR uint8). A returned
        sample whose ``image`` changed must have ``data=None`` so it is re-encoded."""
        raise NotImplementedError


class Sink(Stage):
    """Consumes kept samples in order: ``open(publication)``, ``write_many()``/``write()``,
    ``close()``.

    Samples arrive with ``label`` set, identities contiguous and labels non-decreasing;
    ``sample.data`` holds the encoded bytes to store. A sink writes only into the staging
    places it asks ``publication`` for (:meth:`facekit.pipeline.publish.Publication.dir` /
    ``.file``); the engine publishes every output of the run together when all sinks closed
    successfully. ``close()`` finishes the staged files and returns a dict of stats;
    ``abort()`` releases what the sink holds (open files); the engine removes the staging.
    """

    kind = "sink"
    #: whether every stored image must have one size (e.g. RecordIO with a ``property``
    #: file): such a sink refuses a pipeline that passes whole photos (detector, no aligner)
    uniform_size: ClassVar[bool] = False
    #: whether the sink stores ``Sample.embedding`` (e.g. ``embeddings``): such a sink
    #: refuses a pipeline without a recognizer
    needs_embeddings: ClassVar[bool] = False

    def open(self, publication) -> None:
        """Start writing: ask ``publication`` (a :class:`facekit.pipeline.publish.Publication`) for
        the staging folder or file of each output path."""

    def write(self, sample: Sample) -> Optional[str]:
        """Store one sample; return where it went (see :meth:`write_many`) or None."""
        raise NotImplementedError

    def write_many(self, samples: list[Sample]) -> Optional[list]:
        """Consume several samples, in order (the engine hands over one identity at a
        time). Returns, per sample, where it went in this sink's output (a RecordIO record
        id, a file path relative to the sink's ``path``), for the run's results table, or
        None when the sink cannot say. The default calls :meth:`write` for each; a sink
        that gains from batching (framing, one system call per batch) overrides it."""
        return [self.write(s) for s in samples]

    def close(self) -> dict[str, Any]:
        return {}

    def abort(self) -> None:
        pass


KINDS = ("source", "detector", "aligner", "recognizer", "quality", "cleaner", "augmenter", "sink")

__all__ = [
    "Aligner",
    "Augmenter",
    "Cleaner",
    "CleanerParams",
    "Detections",
    "Detector",
    "DetectorParams",
    "FaceDecision",
    "InputPath",
    "KINDS",
    "Occlusion",
    "OptionalInputPath",
    "OutputPath",
    "PairRef",
    "Params",
    "Quality",
    "QualityParams",
    "Recognizer",
    "RecognizerParams",
    "Reject",
    "Sample",
    "SampleRejected",
    "Sink",
    "Source",
    "SourceParams",
    "Stage",
]
