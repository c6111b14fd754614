"""Overlap between a training set and verification sets: the identities of the training set
that are also people of the test bins (insightface removed such overlaps from its
published training sets; a test identity seen in training inflates the reported accuracy).

Each training identity is represented by its centre: the normalised mean embedding of up
to ``per_identity`` of its images. Each verification image is embedded as ``facekit
eval`` does (the image and its horizontal flip, summed, normalised). An identity
overlaps when its centre's cosine similarity to some verification image reaches the
threshold; the report lists it with its best-matching images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from facekit.errors import FacekitError, SampleRejected
from facekit.eval.recognition import OnnxEmbedder
from facekit.formats.evalbin import load_bin
from facekit.formats.facerec import FaceRec, find_parts
from facekit.vision.images import read_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


@dataclass
class Match:
    """A training identity found in the verification sets: ``identity`` (folder name, or
    the class id of a RecordIO set, as text), its best ``similarity`` and the matching
    verification images (``file[index]``, best first)."""

    identity: str
    similarity: float
    images: list = field(default_factory=list)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def identity_images(dataset: Path, per_identity: int) -> Iterator[tuple[str, list[bytes], list[str]]]:
    """``(identity, up to per_identity encoded images, their names)`` of a training set: a
    RecordIO set (folder with ``train.rec``, a ``.rec``/``.idx``; identity = class id; names
    ``DATASET[i]``) or a folder of identity folders of aligned crops (identity = folder
    name; names = file paths, each read bounded, regular files only).

    Raises:
        FacekitError: neither, or an image file that cannot be read or is too large (names
            the path).
    """
    try:
        is_rec = dataset.suffix in (".rec", ".idx") or bool(find_parts(dataset, "train")[0])
    except Exception:
        is_rec = False
    if is_rec:
        rec = FaceRec(dataset)
        try:
            labels = rec.labels()
            order = np.argsort(labels, kind="stable")
            bounds = np.flatnonzero(np.diff(labels[order])) + 1
            for group in np.split(order, bounds):
                if len(group):
                    idx = [int(i) for i in group[:per_identity]]
                    yield str(int(labels[group[0]])), [rec.read(i)[1] for i in idx], [f"{dataset}[{i}]" for i in idx]
        finally:
            rec.close()
        return
    if not dataset.is_dir():
        raise FacekitError(f"{dataset}: not a RecordIO set (train.rec + train.idx) or a folder of identity folders")
    for d in sorted(p for p in dataset.iterdir() if p.is_dir()):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())[:per_identity]
        if files:
            images = []
            for f in files:
                try:
                    images.append(read_file(str(f)))
                except SampleRejected as e:
                    raise FacekitError(f"{f}: {e.reason}: {e.detail}") from None
            yield d.name, images, [str(f) for f in files]


def embed_bins(embedder: OnnxEmbedder, bins: list[Path], batch: int = 64) -> tuple[np.ndarray, list[str]]:
    """Embeddings of every image of the verification ``bins`` (image + flip, normalised,
    as ``facekit eval``): ``(N, D)`` float32 and the names ``file[index]``."""
    embs, names = [], []
    for b in bins:
        images, _ = load_bin(b)
        for i in range(0, len(images), batch):
            chunk = images[i : i + batch]
            names += [f"{b.name}[{i + k}]" for k in range(len(chunk))]
            e, ef = embedder.embed_encoded(chunk, flip=True, names=names[-len(chunk):])
            embs.append(_unit_rows(e + ef))
    return np.concatenate(embs).astype(np.float32), names


def find_overlap(
    dataset: Path, bins: list[Path], embedder: OnnxEmbedder, threshold: float = 0.5, per_identity: int = 10, top: int = 3
) -> tuple[list[Match], int]:
    """The identities of ``dataset`` whose centre reaches ``threshold`` against an image of
    the ``bins``, most similar first, and how many identities were compared.

    Raises:
        FacekitError: unreadable dataset, bin or image (one line naming it).
    """
    test, names = embed_bins(embedder, bins)
    matches, n = [], 0
    for ident, images, image_names in identity_images(dataset, per_identity):
        n += 1
        e, _ = embedder.embed_encoded(images, flip=False, names=image_names)
        centre = _unit_rows(_unit_rows(e).mean(0, keepdims=True))[0]
        sims = test @ centre
        best = np.argsort(-sims)[:top]
        if sims[best[0]] >= threshold:
            matches.append(Match(ident, float(sims[best[0]]), [(names[i], float(sims[i])) for i in best if sims[i] >= threshold]))
    matches.sort(key=lambda m: -m.similarity)
    return matches, n


def write_exclude(path: str | os.PathLike, matches: list[Match]) -> None:
    """Write the overlapping identities, one per line: the ``exclude:`` file of a source."""
    from facekit.formats.atomic import atomic_write_text

    atomic_write_text(path, "".join(f"{m.identity}\n" for m in matches))
