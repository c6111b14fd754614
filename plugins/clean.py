"""Cleaner ``identity`` (issue 26 part 3): per identity, duplicates (the same file, the same
pixels, near copies by embedding), two people under one name (``mixed_identity``: flagged,
cut, or split into two identities) and label noise (far from the identity's robust centre),
each ignored, flagged or rejected by config (``off`` in YAML is ``ignore``), with the
algorithms and calibrated defaults of :mod:`facekit.clean` (``find_duplicates``,
``clean_identity``, ``split_name``). Like every cleaner it also chooses the face of each
group photo (``select: identity``, :class:`facekit.params.FaceChoiceParams`), which the
worker runs before :meth:`IdentityCleaner.clean`."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

import facekit
from facekit.clean import (
    DEFAULT_MIXED_MAX_SIMILARITY,
    DEFAULT_MIXED_MIN_FACES,
    DEFAULT_MIXED_MIN_FRACTION,
    DEFAULT_NEAR_THRESHOLD,
    DEFAULT_OUTLIER_THRESHOLD,
    byte_digest,
    clean_identity,
    find_duplicates,
    pixel_digest,
    split_name,
)

DUPLICATE, LABEL_NOISE, MIXED_IDENTITY = "duplicate", "label_noise", "mixed_identity"


class IdentityCleanerParams(facekit.CleanerParams):
    duplicates: Literal["ignore", "flag", "reject"] = Field(
        "reject", description="copies of an earlier face of the identity (same bytes, same pixels, or embeddings at "
        "near_duplicate_above): the first is kept, a copy is flagged or rejected 'duplicate' with duplicate_of"
    )
    near_duplicate_above: float = Field(
        DEFAULT_NEAR_THRESHOLD, gt=0, le=1, description="cosine similarity at or above which two faces are copies"
    )
    label_noise: Literal["ignore", "flag", "reject"] = Field(
        "flag", description="faces far from the identity's robust centre (the geometric median): 'label_noise'"
    )
    outlier_below: float = Field(
        DEFAULT_OUTLIER_THRESHOLD, ge=-1, le=1, description="cosine similarity to the centre below which a face is label noise"
    )
    mixed: Literal["ignore", "flag", "cut", "split"] = Field(
        "flag", description="an identity that is two people (spherical 2-means): flag the other person's faces "
        "'mixed_identity' (results: cluster 1), cut them (rejected), or split them off as a new identity "
        "'<identity>#2' (flagged, written right after the identity with the next label; results: identity the "
        "source's, merge_with '<identity>#2')"
    )
    mixed_below: float = Field(
        DEFAULT_MIXED_MAX_SIMILARITY, ge=-1, le=1, description="the two clusters' centres below this similarity: two people"
    )
    mixed_min_fraction: float = Field(
        DEFAULT_MIXED_MIN_FRACTION, ge=0, le=0.5, description="the smaller cluster holds at least this share of the faces"
    )
    mixed_min_faces: int = Field(DEFAULT_MIXED_MIN_FACES, ge=1, description="and at least this many faces")

    @field_validator("duplicates", "label_noise", "mixed", mode="before")
    @classmethod
    def _no_is_ignore(cls, v):
        """YAML reads ``off``/``no``/``false`` as False: the same as ``ignore``."""
        return "ignore" if v is False else v


class IdentityCleaner(facekit.Cleaner):
    """Duplicates, two-people identities and label noise, per identity. Under ``mixed:
    split`` the smaller cluster's faces get ``FaceDecision.identity`` ``<identity>#2``
    (:func:`facekit.clean.identity.split_name`), and a duplicate kept as a flag follows the
    face it copies."""

    name = "identity"
    description = "per identity: duplicates, two people under one name, label noise (flag or reject)"
    Params = IdentityCleanerParams

    def clean(self, identity, faces):
        p = self.params
        n = len(faces)
        out = [facekit.FaceDecision() for _ in faces]
        if not n:
            return out
        emb = np.stack([s.embedding for s in faces]).astype(np.float32)
        norms = [s.embedding_norm for s in faces]
        norms = None if any(v is None for v in norms) else np.asarray(norms, np.float64)
        dup_mask = np.zeros(n, bool)
        if p.duplicates != "ignore":
            dups = find_duplicates(
                emb,
                byte_digests=[None if s.data is None else byte_digest(s.data) for s in faces],
                pixel_digests=[None if s.image is None else pixel_digest(s.image) for s in faces],
                threshold=p.near_duplicate_above,
            )
            dup_mask = dups.duplicate
            for i in np.flatnonzero(dup_mask):
                j = int(dups.duplicate_of[i])
                kind = str(dups.kind[i])
                what = {"bytes": "the same file bytes", "pixels": "the same pixels"}.get(
                    kind, f"cosine similarity {float(dups.similarity[i]):.3f} >= {p.near_duplicate_above:g}")
                d = out[i]
                d.duplicate_of, d.similarity = faces[j].path, float(dups.similarity[i])
                d.detail = f"a copy of {faces[j].path} ({what})"
                if p.duplicates == "reject":
                    d.reject = DUPLICATE
                else:
                    d.flag = DUPLICATE
        if p.label_noise == "ignore" and p.mixed == "ignore":
            return out
        rep = clean_identity(
            emb,
            exclude=dup_mask,
            outlier_threshold=p.outlier_below,
            max_similarity=p.mixed_below if p.mixed != "ignore" else -2.0,
            min_fraction=p.mixed_min_fraction,
            min_faces=p.mixed_min_faces,
            norms=norms,
        )
        mixed = p.mixed != "ignore" and rep.mixed.mixed
        for i in np.flatnonzero(~dup_mask):
            d = out[i]
            sim = float(rep.similarity[i])
            d.similarity = None if sim != sim else sim
            c = int(rep.cluster[i])
            if mixed:
                d.cluster = c
                if c >= 1:
                    why = (f"{identity!r} is two people (clusters of {rep.mixed.core_sizes[0]} and "
                           f"{rep.mixed.core_sizes[1]} faces, centres' similarity {rep.mixed.similarity:.3f} < "
                           f"{p.mixed_below:g}): this face is in the smaller cluster")
                    if p.mixed == "cut":
                        d.reject, d.detail = MIXED_IDENTITY, why
                        continue
                    if p.mixed == "split":
                        d.identity = split_name(identity, c)
                        why += f": split off as identity {d.identity!r}"
                    d.flag, d.detail = MIXED_IDENTITY, why
            if p.label_noise != "ignore" and rep.label_noise[i]:
                why = f"similarity {sim:.3f} to the identity's robust centre < outlier_below {p.outlier_below:g}"
                if p.label_noise == "reject":
                    d.reject, d.detail, d.flag = LABEL_NOISE, why, ""
                elif not d.flag:
                    d.flag, d.detail = LABEL_NOISE, why
        if mixed and p.mixed == "split":  # a copy kept (flagged) goes where the face it copies went
            for i in np.flatnonzero(dup_mask):
                j = int(dups.duplicate_of[i])
                if not out[i].reject and out[j].identity is not None and not out[j].reject:
                    out[i].identity = out[j].identity
        return out


@facekit.hookimpl
def register_stages(register):
    register(IdentityCleaner)
