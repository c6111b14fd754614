"""Masked faces per second on one core: decode + render + encode both outputs.

    python benchmarks/bench_masks.py [--faces 2000] [--repeat 7]

The corpus: the shared aligned 112x112 faces (``../shared/data/aligned_112``, or
``FACEKIT_TEST_DATA``) repeated to ``--faces`` JPEGs. Pinned to one CPU
(``sched_setaffinity``), OpenCV single-threaded. Measured, interleaved, ``--repeat`` times
each (best and median reported):

- ``full``: per face ``cv2.imdecode`` of the clean JPEG, :meth:`MaskRenderer.render` (random
  style, seeded per face), JPEG q95 of the masked face and PNG of the mask: what the
  ``facemask`` augmenter does per face of an existing dataset (``configs/rec2masked.yaml``);
- each step alone (decode, render, encode JPEG, encode PNG), to see where the time goes;
- ``engine``: ``facekit.pipeline.engine.run`` of ``mxrec`` source -> ``facemask`` -> ``masked_rec``
  (``train: link``) in this process (``workers: 0``): the whole pipeline including record
  framing, idx, the key/label check and publication.

No peer: insightface's ``MaskRenderer`` (what MSML uses) needs the BFM model files, which
are not distributable, and a 68-point landmark model download.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facekit.vision.align import template_for  # noqa: E402
from facekit.vision.masks import MaskRenderer, encode_mask_png, seeded_rng  # noqa: E402


def corpus(n: int) -> list[bytes]:
    data = Path(os.environ.get("FACEKIT_TEST_DATA", REPO.parent / "shared" / "data"))
    files = sorted((data / "aligned_112").glob("*.jpg"))
    if not files:
        sys.exit(f"no aligned faces in {data / 'aligned_112'} (set FACEKIT_TEST_DATA)")
    blobs = [f.read_bytes() for f in files]
    return [blobs[i % len(blobs)] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    blobs = corpus(args.faces)
    r = MaskRenderer()
    t = template_for(112)
    imgs = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in blobs]
    results = [r.render(im, t, seeded_rng(0, i)) for i, im in enumerate(imgs)]

    def full():
        for i, b in enumerate(blobs):
            img = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
            res = r.render(img, t, seeded_rng(0, i))
            cv2.imencode(".jpg", res.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            encode_mask_png(res.mask)

    def decode():
        for b in blobs:
            cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)

    def render():
        for i, img in enumerate(imgs):
            r.render(img, t, seeded_rng(0, i))

    def enc_jpg():
        for res in results:
            cv2.imencode(".jpg", res.image, [cv2.IMWRITE_JPEG_QUALITY, 95])

    def enc_png():
        for res in results:
            encode_mask_png(res.mask)

    tmp = Path(tempfile.mkdtemp(prefix="bench-masks-"))
    src = tmp / "src"
    from facekit.formats.recordio import IndexedRecordIOWriter, IRHeader, pack

    src.mkdir()
    with IndexedRecordIOWriter(src / "train.idx", src / "train.rec") as w:
        n = len(blobs)
        per = 20
        ids = (n + per - 1) // per
        w.write_idx(0, pack(IRHeader(2, [float(n + 1), float(n + 1 + ids)], 0, 0), b""))
        for i, b in enumerate(blobs):
            w.write_idx(i + 1, pack(IRHeader(0, float(i // per), i + 1, 0), b))
        for j in range(ids):
            w.write_idx(n + 1 + j, pack(IRHeader(0, [float(1 + j * per), float(min(n, (j + 1) * per) + 1)], 0, 0), b""))
    (src / "property").write_text(f"{ids},112,112\n")
    cfg = tmp / "p.yaml"
    cfg.write_text(
        f"output: {tmp / 'out'}\nsource: {{plugin: mxrec, path: {src}, labels: keep, min_images: 1}}\n"
        "augmenters: [{plugin: facemask}]\nsinks: [{plugin: masked_rec, path: m, train: link}]\n"
    )
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run

    def engine():
        run(load_config(cfg), progress=False)

    cases = {"full": full, "decode": decode, "render": render, "encode JPEG q95": enc_jpg, "encode PNG": enc_png, "engine": engine}
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeat):
        for name, fn in cases.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    n = len(blobs)
    print(f"{n} faces 112x112, pinned to one core ({platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} while measuring), best / median of {args.repeat} interleaved runs\n")
    print("faces/s per core = faces / CPU seconds of this process (what one core does when it is not")
    print("shared); wall = faces / elapsed seconds (lower when other processes share the core)\n")
    print("| step | faces/s per core, best | median | wall faces/s, best | CPU ms/face |")
    print("|---|---|---|---|---|")
    for name in cases:
        b, m, wb = min(cpu[name]), statistics.median(cpu[name]), min(wall[name])
        print(f"| {name} | {n / b:,.0f} | {n / m:,.0f} | {n / wb:,.0f} | {b / n * 1e3:.3f} |")


if __name__ == "__main__":
    main()
