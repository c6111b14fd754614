"""The stage API that plugins implement: samples, faces and the five stage kinds.

Data flows one way: a :class:`Source` yields :class:`Sample` objects; per-sample stages
(:class:`Detector`, :class:`Aligner`, :class:`Augmenter`) turn one sample into zero or more
samples and may run in worker processes; :class:`Sink` objects consume the kept samples in
order. Stages hold no reference to one another.

Every stage class declares ``kind``, ``name`` and a pydantic ``Params`` model (unknown keys
are refused); the engine builds it as ``cls(params)`` after validating the config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterable, Iterator, Literal, Optional

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from facekit.errors import SampleRejected

# --------------------------------------------------------------------------- paths


def _resolve(base_key: str, must_exist: bool):
    def check(p: Path, info: ValidationInfo) -> Path:
        p = Path(os.path.expanduser(str(p)))
        base = (info.context or {}).get(base_key)
        if not p.is_absolute() and base is not None:
            p = Path(base) / p
        if must_exist and not p.exists():
            raise ValueError(f"path does not exist: {p}")
        return p

    return check


#: An input path: relative paths resolve against the config file's folder; must exist.
InputPath = Annotated[Path, AfterValidator(_resolve("config_dir", True))]
#: An input path that may be absent (the stage checks and explains).
OptionalInputPath = Annotated[Path, AfterValidator(_resolve("config_dir", False))]
#: An output path: relative paths resolve against the pipeline's ``output`` folder.
OutputPath = Annotated[Path, AfterValidator(_resolve("output_dir", False))]


class Params(BaseModel):
    """Base of every stage's parameter model: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


# --------------------------------------------------------------------------- data


@dataclass
class Detections:
    """Faces found in one image, in that image's pixel coordinates.

    boxes: ``(N, 4)`` float32 x1, y1, x2, y2. scores: ``(N,)`` float32 in [0, 1].
    landmarks: ``(N, 5, 2)`` float32 (left eye, right eye, nose, left mouth corner, right
    mouth corner; "left" = image left), or ``None`` for detectors without landmarks.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: Optional[np.ndarray] = None

    @classmethod
    def empty(cls, with_landmarks: bool = True) -> "Detections":
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, 5, 2), np.float32) if with_landmarks else None,
        )

    def __len__(self) -> int:
        return len(self.boxes)

    def take(self, idx) -> "Detections":
        return Detections(
            self.boxes[idx], self.scores[idx], None if self.landmarks is None else self.landmarks[idx]
        )


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
    (None: facekit's default, 64 MiB; a source's size limit). label: class id, set by the engine when the identity is
    admitted (-1 before). occlusion: an :class:`Occlusion` (occluded copy + mask) that an
    augmenter attached, or None. meta: free-form dict for plugins.
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
    meta: dict = field(default_factory=dict)

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
    """A sample that could not be used: written to the rejects file, counted by reason."""

    path: str
    reason: str
    detail: str = ""
    identity: str = ""


# --------------------------------------------------------------------------- stages


class Stage:
    """Base of all stages. ``kind``: source/detector/aligner/augmenter/sink."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params
    #: one-line description shown by ``facekit plugins``
    description: ClassVar[str] = ""

    def __init__(self, params: Params):
        self.params = params


class SourceParams(Params):
    start_id: int = Field(0, ge=0, description="class id of the first admitted identity")
    min_images: int = Field(
        2, ge=1, description="identities with fewer kept faces are left out of every sink and reported"
    )


class Source(Stage):
    """Yields samples with identities contiguous (all samples of one identity together).

    ``__iter__`` yields :class:`Sample` (usually with ``data`` or ``path`` to read) or
    :class:`Reject` for files it cannot use (never skipped silently).
    """

    kind = "source"
    Params = SourceParams

    def __iter__(self) -> Iterator[Sample | Reject]:
        raise NotImplementedError

    def count(self) -> Optional[int]:
        """How many items (samples and rejects) ``__iter__`` will yield, when that is cheap
        to know before the run (a directory listing, an index, a pairs file); None when it
        is not (the default). Used for the progress bar's total and ETA only."""
        return None

    def fatal_reject(self, reject: Reject) -> Optional[str]:
        """Whether ``reject`` (of one of this source's images or faces) must stop the run.

        Returns None (the default: the reject is written to the rejects file and the run
        goes on) or the error message the run stops with. For sources whose images only
        make sense together, e.g. verification pairs, where dropping one image would shift
        every later pair.
        """
        return None


