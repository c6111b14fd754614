"""Face detectors side by side: facekit's ONNX decoders vs their references.

    python benchmarks/bench_detectors.py [--repeat 5] [--threads 1]

On the shared photos (``../shared/data`` or ``FACEKIT_TEST_DATA``: the group photos and
the first image of each identity), measures per-image ``detect`` time, interleaved (each
round runs every peer once over the same images, in turn) and repeated, for:

- SCRFD-500m and SCRFD-2.5g: facekit (``facekit.vision.scrfd.Scrfd``) vs insightface
  ``SCRFD.detect(img, input_size=(640, 640))`` (same results, see the tests);
- the RetinaFace-MobileNet0.25 export (facekit only: no reference decodes it);
- YuNet: facekit (onnxruntime) vs ``cv2.FaceDetectorYN`` on the same letterboxed input.

Both sides of a pair get the same thread count (onnxruntime intra-op threads /
``cv2.setNumThreads``). Prints a markdown table: median and best of the per-round means.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _photos(data: Path) -> list[np.ndarray]:
    files = sorted((data / "images" / "group").iterdir())
    files += [sorted(d.iterdir())[0] for d in sorted((data / "images" / "identities").iterdir())]
    return [cv2.imread(str(p)) for p in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    data = Path(os.environ.get("FACEKIT_TEST_DATA", REPO.parent / "shared" / "data"))
    det_dir = data / "models" / "detection"
    images = _photos(data)
    cv2.setNumThreads(a.threads)

    from facekit.vision.onnxdet import letterbox, session_options
    from facekit.vision.retinaface_onnx import RetinaFaceOnnx
    from facekit.vision.scrfd import Scrfd
    from facekit.vision.yunet import YuNet

    peers = {}
    for name in ("scrfd_500m_bnkps.onnx", "scrfd_2.5g_bnkps_dynamic.onnx"):
        path = det_dir / name
        mine = Scrfd(path, threads=a.threads)
        peers[f"{name} facekit"] = mine.detect
        try:
            import onnxruntime as ort
            from insightface.model_zoo.scrfd import SCRFD

            sess = ort.InferenceSession(str(path), session_options(a.threads), providers=["CPUExecutionProvider"])
            ref = SCRFD(model_file=str(path), session=sess)
            ref.prepare(0, input_size=(640, 640))
            peers[f"{name} insightface"] = lambda img, ref=ref: ref.detect(img, input_size=(640, 640))
        except ImportError:
            print("insightface not installed: no SCRFD reference", file=sys.stderr)
    rf = RetinaFaceOnnx(det_dir / "retinaface_mbnet0.25.onnx", threads=a.threads)
    peers["retinaface_mbnet0.25.onnx facekit"] = rf.detect
    yn_path = det_dir / "yunet_s_640_640.onnx"
    yn = YuNet(yn_path, threads=a.threads)
    peers["yunet_s_640_640.onnx facekit"] = yn.detect
    ocv = cv2.FaceDetectorYN.create(str(yn_path), "", (640, 640), 0.6, 0.3, 5000)
    peers["yunet_s_640_640.onnx cv2.FaceDetectorYN"] = lambda img: ocv.detect(letterbox(img, (640, 640))[0])

    for fn in peers.values():  # warm-up
        fn(images[0])
    rounds = {k: [] for k in peers}
    for _ in range(a.repeat):
        for k, fn in peers.items():
            t = time.perf_counter()
            for img in images:
                fn(img)
            rounds[k].append((time.perf_counter() - t) / len(images) * 1000)
    print(f"{len(images)} photos, {a.repeat} interleaved rounds, {a.threads} thread(s), {platform.processor() or platform.machine()}\n")
    print("| model | implementation | ms/image median | best |")
    print("|---|---|---|---|")
    for k, v in rounds.items():
        model, impl = k.split(" ", 1)
        print(f"| {model} | {impl} | {statistics.median(v):.1f} | {min(v):.1f} |")


if __name__ == "__main__":
    main()
