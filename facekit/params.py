"""Stage parameters: the pydantic base every stage's ``Params`` model extends, and the
path types that resolve against the config file's folder or the run's output folder."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator


#: what :func:`_check_input` opens an input with: read-only, never blocking (a FIFO whose
#: writer never comes, a device), no controlling terminal
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


def _kind(mode: int) -> str:
    """Name of a file type that is not a regular file or a folder."""
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return f"special file (mode {mode:o})"


def _check_input(p: Path) -> None:
    """Raise ValueError unless ``p`` is a regular file or a folder that can be opened.

    The path is looked at with ``stat`` (never opens a FIFO or a device: opening one can
    block, as a model file naming a FIFO hung ``validate``), then a regular file or folder
    is opened non-blocking and checked again on the descriptor (``fstat``), so what is
    checked is what a stage will read."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ValueError(f"path does not exist: {p}") from None
    except OSError as e:
        raise ValueError(f"cannot use {p}: {e.strerror or e}") from None
    _check_kind(p, st)
    try:
        fd = os.open(p, _OPEN_FLAGS)
    except OSError as e:
        raise ValueError(f"cannot read {p}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)  # the object opened (a path swapped meanwhile is caught too)
    finally:
        os.close(fd)
    _check_kind(p, st)


def _check_kind(p: Path, st: os.stat_result) -> None:
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise ValueError(f"{p} is a {_kind(st.st_mode)}, not a regular file or folder: facekit reads only those")


def path_problem(text: str) -> str | None:
    """Why ``text`` cannot be a path on this system (a NUL byte: no system call takes
    one; a lone surrogate that is not an escaped byte), or None."""
    if "\0" in text:
        return "the path contains a NUL byte (\\x00), which no file name can hold"
    try:
        os.fsencode(text)
    except UnicodeEncodeError as e:
        return f"the path holds {text[e.start]!r}, which cannot be encoded as a file name"
    return None


def _resolve(base_key: str, must_exist: bool):
    def check(p: Path, info: ValidationInfo) -> Path:
        problem = path_problem(str(p))
        if problem:
            raise ValueError(problem)
        p = Path(os.path.expanduser(str(p)))
        base = (info.context or {}).get(base_key)
        if not p.is_absolute() and base is not None:
            p = Path(base) / p
        p = normalized(p)
        if must_exist:
            _check_input(p)
        return p

    return check


def normalized(p: Path) -> Path:
    """``p`` with ``.`` and ``..`` components removed (``configs/../out`` -> ``out``) where
    that names the same place: a ``..`` after a symbolic link goes to the link target's
    parent, so the spelling is kept when the lexical form would name another folder."""
    s = str(p)
    norm = os.path.normpath(s)
    if norm == s:
        return p
    if ".." in Path(s).parts and os.path.realpath(norm) != os.path.realpath(s):
        return Path(s)
    return Path(norm)


#: An input path: relative paths resolve against the config file's folder; must exist.
InputPath = Annotated[Path, AfterValidator(_resolve("config_dir", True))]
#: An input path that may be absent (the stage checks and explains).
OptionalInputPath = Annotated[Path, AfterValidator(_resolve("config_dir", False))]
#: An output path: relative paths resolve against the pipeline's ``output`` folder.
OutputPath = Annotated[Path, AfterValidator(_resolve("output_dir", False))]


#: the most bytes of one file or folder name on the usual file systems (ext4, XFS, btrfs,
#: tmpfs: NAME_MAX); a sink asks its own file system (``os.pathconf``) when it writes
NAME_MAX = 255
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _file_name(name: str) -> str:
    if not name or name in (".", ".."):
        raise ValueError(f"{name!r} is not a file name")
    problem = path_problem(name)
    if problem:
        raise ValueError(problem)
    m = _CONTROL.search(name)
    if m:
        raise ValueError(f"the file name {name!r} holds the control character {m.group()!r}")
    if "/" in name or os.sep in name:
        raise ValueError(f"{name!r} must be a file name, not a path (no '/')")
    if len(os.fsencode(name)) > NAME_MAX:
        raise ValueError(f"the file name is {len(os.fsencode(name))} bytes long; file systems allow {NAME_MAX}")
    return name


#: One file name (no folder part) a stage writes or looks for: not empty, no ``/``, no
#: control character, at most :data:`NAME_MAX` bytes.
FileName = Annotated[str, AfterValidator(_file_name)]


class Params(BaseModel):
    """Base of every stage's parameter model: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


#: the parameters of :class:`FaceChoiceParams` (``detector: {select: identity, ...}``, the
#: older spelling, maps these onto the clean stage)
FACE_CHOICE_KEYS = ("select", "identity_min_similarity", "flag_below", "reject_below")


class FaceChoiceThresholds(Params):
    """The thresholds of ``select: identity`` (identity-consistent face choice), shared by
    its two spellings: :class:`FaceChoiceParams` (the clean stage's) and the detector's
    ``DetectorParams`` (the older spelling). Cosine similarities in [-1, 1]."""

    identity_min_similarity: float = Field(
        0.3,
        ge=-1,
        le=1,
        description="select: identity: a photo whose faces are all less similar (cosine) than this to the identity's "
        "other photos is rejected as identity_mismatch",
    )
    flag_below: float = Field(
        0.3,
        ge=-1,
        le=1,
        description="select: identity: kept faces less similar than this to their identity's other photos are flagged "
        "far_from_identity in results.parquet (likely label noise)",
    )
    reject_below: Optional[float] = Field(
        None,
        ge=-1,
        le=1,
        description="select: identity: kept faces less similar than this are rejected as label_noise (default: none)",
    )


class FaceChoiceParams(FaceChoiceThresholds):
    """Face choice in group photos, part of the ``clean`` stage kind (issue 26 part 3):
    every cleaner's parameters extend it (:class:`facekit.CleanerParams`), and the shard
    worker reads them there (:func:`facekit.pipeline.identity.choose_faces`) before it asks
    the cleaner for its decisions.

    ``select: identity`` keeps, of each photo, the face that matches the identity's other
    photos (a photo whose best face is below ``identity_min_similarity``:
    ``identity_mismatch``), stores each kept face's similarity to the identity's other
    photos, flags it ``far_from_identity`` below ``flag_below`` and rejects it ``label_noise``
    below ``reject_below``. To choose, the stage needs candidates: the faces a detector
    found in a photo (a detector in the pipeline keeps every face for it, as ``select:
    all``). Without a detector (folders of aligned crops, a ``mxrec`` source) every image
    is one face, so nothing is chosen; the similarity, ``flag_below`` and ``reject_below``
    still apply. ``detector: {select: identity, identity_min_similarity, flag_below,
    reject_below}`` is the older spelling of the same choice: config validation moves it
    here."""

    select: Optional[Literal["identity"]] = Field(
        None,
        description="identity (with a recognizer): in each photo keep the face that matches the identity's other "
        "photos (a detector then keeps every face for the choice); none (the default): no choice",
    )
    @field_validator("select", mode="before")
    @classmethod
    def _none_is_off(cls, v):
        """``none``/``off`` (False in YAML): no face choice."""
        return None if v is False or v == "none" else v

    @property
    def chooses_faces(self) -> bool:
        """Whether the stage chooses a face per photo (``select: identity``)."""
        return self.select == "identity"



__all__ = ["FACE_CHOICE_KEYS", "FaceChoiceParams", "FileName", "InputPath", "OptionalInputPath", "OutputPath", "Params"]
