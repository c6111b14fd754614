"""MTCNN: facekit's ``mtcnn`` detector (onnxruntime) vs the ``mtcnn`` 1.0.0 package (TensorFlow).

    python benchmarks/bench_mtcnn.py [--threads 2] [--rounds 3] [--limit N] [--baseline DIR]

Both detect faces in the same decoded photos (every image under ``../shared/data/images``
or ``$FACEKIT_TEST_DATA/images``, decoded once here and handed over as ``.npy``): facekit
through its plugin (``detect``, BGR in), the package as its users call it
(``MTCNN().detect_faces(rgb)`` in a loop). Each side runs in its own long-lived process
(the package in the isolated TensorFlow env, ``FACEKIT_MTCNN_TF_PYTHON``, default
``.ci-venv-mtcnn-tf/bin/python``, made by ``.ci/mtcnn-tf-env.sh``) with the same thread
budget: onnxruntime intra-op ``--threads``, inter-op 1; TensorFlow intra-op ``--threads``,
inter-op 1. Rounds are interleaved (package, facekit, package, ...) over the whole photo
set after one warm-up image; the table gives the best and the median round (wall clock),
the CPU time of the best-CPU round (all threads of the process) and the ratios; the ratio of
each package round to the facekit round after it is printed too (the machine's load moves
both alike within a pair). Progress goes to stderr.
Start-up (fresh process: imports + model build + first image) is measured apart.
``--baseline DIR`` adds a third peer, "facekit baseline": the same worker with ``DIR`` first
on its ``PYTHONPATH``, DIR holding another version's ``facekit_plugins`` package (e.g.
``mkdir -p DIR/facekit_plugins && git archive COMMIT plugins | tar -x --strip-components=1
-C DIR/facekit_plugins``), to compare two versions under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}

WORKER = {
    "facekit": """
        import sys, time, json, numpy as np
        t0 = time.perf_counter()
        from facekit.plugins import get_registry
        cls = get_registry().get("detector", "mtcnn")
        det = cls(cls.Params(select="all", threads=THREADS))
        print("facekit detector from", sys.modules[cls.__module__].__file__, file=sys.stderr)
        def detect(rgb):
            return len(det.detect(rgb[:, :, ::-1]))
    """,
    "mtcnn package": """
        import os, sys, time, json, numpy as np
        t0 = time.perf_counter()
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        from mtcnn import MTCNN
        det = MTCNN()
        def detect(rgb):
            return len(det.detect_faces(rgb))
    """,
}
LOOP = """
    folder, n = sys.argv[1], int(sys.argv[2])
    images = [np.load(f"{folder}/{i}.npy") for i in range(n)]
    detect(images[0])
    print(json.dumps({"startup": time.perf_counter() - t0}), flush=True)
    for line in sys.stdin:
        t, c = time.perf_counter(), time.process_time()
        faces = sum(detect(im) for im in images)
        r = {"seconds": time.perf_counter() - t, "cpu": time.process_time() - c, "faces": faces}
        print(json.dumps(r), flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="first N photos only (0: all)")
    ap.add_argument("--baseline", help="a folder holding another version's facekit_plugins package")
    args = ap.parse_args()
    data = Path(os.environ.get("FACEKIT_TEST_DATA", REPO.parent / "shared" / "data"))
    tf_python = os.environ.get("FACEKIT_MTCNN_TF_PYTHON", str(REPO / ".ci-venv-mtcnn-tf" / "bin" / "python"))
    paths = sorted(p for p in (data / "images").rglob("*") if p.suffix.lower() in SUFFIXES)
    if args.limit:
        paths = paths[: args.limit]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        pixels = 0
        for i, p in enumerate(paths):
            bgr = cv2.imread(str(p))
            pixels += bgr.shape[0] * bgr.shape[1]
            np.save(f"{tmp}/{i}.npy", np.ascontiguousarray(bgr[:, :, ::-1]))
        procs = {}
        peers = [("mtcnn package", tf_python, env), ("facekit", sys.executable, env)]
        if args.baseline:
            path = os.pathsep.join(filter(None, [str(Path(args.baseline).resolve()), env.get("PYTHONPATH")]))
            peers.insert(1, ("facekit baseline", sys.executable, dict(env, PYTHONPATH=path)))
        for name, python, peer_env in peers:
            worker = WORKER["facekit" if name.startswith("facekit") else name]
            code = textwrap.dedent(worker).replace("THREADS", str(args.threads)) + textwrap.dedent(LOOP)
            p = subprocess.Popen(
                [python, "-c", code, tmp, str(len(paths))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=peer_env,
            )
            procs[name] = (p, json.loads(p.stdout.readline())["startup"])
        rounds = {name: [] for name in procs}
        cpu = {name: [] for name in procs}
        faces = {}
        for i in range(args.rounds):
            for name, (p, _) in procs.items():
                p.stdin.write("go\n")
                p.stdin.flush()
                r = json.loads(p.stdout.readline())
                rounds[name].append(r["seconds"])
                cpu[name].append(r["cpu"])
                faces[name] = r["faces"]
                print(f"round {i + 1}: {name} {r['seconds']:.1f} s", file=sys.stderr, flush=True)
        for p, _ in procs.values():
            p.stdin.close()
            p.wait()
    n = len(paths)
    load = os.getloadavg()[0]
    print(
        f"{n} photos ({pixels / n / 1e6:.2f} Mpixel mean), {args.threads} threads, {args.rounds} interleaved rounds,"
        f" load average {load:.1f} at the end"
    )
    print()
    print(
        "| detector | faces | best round | median round | images/s (best) | CPU s (best) | start-up"
        " | vs package (best) | vs package (median) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    base, base_med = min(rounds["mtcnn package"]), statistics.median(rounds["mtcnn package"])
    for name, (_, startup) in procs.items():
        best, med = min(rounds[name]), statistics.median(rounds[name])
        print(
            f"| {name} | {faces[name]} | {best:.1f} s | {med:.1f} s | {n / best:.2f} | {min(cpu[name]):.1f} s"
            f" | {startup:.1f} s | {base / best:.2f}x | {base_med / med:.2f}x |"
        )
    print()
    print("all rounds (s):", json.dumps({k: [round(v, 2) for v in vs] for k, vs in rounds.items()}))
    for name in rounds:
        if name != "mtcnn package":
            pairs = [a / b for a, b in zip(rounds["mtcnn package"], rounds[name])]
            print(f"per-round ratio (package / {name}):", json.dumps([round(r, 2) for r in pairs]))


if __name__ == "__main__":
    main()
