"""Duplicates within an identity (issue 26 part 3): exact copies and near-duplicates.

Pure functions over one identity's faces in source order; the first occurrence is kept and
every later copy points at a kept face (``duplicate_of``, an index into the identity's
faces; -1 for kept faces)::

    digests = [byte_digest(b) for b in file_bytes]           # same file bytes
    pixels = [pixel_digest(img) for img in decoded_images]   # same pixels, any lossless format
    dup = find_duplicates(emb, byte_digests=digests, pixel_digests=pixels)
    dup.duplicate_of, dup.kind, dup.similarity

- **Exact**: SHA-256 of the bytes (the same file twice), then SHA-256 of the decoded
  pixels with their shape (the same image saved as PNG and as BMP: other bytes, same
  pixels).
- **Near**: cosine similarity of the embeddings at or above ``threshold`` (a re-encoded
  JPEG, a flipped copy, a resized copy). Greedy in source order: a face is a duplicate of
  the most similar earlier *kept* face at or above the threshold, else it is kept; so no
  two kept faces are that similar, and a chain of small changes (A~B, B~C, A!~C) keeps C.
  Flip-summed embeddings (``emb + emb_flip``, as :class:`facekit.eval.recognition.
  OnnxEmbedder.embed_encoded` gives) make a flipped copy score like the original.

Similarities are computed in tiles of at most ``block x block`` (2048 by default):
identities of a few thousand faces never hold an ``n x n`` matrix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facekit.clean.identity import BLOCK, CleanError, unit_rows

DUPLICATE = "duplicate"

#: Near-duplicate threshold on the cosine similarity of two faces' embeddings, calibrated
#: on kz_celebs_112 (benchmarks/eval_cleaning.py; MobileFaceNet 128-d, flip-summed): of
#: copies of a source crop, re-detected and re-aligned, it finds 48/49 JPEG-75 copies (the
#: miss: a two-face photo whose copy got the other face) and 48/50 mirrored ones (plain
#: embeddings: 38/50). Between the data's own photos, pairs looked at by eye were mostly
#: different photos at 0.85-0.90 and mostly the same picture re-cropped, blurred or
#: mirrored at 0.90-0.95 (10 of 12); 119 of its 2,260 faces are flagged at 0.90.
DEFAULT_NEAR_THRESHOLD = 0.90


def byte_digest(data: bytes) -> bytes:
    """SHA-256 of a file's bytes (32 bytes)."""
    return hashlib.sha256(data).digest()


def pixel_digest(image: np.ndarray) -> bytes:
    """SHA-256 of a decoded image's pixels, its shape and dtype (32 bytes): equal for the
    same picture stored losslessly in any format (PNG, BMP, lossless WebP) once decoded the
    same way (e.g. :func:`facekit.vision.images.decode_image`, BGR uint8)."""
    a = np.ascontiguousarray(image)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.data)
    return h.digest()


def exact_duplicates(digests: Sequence) -> np.ndarray:
    """``(n,)`` int64: for each digest the index of its first occurrence when it is a
    repeat, else -1. ``None`` entries (no digest, e.g. an undecodable image) match
    nothing."""
    first: dict = {}
    out = np.full(len(digests), -1, np.int64)
    for i, d in enumerate(digests):
        if d is None:
            continue
        j = first.setdefault(d, i)
        if j != i:
            out[i] = j
    return out


@dataclass
class NearDuplicates:
    """``duplicate_of`` ``(n,)`` int64 (-1: kept) and ``similarity`` ``(n,)`` float32 to
    that face (NaN for kept faces)."""

    duplicate_of: np.ndarray
    similarity: np.ndarray


