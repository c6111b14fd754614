"""Embedding already aligned crops: facekit's whole run against onnxruntime inference alone.

The issue 26 target: ``mxrec`` source -> ``onnx`` recognizer -> ``embeddings`` sink (decode,
batching, the results table and the Parquet parts included) within 1.2x the time of the
recognition model alone on onnxruntime, at the same batch size and threads.

- ``onnxruntime alone``: the crops decoded and normalised beforehand (untimed), then only
  ``session.run`` on batches of ``--batch``, one session with ``--threads`` intra-op threads.
- ``facekit run``: the pipeline in this process (``workers: 0``, the recognizer's
  ``threads`` and ``batch`` the same), timed from :func:`facekit.pipeline.engine.run` to its
  return: decode, embed, write, publish.

Both use the same model session type (the shared MobileFaceNet, exported with a batch of 1,
made batchable by facekit's rewrite for both peers). Rounds are interleaved (A B, B A, ...)
and repeated; the table gives the median and each round's ratio.

    python benchmarks/bench_embed.py [--rounds 5] [--batch 64] [--threads 1] [--images 2298]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import data_root  # noqa: E402

KZ = "aligned_identities/kz_celebs_112"
MODEL = "models/recognition/photo_analyze_mobilefacenet_128d.onnx"


def _pack(data: Path, work: Path, images: int) -> Path:
    """The first ``images`` shared 112x112 crops packed into ``work/packed/rec`` (untimed)."""
    import os

    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run

    files = sorted((data / KZ).glob("*/*.png"))[:images]
    for f in files:
        (work / "crops" / f.parent.name).mkdir(parents=True, exist_ok=True)
        os.symlink(f, work / "crops" / f.parent.name / f.name)
    (work / "pack.yaml").write_text(
        "output: packed\nsource: {plugin: folders, root: crops, min_images: 1}\nsinks: [{plugin: mxrec, path: rec}]\n"
    )
    run(load_config(work / "pack.yaml"), progress=False)
    return work / "packed" / "rec"


def _ort_alone(model: Path, rec: Path, batch: int, threads: int):
    """A timer of onnxruntime alone on the rec's crops, decoded and normalised beforehand."""
    import numpy as np

    from facekit.eval.recognition import OnnxEmbedder
    from facekit.formats import FaceRec
    from facekit.vision.images import decode_image

    m = OnnxEmbedder(model, threads=threads, rebatch=True)
    fr = FaceRec(rec)
    crops = np.stack([m.prepare(decode_image(img)) for _, _, img in fr])
    fr.close()
    x = m.to_tensor(crops)
    name = m.session.get_inputs()[0].name

    def once() -> float:
        t0 = time.perf_counter()
        for i in range(0, len(x), batch):
            m.session.run(None, {name: x[i : i + batch]})
        return time.perf_counter() - t0

    return once, len(x), m.rebatched


def _facekit(model: Path, rec: Path, work: Path, batch: int, threads: int):
    """A timer of the whole facekit run (mxrec -> onnx recognizer -> embeddings sink)."""
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run

    cfg = work / "embed.yaml"
    cfg.write_text(
        f"output: out\nworkers: 0\nsource: {{plugin: mxrec, path: {rec}}}\n"
        f"recognizer: {{plugin: onnx, model: {model}, batch: {batch}, threads: {threads}}}\n"
        "sinks: [{plugin: embeddings, path: emb}]\n"
    )

    def once() -> float:
        shutil.rmtree(work / "out", ignore_errors=True)
        spec = load_config(cfg)
        t0 = time.perf_counter()
        s = run(spec, progress=False)
        dt = time.perf_counter() - t0
        assert s.faces_kept > 0
        return dt

    return once


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=2298)
    ap.add_argument("--data", help="the shared test material (default ../shared/data)")
    a = ap.parse_args()
    data = data_root(a.data)
    if not (data / KZ).is_dir():
        sys.exit(f"bench_embed: {data / KZ} is missing (the shared test material)")
    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    try:
        rec = _pack(data, work, a.images)
        model = data / MODEL
        ort_once, n, rebatched = _ort_alone(model, rec, a.batch, a.threads)
        fk_once = _facekit(model, rec, work, a.batch, a.threads)
        ort_once(), fk_once()  # warm-up: page cache, first-call allocations
        rows = []
        for r in range(a.rounds):
            order = [("ort", ort_once), ("facekit", fk_once)]
            times = dict((name, f()) for name, f in (order if r % 2 == 0 else order[::-1]))
            rows.append(times)
        ort_t = [t["ort"] for t in rows]
        fk_t = [t["facekit"] for t in rows]
        ratios = [t["facekit"] / t["ort"] for t in rows]
        print(f"embedding {n} aligned 112x112 crops, batch {a.batch}, {a.threads} thread(s), "
              f"model made batchable: {rebatched}, {a.rounds} interleaved rounds")
        print(f"{'peer':<40} {'median s':>9} {'faces/s':>8}  per round (s)")
        print(f"{'onnxruntime alone (session.run only)':<40} {statistics.median(ort_t):9.3f} "
              f"{n / statistics.median(ort_t):8.0f}  " + " ".join(f"{t:.3f}" for t in ort_t))
        print(f"{'facekit run (decode, embed, write)':<40} {statistics.median(fk_t):9.3f} "
              f"{n / statistics.median(fk_t):8.0f}  " + " ".join(f"{t:.3f}" for t in fk_t))
        print(f"ratio facekit / onnxruntime: median {statistics.median(ratios):.3f}, per round "
              + " ".join(f"{x:.3f}" for x in ratios) + " (target <= 1.2)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
