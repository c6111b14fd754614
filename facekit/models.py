"""The detector and recognition models facekit knows by name, and the user cache they are
downloaded into (``facekit models``, ``facekit models get NAME``).

Each catalogue entry pins a download URL (at a fixed commit: the same name can hold other
bytes at another commit), the licence, the file's sha256 and size; ``sha256_source`` says
how that hash was established (the bytes themselves checked, or the publisher's own listing).

The cache is ``$FACEKIT_MODELS`` when set, else ``$XDG_CACHE_HOME/facekit/models``, else
``~/.cache/facekit/models``: one file per model under its catalogue file name. It is not
InsightFace's ``~/.insightface/models``, which holds InsightFace's model packs (folders such
as ``buffalo_l/``); facekit downloads single files from other publishers, and the
``retinaface`` detector still looks in InsightFace's folder when no model is given.

A stage parameter typed :data:`ModelPath` takes a path (as :data:`facekit.InputPath`) or a
catalogue name: ``model: scrfd_500m`` is the cached file, and a name not downloaded yet is a
one-line config error naming ``facekit models get scrfd_500m``. A file that happens to be
named like a catalogue model is written as a path: ``./scrfd_500m``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator

from facekit.errors import FacekitError
from facekit.params import _resolve

#: the environment variable naming the cache folder
CACHE_ENV = "FACEKIT_MODELS"
#: the environment variable naming a mirror: ``$FACEKIT_MODELS_URL/<file name>`` replaces
#: each model's URL (an offline copy, a company mirror, the tests' local server); the
#: sha256 is checked all the same
MIRROR_ENV = "FACEKIT_MODELS_URL"


class ModelError(FacekitError):
    """A catalogue model is unknown, not downloaded, or could not be downloaded (one line)."""


@dataclass(frozen=True)
class CatalogueModel:
    """One model facekit can download: what it is, where from, under which terms.

    Attributes:
        name: the name a config or ``facekit models get`` uses.
        kind: ``detector`` or ``recognizer``.
        plugin: the stage plugin that runs it (``retinaface``, ``yunet``, ``onnx``).
        filename: its file name in the cache.
        url: the download URL, pinned to a commit.
        licence: the terms, as its publisher states them.
        sha256: the file's SHA-256 (hex).
        size: the file's size in bytes.
        sha256_source: how ``sha256`` was established.
        note: what the model is.
    """

    name: str
    kind: str
    plugin: str
    filename: str
    url: str
    licence: str
    sha256: str
    size: int
    sha256_source: str
    note: str


_LIBFD = "https://raw.githubusercontent.com/ShiqiYu/libfacedetection.train/{commit}/onnx/{file}"
_LIBFD_COMMIT = "204b0c9f687f2fd5c012988199a3cd47feb69a90"  # the files were removed by the next commit
_ZOO = "https://github.com/opencv/opencv_zoo/raw/{commit}/models/{file}"  # Git LFS files: github.com/raw serves the content
_ZOO_COMMIT = "966be4cb6eefc2a4f586ed0581bf4bbaa2533070"

CATALOGUE: dict[str, CatalogueModel] = {
    m.name: m
    for m in (
        CatalogueModel(
            name="scrfd_500m",
            kind="detector",
            plugin="retinaface",
            filename="scrfd_500m_bnkps.onnx",
            url=_LIBFD.format(commit=_LIBFD_COMMIT, file="scrfd_500m_bnkps.onnx"),
            licence="InsightFace's SCRFD weights: non-commercial research use only (InsightFace's terms for its "
            "pretrained models); the hosting repository's MIT LICENSE covers its code",
            sha256="6c6ba7956684796d7d582bfa1ab95dfe01dd280159f6bff1e23c1bc32bcc8431",
            size=2529618,
            sha256_source="checked: the git blob at that commit, and the copy facekit's tests run",
            note="SCRFD-500MF with five keypoints (InsightFace output convention, any input size)",
        ),
        CatalogueModel(
            name="retinaface_mnet025",
            kind="detector",
            plugin="retinaface",
            filename="retinaface_mbnet0.25.onnx",
            url=_LIBFD.format(commit=_LIBFD_COMMIT, file="retinaface_mbnet0.25.onnx"),
            licence="MIT (the hosting repository's LICENSE at that commit; it states no separate terms for the "
            "weights)",
            sha256="13a69f2cb3012162ccce8466b1cd9e445ae1337ae641f31c90419e6179f13650",
            size=1711594,
            sha256_source="checked: the git blob at that commit, and the copy facekit's tests run",
            note="RetinaFace-MobileNet0.25 export (Pytorch_Retinaface) with loc/conf/landmark outputs",
        ),
        CatalogueModel(
            name="yunet_2023mar",
            kind="detector",
            plugin="yunet",
            filename="face_detection_yunet_2023mar.onnx",
            url=_ZOO.format(commit=_ZOO_COMMIT, file="face_detection_yunet/face_detection_yunet_2023mar.onnx"),
            licence="MIT (OpenCV Zoo, models/face_detection_yunet)",
            sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
            size=232589,
            sha256_source="checked: the copy facekit's tests run, which equals the Git LFS pointer at that commit",
            note="YuNet 2023mar (OpenCV Zoo), 640x640 input",
        ),
        CatalogueModel(
            name="sface_2021dec",
            kind="recognizer",
            plugin="onnx",
            filename="face_recognition_sface_2021dec.onnx",
            url=_ZOO.format(commit=_ZOO_COMMIT, file="face_recognition_sface/face_recognition_sface_2021dec.onnx"),
            licence="Apache-2.0 (OpenCV Zoo, models/face_recognition_sface)",
            sha256="0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
            size=38696353,
            sha256_source="publisher's listing: the Git LFS pointer of that file at that commit (not downloaded "
            "here; facekit's tests do not run this model)",
            note="SFace recognition model (OpenCV Zoo), 112x112 aligned faces, 128-d embeddings",
        ),
    )
}


def cache_dir() -> Path:
    """The model cache folder: ``$FACEKIT_MODELS``, else ``$XDG_CACHE_HOME/facekit/models``,
    else ``~/.cache/facekit/models`` (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "facekit" / "models"


def lookup(name: str) -> CatalogueModel:
    """The catalogue entry called ``name``.

    Raises:
        ModelError: no such model (the message lists the known names).
    """
    try:
        return CATALOGUE[name]
    except (KeyError, TypeError):
        raise ModelError(f"unknown model {name!r}; facekit knows: {', '.join(CATALOGUE)}") from None


def source_url(model: CatalogueModel) -> str:
    """Where ``model`` is downloaded from: its URL, or ``$FACEKIT_MODELS_URL/<file name>``."""
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{model.filename}" if mirror else model.url


def cached_file(model: CatalogueModel) -> Path:
    """Where ``model`` is (or would be) in the cache."""
    return cache_dir() / model.filename


def is_cached(model: CatalogueModel) -> bool:
    """Whether ``model``'s file is in the cache with its catalogue size (only verified
    downloads are put there; ``facekit models get`` checks the sha256 again)."""
    try:
        return cached_file(model).stat().st_size == model.size
    except OSError:
        return False


def cached_model(name: str) -> Path:
    """The cached file of the catalogue model ``name``.

    Raises:
        ModelError: unknown name, or not downloaded (the message says ``facekit models get NAME``).
    """
    model = lookup(name)
    if not is_cached(model):
        raise ModelError(
            f"model {name!r} is not downloaded (looked for {cached_file(model)}): run 'facekit models get {name}'"
        )
    return cached_file(model)


def listing() -> list[dict]:
    """What ``facekit models --json`` prints: every catalogue entry with ``cached`` and ``path``."""
    return [{**asdict(m), "cached": is_cached(m), "path": str(cached_file(m))} for m in CATALOGUE.values()]


def _catalogue_name(value):
    if isinstance(value, str) and value in CATALOGUE:
        try:
            return cached_model(value)
        except ModelError as e:
            raise ValueError(str(e)) from None
    return value


#: A model file a stage reads: a path (relative to the config file's folder; must exist) or
#: the name of a catalogue model (``scrfd_500m``), which means its file in the cache.
ModelPath = Annotated[Path, BeforeValidator(_catalogue_name), AfterValidator(_resolve("config_dir", True))]

__all__ = ["CATALOGUE", "CatalogueModel", "ModelError", "ModelPath", "cache_dir", "cached_file", "cached_model",
           "is_cached", "listing", "lookup", "source_url"]
