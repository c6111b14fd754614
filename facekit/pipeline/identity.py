"""``select: identity``: the face of each photo that belongs to its identity.

A parameter of the ``clean`` stage (:class:`facekit.params.FaceChoiceParams`, every
cleaner's); ``detector: {select: identity}`` is its older spelling, which config validation
moves there (:func:`face_choice_stages`). Runs in the shard worker once a shard's faces are
detected, aligned and embedded (a shard holds whole identities), before the cleaner's
decisions. Per identity (the source's identity, e.g. a folder):

1. Each face gets a *support*: the sum, over the identity's other photos, of its best
   cosine similarity to that photo's faces. In each photo the best-supported face is the
   candidate: the person the photos share, however many strangers stand beside them (a
   single-face photo's face is its candidate; an identity with one photo takes its
   largest face).
2. Each candidate is compared with the centre of the *other* photos' candidates (the
   normalised mean of their embeddings, leaving its own photo out): a multi-face photo
   whose candidate is below ``identity_min_similarity`` is rejected as
   ``identity_mismatch`` (nobody in it is the identity); a kept face's similarity is stored
   in ``Sample.similarity``, and below ``flag_below`` it is flagged ``far_from_identity``
   (likely label noise), below ``reject_below`` (when set) rejected as ``label_noise``.

This is the identity-consistent choice insightface's issues and face.evoLVe describe (the
multi-face pick decides LFW accuracy), in place of the largest or most central face.
"""

from __future__ import annotations

import numpy as np

from facekit.params import FACE_CHOICE_KEYS, FaceChoiceParams
from facekit.pipeline.shards import Outcome
from facekit.stages import Reject

IDENTITY_MISMATCH = "identity_mismatch"
LABEL_NOISE = "label_noise"
FAR_FROM_IDENTITY = "far_from_identity"


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def candidates(photos: list[list]) -> list[int]:
    """Index of the best-supported face in each photo (see the module docstring);
    ``photos``: per photo its face samples (with ``embedding``)."""
    if len(photos) == 1:
        if len(photos[0]) == 1:  # one face (an already aligned source has no box)
            return [0]
        boxes = np.stack([s.box for s in photos[0]])
        return [int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))]
    emb = np.stack([s.embedding for faces in photos for s in faces]).astype(np.float32)
    owner = np.repeat(np.arange(len(photos)), [len(f) for f in photos])
    sims = emb @ emb.T
    support = np.zeros(len(emb), np.float32)
    for q in range(len(photos)):  # each face's best match in photo q, for faces of other photos
        best = sims[:, owner == q].max(1)
        support += np.where(owner != q, best, 0)
    out, start = [], 0
    for faces in photos:
        out.append(int(np.argmax(support[start : start + len(faces)])))
        start += len(faces)
    return out


def choose_faces(outcomes: list[Outcome], params) -> None:
    """Apply ``select: identity`` in place to a shard's ``outcomes`` (their samples carry
    ``embedding``); ``params``: the clean stage's :class:`facekit.params.FaceChoiceParams`
    (``identity_min_similarity``, ``flag_below``, ``reject_below``)."""
    groups: dict[str, list[Outcome]] = {}
    for oc in outcomes:
        if oc.samples:
            groups.setdefault(oc.identity, []).append(oc)
    for ident, ocs in groups.items():
        picks = candidates([oc.samples for oc in ocs])
        chosen = np.stack([oc.samples[k].embedding for oc, k in zip(ocs, picks)]).astype(np.float32)
        total = chosen.sum(0)
        for oc, k, e in zip(ocs, picks, chosen):
            several = len(oc.samples) > 1
            s = oc.samples[k]
            oc.samples = [s]
            if len(ocs) < 2:
                continue  # no other photo to compare with
            s.similarity = float(e @ _unit(total - e))
            first = s
            if several and s.similarity < params.identity_min_similarity:
                oc.rejects.append(
                    Reject(
                        first.path,
                        IDENTITY_MISMATCH,
                        f"no face is identity {ident!r}: the closest has similarity {s.similarity:.3f} "
                        f"< identity_min_similarity {params.identity_min_similarity:g}",
                        oc.identity,
                        first.required,
                        s.replace(image=None, data=None),
                    )
                )
                oc.samples = []
            elif params.reject_below is not None and s.similarity < params.reject_below:
                oc.rejects.append(
                    Reject(
                        s.path,
                        LABEL_NOISE,
                        f"similarity {s.similarity:.3f} to the other faces of {ident!r} < reject_below {params.reject_below:g}",
                        oc.identity,
                        s.required,
                        s.replace(image=None, data=None),
                    )
                )
                oc.samples = []
            elif s.similarity < params.flag_below:
                s.flag = FAR_FROM_IDENTITY


def face_choice_stages(det, cln, rec, stage, error):
    """Config validation of face choice: ``(detector, cleaner)`` stage configs after it.

    ``detector: {select: identity, identity_min_similarity, flag_below, reject_below}`` (the
    older spelling) moves to the clean stage: onto the config's ``clean:`` when it has one,
    else onto an ``identity`` cleaner that makes no other decision (``duplicates``,
    ``label_noise`` and ``mixed`` off), made with ``stage(kind, raw, loc)`` (config.py's
    stage builder); the detector keeps every face for the choice. A cleaner that chooses
    faces (``clean: {select: identity}``) after a detector has it keep every face: its
    ``select`` becomes ``all`` unless the config set another. ``error(loc, message)``
    reports what cannot be: no recognizer, the choice given in both places, a cleaner whose
    parameters have no face choice, a detector told to keep one face."""
    if det is not None and det.params.select == "identity":
        if rec is None:
            error(("detector", "select"), f"{det.where}: select: identity compares faces with a recognition model: "
                  "add 'recognizer: {plugin: onnx, model: ...}'")
            return det, cln
        moved = {k: getattr(det.params, k) for k in FACE_CHOICE_KEYS}
        if cln is None:
            off = {"duplicates": "ignore", "label_noise": "ignore", "mixed": "ignore"}
            return det, stage("cleaner", {"plugin": "identity", **off, **moved}, ("detector", "select"))
        if not isinstance(cln.params, FaceChoiceParams):
            error(("detector", "select"), f"{det.where}: select: identity runs in the clean stage, but the parameters "
                  f"of {cln.where} have no face choice (they do not extend facekit.CleanerParams)")
        elif set(FACE_CHOICE_KEYS) & cln.params.model_fields_set:
            error(("detector", "select"), f"{det.where}: select: identity is also set on {cln.where}: give it once, "
                  "on clean (detector: {select: identity} is its older spelling)")
        else:
            cln = cln.with_params(**moved)
        return det, cln
    if cln is not None and isinstance(cln.params, FaceChoiceParams) and cln.params.chooses_faces and det is not None:
        if "select" in det.params.model_fields_set and det.params.select != "all":
            error(("detector", "select"), f"{det.where}: select: {det.params.select} keeps one face per photo, but "
                  f"{cln.where} chooses among them (select: identity): remove the detector's select or say all")
        else:
            det = det.with_params(select="all")
    return det, cln