def near_duplicates(
    emb, threshold: float = DEFAULT_NEAR_THRESHOLD, *, exclude=None, block: int = BLOCK
) -> NearDuplicates:
    """Greedy near-duplicates in source order (see the module docstring).

    Args:
        emb: ``(n, D)`` embeddings of one identity, in source order.
        threshold: cosine similarity at or above which a face duplicates a kept one.
        exclude: ``(n,)`` bool: faces already known to be duplicates (exact copies): never
            kept, so never pointed at, and not judged here.
        block: tile side; at most ``block x block`` similarities exist at once.
    Raises:
        CleanError: bad embeddings or arguments.
    """
    x = unit_rows(emb)
    n = len(x)
    if block < 1:
        raise CleanError(f"block {block} must be >= 1")
    ex = np.zeros(n, bool) if exclude is None else np.asarray(exclude, bool)
    if ex.shape != (n,):
        raise CleanError(f"exclude: expected {n} flags, got shape {ex.shape}")
    kept = np.zeros(n, bool)
    dup = np.full(n, -1, np.int64)
    sim = np.full(n, np.nan, np.float32)
    thr = np.float32(threshold)
    for a in range(0, n, block):
        rows = x[a : a + block]
        m = len(rows)
        best_s = np.full(m, -np.inf, np.float32)
        best_j = np.full(m, -1, np.int64)
        for c in range(0, a, block):  # earlier tiles: their kept faces are known
            cols = np.flatnonzero(kept[c : min(c + block, a)]) + c
            if not len(cols):
                continue
            s = rows @ x[cols].T
            j = np.argmax(s, axis=1)
            v = s[np.arange(m), j]
            better = v > best_s
            best_s[better], best_j[better] = v[better], cols[j[better]]
        inner = rows @ rows.T
        for r in range(m):
            i = a + r
            if ex[i]:
                continue
            prev = np.flatnonzero(kept[a:i])
            s_in, j_in = -np.inf, -1
            if len(prev):
                k = int(np.argmax(inner[r, prev]))
                s_in, j_in = float(inner[r, prev[k]]), a + int(prev[k])
            s_out, j_out = float(best_s[r]), int(best_j[r])
            s_best, j_best = (s_in, j_in) if s_in > s_out else (s_out, j_out)
            if j_best >= 0 and s_best >= thr:
                dup[i], sim[i] = j_best, s_best
            else:
                kept[i] = True
    return NearDuplicates(dup, sim)


@dataclass
class Duplicates:
    """Duplicates of one identity: ``duplicate_of`` ``(n,)`` int64 (-1: kept; else the
    index of a kept face), ``kind`` ``(n,)`` str: ``bytes``, ``pixels``, ``near`` or ``""``
    (kept), ``similarity`` ``(n,)`` float32 (1 for exact copies, the cosine similarity for
    near ones, NaN for kept faces)."""

    duplicate_of: np.ndarray
    kind: np.ndarray
    similarity: np.ndarray

    @property
    def duplicate(self) -> np.ndarray:
        """``(n,)`` bool: the face is a duplicate (to be flagged or rejected)."""
        return self.duplicate_of >= 0


def _root(of: np.ndarray, i: int) -> int:
    while of[i] >= 0:
        i = int(of[i])
    return i


def find_duplicates(
    emb=None,
    *,
    byte_digests: Sequence | None = None,
    pixel_digests: Sequence | None = None,
    threshold: float | None = DEFAULT_NEAR_THRESHOLD,
    block: int = BLOCK,
) -> Duplicates:
    """All duplicates of one identity, exact first, then near.

    Args:
        emb: ``(n, D)`` embeddings (None: exact duplicates only).
        byte_digests, pixel_digests: per face, :func:`byte_digest` of its file bytes and
            :func:`pixel_digest` of its decoded pixels (None entries or lists: not used).
        threshold: near-duplicate cosine threshold (None: no near duplicates).
    Each duplicate points at the first kept face of its group: an exact copy of a face that
    is itself a near duplicate points at that face's kept original.
    Raises:
        CleanError: lengths that differ, bad embeddings.
    """
    given = (("emb", emb), ("byte_digests", byte_digests), ("pixel_digests", pixel_digests))
    sizes = {name: len(v) for name, v in given if v is not None}
    if not sizes:
        raise CleanError("find_duplicates: give embeddings or digests")
    if len(set(sizes.values())) > 1:
        raise CleanError(f"find_duplicates: lengths differ: {sizes}")
    n = next(iter(sizes.values()))
    of = np.full(n, -1, np.int64)
    kind = np.full(n, "", dtype=object)
    sim = np.full(n, np.nan, np.float32)
    for name, digests in (("bytes", byte_digests), ("pixels", pixel_digests)):
        if digests is None:
            continue
        # faces that are already duplicates still join their digest's group; the group's
        # first face decides
        d = exact_duplicates(digests)
        for i in np.flatnonzero((d >= 0) & (of < 0)):
            of[i], kind[i], sim[i] = _root(of, int(d[i])), name, 1.0
    if emb is not None and threshold is not None:
        near = near_duplicates(emb, threshold, exclude=of >= 0, block=block)
        hit = near.duplicate_of >= 0
        of[hit], kind[hit], sim[hit] = near.duplicate_of[hit], "near", near.similarity[hit]
    for i in np.flatnonzero(of >= 0):  # exact copies of a near duplicate: to its original
        of[i] = _root(of, int(of[i]))
    return Duplicates(of, kind.astype(str), sim)