class DetectorParams(Params):
    select: Literal["largest_central", "all", "reject"] = Field(
        "largest_central",
        description="several faces: keep the one maximising area - 2*squared centre offset, keep all, or reject the image",
    )
    min_size: float = Field(20.0, ge=0, description="faces whose box's shorter side is below this (pixels) are rejected")
    pad: float = Field(
        0.5, ge=0, description="no face found: retry once with this fraction of the image size padded on each side (tight crops)"
    )
    pad_min_face: float = Field(
        0.3,
        ge=0,
        le=1,
        description="faces found only by the padded retry must span this fraction of the image's shorter side",
    )


class Detector(Stage):
    """Finds faces. Subclasses implement :meth:`detect`; the engine calls :meth:`find_faces`."""

    kind = "detector"
    Params = DetectorParams
    #: whether :meth:`detect` returns landmarks
    provides_landmarks: ClassVar[bool] = True

    def detect(self, image: np.ndarray) -> Detections:
        """Detect faces in ``image`` (``(H, W, 3)`` uint8 BGR). Returns :class:`Detections`."""
        raise NotImplementedError

    def find_faces(self, image: np.ndarray) -> Detections:
        """Detect with the pad-and-retry rule, the size filter and the selection policy.

        Returns the kept faces (one for ``largest_central``/``reject``).
        Raises:
            SampleRejected: ``no_face``, ``face_too_small`` or ``multiple_faces``.
        """
        from facekit.detection import find_faces

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


class Augmenter(Stage):
    """Turns one (aligned) sample into zero or more samples (e.g. masked variants)."""

    kind = "augmenter"

    def augment(self, sample: Sample) -> Iterable[Sample]:
        """Return the samples to pass on; ``sample.image`` is set (BGR uint8). A returned
        sample whose ``image`` changed must have ``data=None`` so it is re-encoded."""
        raise NotImplementedError


class Sink(Stage):
    """Consumes kept samples in order: ``open(publication)``, ``write_many()``/``write()``,
    ``close()``.

    Samples arrive with ``label`` set, identities contiguous and labels non-decreasing;
    ``sample.data`` holds the encoded bytes to store. A sink writes only into the staging
    places it asks ``publication`` for (:meth:`facekit.publish.Publication.dir` /
    ``.file``); the engine publishes every output of the run together when all sinks closed
    successfully. ``close()`` finishes the staged files and returns a dict of stats;
    ``abort()`` releases what the sink holds (open files); the engine removes the staging.
    """

    kind = "sink"
    #: whether every stored image must have one size (e.g. RecordIO with a ``property``
    #: file): such a sink refuses a pipeline that passes whole photos (detector, no aligner)
    uniform_size: ClassVar[bool] = False

    def open(self, publication) -> None:
        """Start writing: ask ``publication`` (a :class:`facekit.publish.Publication`) for
        the staging folder or file of each output path."""

    def write(self, sample: Sample) -> None:
        raise NotImplementedError

    def write_many(self, samples: list[Sample]) -> None:
        """Consume several samples, in order (the engine hands over one identity at a
        time). The default calls :meth:`write` for each; a sink that gains from batching
        (framing, one system call per batch) overrides it."""
        for s in samples:
            self.write(s)

    def close(self) -> dict[str, Any]:
        return {}

    def abort(self) -> None:
        pass


KINDS = ("source", "detector", "aligner", "augmenter", "sink")

__all__ = [
    "Aligner",
    "Augmenter",
    "Detections",
    "Detector",
    "DetectorParams",
    "InputPath",
    "KINDS",
    "Occlusion",
    "OptionalInputPath",
    "OutputPath",
    "Params",
    "Reject",
    "Sample",
    "SampleRejected",
    "Sink",
    "Source",
    "SourceParams",
    "Stage",
]
