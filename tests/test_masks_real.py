"""The mask renderer on the real faces: the shared aligned faces (template landmarks) and
faces detected (SCRFD) and aligned (ArcFace) from the shared identity photos, each checked
against its own aligned landmarks; and the shared MobileFaceNet still recognises the
masked faces."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from conftest import write_config

from facekit.vision.align import template_for
from facekit.stages import Sample


def _decode(data, flag=cv2.IMREAD_COLOR):
    return cv2.imdecode(np.frombuffer(data, np.uint8), flag)


@pytest.fixture(scope="module")
def real_faces(tmp_path_factory, data_dir, scrfd_model):
    """``[(identity, clean_jpeg, aligned_landmarks, occlusion)]`` for every face of the
    identity photos (detect -> align -> facemask, in process) and the eight aligned faces."""
    from facekit.pipeline.config import load_config
    from facekit.pipeline.worker import ShardWorker

    tmp = tmp_path_factory.mktemp("real")
    (tmp / "root").mkdir()
    cfg = write_config(tmp, f"""
        output: out
        source: {{plugin: folders, root: root}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        aligner: {{plugin: arcface}}
        augmenters: [{{plugin: facemask, seed: 0}}]
        sinks: [{{plugin: masked_rec, path: rec}}]
        """)
    w = ShardWorker(load_config(cfg))
    faces = []
    root = data_dir / "images" / "identities"
    key = 0
    for ident in sorted(os.listdir(root)):
        for f in sorted(os.listdir(root / ident)):
            out = w.process([Sample(key, str(root / ident / f), ident)])[0]
            key += 1
            for s in out.samples:
                faces.append((ident, s.data, s.aligned_landmarks, s.occlusion))
    cfg2 = write_config(tmp, """
        output: out2
        source: {plugin: folders, root: root}
        augmenters: [{plugin: facemask, seed: 0}]
        sinks: [{plugin: masked_rec, path: rec}]
        """, "b.yaml")
    w2 = ShardWorker(load_config(cfg2))
    aligned = []
    for p in sorted((data_dir / "aligned_112").glob("*.jpg")):
        (s,) = w2.process([Sample(key, str(p), p.stem.rsplit("_", 1)[0])])[0].samples
        key += 1
        aligned.append((s.identity, s.data, None, s.occlusion))
    return faces, aligned


def _geometry(items):
    bad = []
    cover = []
    for ident, _, lmk, occ in items:
        lmk = template_for(112) if lmk is None else lmk
        m = _decode(occ.mask, cv2.IMREAD_UNCHANGED)
        at = lambda i: m[int(round(lmk[i, 1])), int(round(lmk[i, 0]))]  # noqa: E731
        covered = (m == 0).mean()
        cover.append(covered)
        if not (at(2) == 0 and at(3) == 0 and at(4) == 0 and at(0) == 255 and at(1) == 255 and 0.2 <= covered <= 0.45):
            bad.append((ident, occ.kind, [int(at(i)) for i in range(5)], round(covered, 3)))
    return bad, cover


def test_real_faces_mask_covers_nose_and_mouth_not_eyes(real_faces):
    faces, aligned = real_faces
    assert len(faces) >= 85 and len(aligned) == 8
    for items in (faces, aligned):
        bad, cover = _geometry(items)
        print(f"{len(items)} faces: coverage {min(cover):.3f}..{max(cover):.3f} (mean {np.mean(cover):.3f}); off: {bad}")
        assert not bad


def test_recognition_still_finds_the_masked_identity(real_faces, rec_model):
    """Masked probe vs the clean faces: its own identity's faces score above the other
    identities' on most (genuine, impostor) pairs, and the nearest clean face (itself
    excluded) is of its identity for most probes. Clean probes are the baseline."""
    from facekit.eval.recognition import OnnxEmbedder

    faces, _ = real_faces
    emb = OnnxEmbedder(rec_model)
    idents = np.array([f[0] for f in faces])
    multi = np.array([(idents == i).sum() > 1 for i in idents])

    def embed(blobs):
        e, ef = emb.embed_encoded(blobs)
        e = e + ef
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    clean = embed([f[1] for f in faces])
    masked = embed([f[3].data for f in faces])
    results = {}
    for name, probes in (("clean", clean), ("masked", masked)):
        sims = probes @ clean.T
        wins = total = rank1 = n = 0
        for i in np.nonzero(multi)[0]:
            same = (idents == idents[i]) & (np.arange(len(faces)) != i)
            other = idents != idents[i]
            g, im = sims[i, same], sims[i, other]
            wins += int((g[:, None] > im[None, :]).sum())
            total += g.size * im.size
            s = sims[i].copy()
            s[i] = -np.inf
            rank1 += bool(same[int(np.argmax(s))])
            n += 1
        results[name] = (wins / total, rank1 / n, n)
    print(
        "MobileFaceNet, {n} probes: pair order genuine > impostor: clean {c0:.4f}, masked {m0:.4f}; "
        "rank-1: clean {c1:.3f}, masked {m1:.3f}".format(
            n=results["masked"][2], c0=results["clean"][0], m0=results["masked"][0], c1=results["clean"][1], m1=results["masked"][1]
        )
    )
    assert results["masked"][0] > 0.9
    assert results["masked"][1] > 0.7
