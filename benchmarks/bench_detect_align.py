"""Detect + align + write: facekit vs the insightface loop vs pure onnxruntime (issue 13).

    python benchmarks/bench_detect_align.py [--rounds 3] [--copies 3] [--max-load 2.5]
    python benchmarks/bench_detect_align.py --rss [--counts 1000,50000,1000000]
    python benchmarks/bench_detect_align.py --decode [--rounds 5]
    python benchmarks/bench_detect_align.py --reduced

Photos: the shared ``images/`` tree (``../shared/data`` or ``FACEKIT_TEST_DATA``: identities,
group, negatives, edge cases), each used ``--copies`` times (the original, a horizontally
flipped re-encode, the original again under another name): about 330 images in identity
folders. Every peer runs in a fresh Python process per round (imports untimed: each peer's
own libraries, facekit's plugins included, facekit's modules compiled to bytecode as an
installed package has them; model load and everything after it timed), peers interleaved
within a round, rounds repeated; the load average is printed before each round. Peers, all
on the defaults of their libraries (same thread budget: onnxruntime's and OpenCV's default
of one thread per core):

- ``insightface``: ``get_model(scrfd)``, ``prepare(ctx_id=-1, input_size=(640, 640))``;
  per image ``cv2.imread``, ``detect``, for a miss pad 50% and retry (same small-face
  guard as facekit), largest-central face, ``norm_crop`` (112), ``cv2.imencode`` (JPEG 95),
  file written to ``<identity>/``. Two orders: *detect then pad* (the usual loop: a tight
  150 px chip costs two inferences, a miss and the padded retry) and *chips padded first*
  (facekit's order, :func:`insightface_face_pad_first`: a tight chip is padded before its
  first detection, so the loop runs exactly as many inferences as facekit; the like-for-like
  peer, and the headline);
- ``onnxruntime``: the floor: session creation plus ``session.run`` on exactly the
  letterboxed inputs facekit feeds its detector for these images (recorded beforehand), on
  one session with onnxruntime's default threads, and again on a one-thread session per
  core, each on its own thread (the parallelism of facekit's default executor);
- ``facekit``: ``facekit run`` (in process): ``folders`` source -> ``retinaface`` (the same
  SCRFD, its default ``threads: 0``) -> ``arcface`` -> ``folders`` sink, with the default
  executor (``threads``: a shard worker thread per core, one onnxruntime/OpenCV thread
  each), ``workers: 0`` (``inprocess``: shards one at a time in this process, the
  libraries' default threads) and ``workers: 2`` (``executor: {plugin: processes,
  workers: 2}``: two spawned workers, one onnxruntime/OpenCV thread each by default).

``--rss``: peak RSS (``ru_maxrss`` of a child process) of packing N synthetic records with
the pass-through packer (``folders`` -> ``mxrec``, no detector: hard links to a few aligned
crops under distinct names), then of reading them back (``FaceRecDataset`` over every
record, and ``mxrec`` -> ``folders``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import MIN_FACE, PAD, PAD_MIN_FACE, REPO, data_root, insightface_face

DATA = data_root()
MODEL = DATA / "models" / "detection" / "scrfd_500m_bnkps.onnx"


# ---------------------------------------------------------------- the photo tree


def make_tree(root: Path, copies: int) -> int:
    import cv2

    n = 0
    for p in sorted((DATA / "images").rglob("*")):
        if not p.is_file() or p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
            continue
        rel = p.relative_to(DATA / "images")
        ident = "_".join(rel.parts[:-1]) if rel.parts[0] == "identities" else rel.parts[0]
        d = root / ident
        d.mkdir(parents=True, exist_ok=True)
        for k in range(copies):
            dst = d / f"{p.stem}_c{k}{p.suffix}"
            if k % 2 == 0:
                os.symlink(p, dst)
            else:
                img = cv2.imread(str(p), cv2.IMREAD_COLOR)
                params = [int(cv2.IMWRITE_JPEG_QUALITY), 95] if p.suffix.lower() != ".png" else []
                cv2.imwrite(str(dst), cv2.flip(img, 1), params)
            n += 1
    return n


def tree_files(root: Path) -> list[Path]:
    return sorted(f for d in sorted(root.iterdir()) for f in sorted(d.iterdir()))


# ---------------------------------------------------------------- peers (child processes)


#: facekit's tight-chip rule (facekit.vision.detection: CHIP_MAX_SIDE, CHIP_MAX_ASPECT,
#: CHIP_MIN_INSIDE), written out here as a user's loop would: no facekit import in this peer
CHIP_MAX_SIDE, CHIP_MAX_ASPECT, CHIP_MIN_INSIDE = 224, 1.25, 0.5


def _largest_central(boxes, kps, h: int, w: int):
    """The tail of :func:`insightface_face`: faces of at least ``MIN_FACE`` px, then the
    largest-central one's landmarks (None when none is left)."""
    import numpy as np

    if len(boxes):
        side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        boxes, kps = boxes[side >= MIN_FACE], kps[side >= MIN_FACE]
    if len(boxes) == 0:
        return None
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 - w // 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 - h // 2
    return kps[int(np.argmax(area - 2.0 * (cx * cx + cy * cy)))]


def insightface_face_pad_first(det, img, input_size=(640, 640)):
    """:func:`insightface_face` in facekit's order: an image that is a tight face chip
    (longer side at most ``CHIP_MAX_SIDE`` px, aspect at most ``CHIP_MAX_ASPECT``) is padded
    ``PAD`` on each side *before* its first detection; its faces spanning ``PAD_MIN_FACE`` of
    the chip and lying at least ``CHIP_MIN_INSIDE`` inside it are taken, else the chip is
    detected unpadded, whose faces win if there are any (else the padded ones stand). Any
    other image: :func:`insightface_face` (detect, then pad on a miss).

    Returns ``(landmarks or None, inferences)``, as :func:`insightface_face`.
    """
    import cv2
    import numpy as np

    h, w = img.shape[:2]
    lo, hi = min(h, w), max(h, w)
    if not (0 < hi <= CHIP_MAX_SIDE and hi <= CHIP_MAX_ASPECT * lo):
        return insightface_face(det, img, input_size)
    dy, dx = int(round(h * PAD)), int(round(w * PAD))
    padded = cv2.copyMakeBorder(img, dy, dy, dx, dx, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    boxes, kps = det.detect(padded, input_size=input_size)
    inferences = 1
    if len(boxes):
        boxes = boxes - np.array([dx, dy, dx, dy, 0], np.float32)
        kps = kps - np.array([dx, dy], np.float32)
        side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        boxes, kps = boxes[side >= PAD_MIN_FACE * lo], kps[side >= PAD_MIN_FACE * lo]
    # the fraction of each box inside the chip
    iw = np.clip(np.minimum(boxes[:, 2], w) - np.maximum(boxes[:, 0], 0), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], h) - np.maximum(boxes[:, 1], 0), 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = np.where(area > 0, iw * ih / np.where(area > 0, area, 1), 0) >= CHIP_MIN_INSIDE
    if inside.any():
        boxes, kps = boxes[inside], kps[inside]
    else:  # not clear-cut: the unpadded pass decides; if it finds nothing, the padded faces stand
        b2, k2 = det.detect(img, input_size=input_size)
        inferences += 1
        if len(b2):
            boxes, kps = b2, k2
    return _largest_central(boxes, kps, h, w), inferences


def peer_insightface(root: Path, out: Path, pad_first: bool = False) -> dict:
    """The insightface loop (see the module docstring); ``pad_first``: tight chips padded
    before their first detection (:func:`insightface_face_pad_first`)."""
    import cv2
    from insightface.model_zoo import get_model
    from insightface.utils.face_align import norm_crop

    face = insightface_face_pad_first if pad_first else insightface_face

    files = tree_files(root)
    t0 = time.perf_counter()
    det = get_model(str(MODEL))
    det.prepare(ctx_id=-1, input_size=(640, 640))
    t_load = time.perf_counter() - t0
    crops = inferences = 0
    for f in files:
        img = cv2.imread(str(f))
        if img is None:
            continue
        kps, n_inf = face(det, img)
        inferences += n_inf
        if kps is None:
            continue
        crop = norm_crop(img, kps, 112)
        ok, buf = cv2.imencode(".jpg", crop, [int(cv2.IMWRITE_JPEG_QUALITY), 95])
        d = out / f.parent.name
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{f.stem}_0.jpg").write_bytes(buf.tobytes())
        crops += 1
    return {"load_s": t_load, "total_s": time.perf_counter() - t0, "crops": crops, "inferences": inferences}


def _facekit_detector(threads: int = 0):
    from facekit.plugins import get_registry

    cls = get_registry().get("detector", "retinaface")
    return cls(cls.Params(model=str(MODEL), threads=threads))


def record_feeds(root: Path, feeds_path: Path) -> int:
    """The letterboxed inputs facekit's detector runs on for these photos (its rules)."""
    import numpy as np

    from facekit.errors import SampleRejected
    from facekit.vision.images import decode_image

    det = _facekit_detector()
    sess = det.model.session
    name = sess.get_inputs()[0].name
    feeds = []
    run = sess.run

    def recording(names, feed, *a, **k):
        feeds.append(feed[name])
        return run(names, feed, *a, **k)

    sess.run = recording
    for f in tree_files(root):
        try:
            det.find_faces(decode_image(f.read_bytes()))
        except SampleRejected:
            pass
    np.save(feeds_path, np.concatenate(feeds))
    return len(feeds)


def peer_onnxruntime(feeds_path: Path, per_core: bool = False) -> dict:
    """The floor: one session on onnxruntime's default threads, images one at a time; or
    (``per_core``) a one-thread session per core, each on its own thread taking every
    N-th image (the parallelism facekit's default executor uses)."""
    import threading

    import numpy as np

    from facekit.pipeline import usable_cores
    from facekit.vision.onnxdet import make_session

    feeds = np.load(feeds_path)
    n = usable_cores() if per_core else 1
    t0 = time.perf_counter()
    sessions = [make_session(MODEL, 1 if per_core else 0, input_hw=feeds.shape[2:]) for _ in range(n)]
    t_load = time.perf_counter() - t0
    name = sessions[0].get_inputs()[0].name

    def infer(k: int) -> None:
        for i in range(k, len(feeds), n):
            sessions[k].run(None, {name: feeds[i : i + 1]})

    threads = [threading.Thread(target=infer, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"load_s": t_load, "total_s": time.perf_counter() - t0, "inferences": len(feeds)}


def peer_facekit(root: Path, out: Path, executor: str) -> dict:
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run

    cfg = out.parent / f"pipeline-{out.name}.yaml"
    cfg.write_text(
        f"output: {out}\n"
        f"{executor}\n"
        f"source: {{plugin: folders, root: {root}, min_images: 1}}\n"
        f"detector: {{plugin: retinaface, model: {MODEL}}}\n"
        "aligner: {plugin: arcface}\n"
        "sinks: [{plugin: folders, path: faces}]\n"
    )
    t0 = time.perf_counter()
    s = run(load_config(cfg), progress=False)
    return {"total_s": time.perf_counter() - t0, "crops": s.faces_kept}


DEF, W0, W2 = "facekit default (threads)", "facekit workers: 0", "facekit workers: 2"
FLOOR_PC = "onnxruntime (floor, a 1-thread session per core)"
IF_LFL = "insightface loop, chips padded first (like for like)"
IF_DTP = "insightface loop, detect then pad"
PEERS = {
    IF_LFL: ["insightface", "pad-first"],
    IF_DTP: ["insightface"],
    "onnxruntime (floor)": ["onnxruntime"],
    FLOOR_PC: ["onnxruntime", "per-core"],
    DEF: ["facekit", ""],
    W0: ["facekit", "workers: 0"],
    W2: ["facekit", "workers: 2"],
}


#: what each peer imports before its timer starts: its own libraries (the insightface loop
#: imports the ``insightface`` package, which brings onnx, onnxruntime and OpenCV, at the
#: top of :func:`peer_insightface`; facekit imports its plugins and libraries lazily)
UNTIMED_IMPORTS = {
    "insightface": ("cv2", "insightface.model_zoo"),
    "onnxruntime": ("onnx", "onnxruntime"),
    # facekit first: its import picks Arrow's allocator, which must precede pyarrow's import
    "facekit": ("facekit", "cv2", "onnx", "onnxruntime", "PIL.Image", "simplejpeg", "pyarrow.parquet"),
}


def untimed_imports(kind: str) -> None:
    """Import what peer ``kind`` needs before its timer starts (and facekit's plugins)."""
    import importlib

    for m in UNTIMED_IMPORTS[kind]:
        importlib.import_module(m)
    if kind == "facekit":
        from facekit.plugins import get_registry

        get_registry()


def child(argv: list[str]) -> None:
    kind, root, out = argv[0], Path(argv[1]), Path(argv[2])
    untimed_imports(kind)
    if kind == "insightface":
        r = peer_insightface(root, out, pad_first=argv[3:] == ["pad-first"])
    elif kind == "onnxruntime":
        r = peer_onnxruntime(Path(argv[3]), per_core=argv[4:] == ["per-core"])
    else:
        r = peer_facekit(root, out, argv[3])
    print("RESULT " + json.dumps(r))


def run_child(args: list[str]) -> dict:
    p = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"peer {args[0]} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")


def wait_for_load(max_load: float, max_wait: float) -> float:
    """Wait (polling every 10 s, at most ``max_wait`` s) until the 1-minute load average is
    below ``max_load`` (0: no wait); returns the seconds waited. On a machine shared with
    other jobs this starts each round in a quieter moment; the load is still printed."""
    t0 = time.monotonic()
    while max_load > 0 and os.getloadavg()[0] >= max_load and time.monotonic() - t0 < max_wait:
        time.sleep(10)
    return time.monotonic() - t0 if max_load > 0 else 0.0


def bench(a) -> None:
    import platform

    import cv2
    import onnxruntime

    # facekit's modules as an installed package has them (pip compiles them to bytecode; an
    # editable install under PYTHONDONTWRITEBYTECODE would compile them in every timed run)
    if subprocess.run([sys.executable, "-m", "compileall", "-q", "facekit", "plugins"], cwd=REPO).returncode:
        print("warning: facekit's modules could not all be compiled (a read-only checkout?): its timed runs "
              "include compiling them", flush=True)
    with tempfile.TemporaryDirectory(prefix="facekit-bench-") as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        n = make_tree(root, a.copies)
        feeds = tmp / "feeds.npy"
        n_inf = record_feeds(root, feeds)
        print(
            f"{n} images ({a.copies} copies of the shared photos), facekit needs {n_inf} inferences; "
            f"{os.cpu_count()} cores; python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, "
            f"OpenCV {cv2.__version__}",
            flush=True,
        )
        times: dict[str, list[float]] = {k: [] for k in PEERS}
        info: dict[str, dict] = {}
        for r in range(a.rounds):
            waited = wait_for_load(a.max_load, a.max_wait)
            print(f"round {r + 1}: load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
                  + (f" (waited {waited:.0f} s for it to fall below {a.max_load:g})" if waited >= 1 else ""), flush=True)
            order = list(PEERS) if r % 2 == 0 else list(reversed(PEERS))  # interleaved
            for name in order:
                out = tmp / f"out{len(info)}{r}{order.index(name)}"
                args = PEERS[name]
                extra = [str(feeds), *args[1:]] if args[0] == "onnxruntime" else args[1:]
                res = run_child([args[0], str(root), str(out), *extra])
                shutil.rmtree(out, ignore_errors=True)
                times[name].append(res["total_s"])
                info[name] = res
                print(f"  {name}: {res['total_s']:.2f} s {json.dumps(res)}", flush=True)
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
        report(times, info, n, n_inf)


def report(times: dict[str, list[float]], info: dict[str, dict], n: int, n_inf: int) -> None:
    """The table (medians), the inference counts, and the ratios: of the medians, with the
    median of the per-round ratios in brackets, then every round's ratio (the peers of a
    round run back to back under the same load: a per-round ratio is what the interleaving
    makes usable)."""
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med[IF_LFL]
    print(f"| peer | crops | inferences | median (s) | best (s) | per image | vs {IF_LFL} | vs {IF_DTP} |")
    print("|---|---|---|---|---|---|---|---|")
    for k, v in times.items():
        i = info[k]
        inferences = i.get("inferences", n_inf if PEERS[k][0] == "facekit" else "-")  # facekit's: recorded
        print(
            f"| {k} | {i.get('crops', '-')} | {inferences} | {med[k]:.2f} | {min(v):.2f} | "
            f"{med[k] / n * 1e3:.1f} ms | {base / med[k]:.2f}x | {med[IF_DTP] / med[k]:.2f}x |"
        )
    same = info[IF_LFL]["inferences"] == n_inf
    crops = ", ".join(f"{k} {info[k]['crops']}" for k in times if "crops" in info[k])
    print(
        f"\ninferences: facekit {n_inf} (its detector's inputs, recorded), {IF_LFL} {info[IF_LFL]['inferences']} "
        f"({'equal' if same else 'NOT EQUAL: not like for like'}), {IF_DTP} {info[IF_DTP]['inferences']}; "
        f"crops: {crops}"
    )

    def paired(num: str, den: str) -> list[float]:
        """Per-round ratios ``den time / num time``: how many times faster ``num`` is."""
        return [y / x for x, y in zip(times[num], times[den])]

    checks = [
        (DEF, IF_LFL, "faster"), (DEF, IF_DTP, "faster"), (W0, IF_LFL, "faster"), (W2, IF_LFL, "faster"),
        (IF_LFL, IF_DTP, "faster"), ("onnxruntime (floor)", DEF, "the time"), (FLOOR_PC, DEF, "the time"),
        (W2, W0, "faster"), (DEF, W0, "faster"),
    ]
    print("\nratio of the medians [median of the per-round ratios]; then each round's ratio")
    for a, b, how in checks:
        r = paired(a, b)
        if how == "faster":
            head = f"{a} vs {b}: {med[b] / med[a]:.2f}x faster [{statistics.median(r):.2f}x]"
        else:  # b's time over a's (a floor): how many times the floor's time b takes
            head = f"{b} / {a}: {med[b] / med[a]:.2f}x the time [{statistics.median(r):.2f}x]"
        print(f"{head}; rounds: {' '.join(f'{x:.2f}' for x in r)}")


# ---------------------------------------------------------------- decode only


def decode(a) -> None:
    """Per-image decode time: facekit's fast path, its Pillow path (the old decode_image),
    ``cv2.imdecode``; every JPEG of the shared photos, interleaved rounds."""
    import cv2
    import numpy as np

    from facekit.vision import images

    datas = [p.read_bytes() for p in sorted((DATA / "images").rglob("*.jpg"))]
    peers = {
        "facekit decode_image (libjpeg-turbo, simplejpeg)": images.decode_image,
        "Pillow + exif_transpose + BGR copy (the old path)": images._decode_pil,
        "cv2.imdecode(IMREAD_COLOR)": lambda d: cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR),
    }
    times: dict[str, list[float]] = {k: [] for k in peers}
    print(f"{len(datas)} JPEGs; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for _ in range(a.rounds):
        for k, fn in peers.items():
            t = time.perf_counter()
            for d in datas:
                fn(d)
            times[k].append((time.perf_counter() - t) / len(datas) * 1e3)
    print("| decoder | median ms/image | best |\n|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {statistics.median(v):.2f} | {min(v):.2f} |")


# ---------------------------------------------------------------- reduced-scale decode


def reduced(a) -> None:
    """Reduced-scale JPEG decode on the shared photos at least twice the detector input:
    decode time (full vs 1/k), detection on the 1/k decode against the full decode, and the
    aligned crop from the 1/k pixels against the crop from the full decode (same
    landmarks: the full path's), and the full path's crop with the 1/k path's landmarks."""
    import cv2
    import numpy as np

    from facekit.errors import SampleRejected
    from facekit.vision.align import estimate_norm, norm_crop
    from facekit.vision.detection import find_faces
    from facekit.vision.images import decode_image, decode_image_reduced

    det = _facekit_detector()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        "| photo | size | k | decode full / 1/k (ms, best of 5) | landmarks max diff (px, % of face) | score diff "
        "| crop from 1/k pixels: max / mean | full crop, 1/k landmarks: max / mean |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for p in sorted((DATA / "images").rglob("*.jpg")):
        data = p.read_bytes()
        small, k = decode_image_reduced(data, 640)
        if k == 1:
            continue
        tf, tr = [], []
        for _ in range(5):
            t = time.perf_counter()
            full = decode_image(data)
            tf.append(time.perf_counter() - t)
            t = time.perf_counter()
            decode_image_reduced(data, 640)
            tr.append(time.perf_counter() - t)
        try:
            F, R = find_faces(det, full), find_faces(det, small)
        except SampleRejected as e:
            print(f"| {p.name} | {full.shape[1]}x{full.shape[0]} | {k} | {min(tf) * 1e3:.1f} / {min(tr) * 1e3:.1f} | {e} | | | |")
            continue
        lf, lr = F.landmarks[0], R.landmarks[0] * k
        side = float(min(F.boxes[0, 2] - F.boxes[0, 0], F.boxes[0, 3] - F.boxes[0, 1]))
        dl = float(np.abs(lr - lf).max())
        ref = norm_crop(full, lf).astype(np.int16)
        M = estimate_norm(lf) @ np.array([[k, 0, (k - 1) / 2], [0, k, (k - 1) / 2], [0, 0, 1.0]])
        d1 = np.abs(cv2.warpAffine(small, M, (112, 112), borderValue=0.0) - ref)
        d2 = np.abs(norm_crop(full, lr) - ref)
        print(
            f"| {p.name} | {full.shape[1]}x{full.shape[0]} | {k} | {min(tf) * 1e3:.1f} / {min(tr) * 1e3:.1f} | "
            f"{dl:.2f} ({100 * dl / side:.1f}%) | {float(R.scores[0] - F.scores[0]):+.4f} | {d1.max()} / {d1.mean():.2f} | "
            f"{d2.max()} / {d2.mean():.2f} |",
            flush=True,
        )


# ---------------------------------------------------------------- peak RSS


_RSS_CHILD = r"""
import resource, sys, time
from pathlib import Path
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
mode, cfg = sys.argv[1], sys.argv[2]
t = time.perf_counter()
if mode == "dataset":
    from facekit.torch import FaceRecDataset
    ds = FaceRecDataset(sys.argv[3])
    n = 0
    for i in range(len(ds)):
        ds[i]
        n += 1
else:
    s = run(load_config(cfg), progress=False)
    n = s.faces_kept
print("RESULT", n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t)
"""


def rss(a) -> None:
    crops = sorted((DATA / "aligned_112").rglob("*.jpg"))[:8]
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| records | pack peak RSS | pack time | FaceRecDataset read peak RSS | read time | rec -> folders peak RSS | time |")
    print("|---|---|---|---|---|---|---|")
    peaks: dict[str, list[float]] = {"pack": [], "FaceRecDataset": [], "rec -> folders": []}
    base = Path(a.tmp) if a.tmp else None
    for count in [int(c) for c in a.counts.split(",")]:
        with tempfile.TemporaryDirectory(prefix="facekit-rss-", dir=base) as tmp:
            tmp = Path(tmp)
            root = tmp / "root"
            per_id, srcs = 50, {}
            for i in range(count):
                d = root / f"id{i // per_id:06d}"
                if i % per_id == 0:
                    d.mkdir(parents=True)
                key = (i % len(crops), i // 400_000)  # at most 50k links a file (ext4: 65000)
                if key not in srcs:
                    srcs[key] = tmp / f"src{key[0]}_{key[1]}.jpg"
                    shutil.copyfile(crops[key[0]], srcs[key])
                os.link(srcs[key], d / f"{i:07d}.jpg")
            cfg = tmp / "pack.yaml"
            cfg.write_text(f"output: {tmp / 'out'}\nsource: {{plugin: folders, root: {root}}}\nsinks: [{{plugin: mxrec, path: rec}}]\n")
            unpack = tmp / "unpack.yaml"
            unpack.write_text(
                f"output: {tmp / 'out2'}\nsource: {{plugin: mxrec, path: {tmp / 'out' / 'rec'}}}\n"
                "sinks: [{plugin: folders, path: faces}]\n"
            )
            res = []
            for mode, c in (("pack", cfg), ("dataset", cfg), ("unpack", unpack)):
                if mode not in a.modes.split(","):
                    res.append((float("nan"), float("nan")))
                    continue
                extra = [str(tmp / "out" / "rec")] if mode == "dataset" else []
                p = subprocess.run([sys.executable, "-c", _RSS_CHILD, mode, str(c), *extra], capture_output=True, text=True)
                line = [l for l in p.stdout.splitlines() if l.startswith("RESULT")]
                if not line:
                    raise SystemExit(f"{mode} {count} failed: {p.stderr[-3000:]}")
                _, n, kb, secs = line[0].split()
                assert int(n) == count, (mode, n, count)
                res.append((int(kb) / 1024, float(secs)))
                print(f"  {count:,} {mode}: peak RSS {int(kb) / 1024:.0f} MiB, {float(secs):.1f} s", file=sys.stderr, flush=True)
                if mode == "pack":
                    shutil.rmtree(root)  # the tree's directory entries are not needed any more
            for name, (mib, _) in zip(peaks, res):
                peaks[name].append(mib)
            print(
                f"| {count:,} | {res[0][0]:.0f} MiB | {res[0][1]:.1f} s | {res[1][0]:.0f} MiB | {res[1][1]:.1f} s | "
                f"{res[2][0]:.0f} MiB | {res[2][1]:.1f} s |",
                flush=True,
            )
    for name, v in peaks.items():
        v = [x for x in v if x == x]
        if len(v) > 1:
            spread = max(v) / min(v) - 1
            verdict = "within 10%" if spread <= 0.10 else "NOT within 10%"
            print(f"{name}: peak RSS {min(v):.0f} .. {max(v):.0f} MiB: +{100 * spread:.1f}% ({verdict})")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--max-load", type=float, default=0.0,
                    help="before each round wait for the 1-minute load average to fall below this (0: do not wait)")
    ap.add_argument("--max-wait", type=float, default=900.0, help="the longest wait for --max-load, seconds")
    ap.add_argument("--decode", action="store_true", help="decode time only")
    ap.add_argument("--reduced", action="store_true", help="reduced-scale JPEG decode: time, detections, crops")
    ap.add_argument("--rss", action="store_true", help="peak RSS of packing / reading N synthetic records")
    ap.add_argument("--counts", default="1000,50000,1000000")
    ap.add_argument("--modes", default="pack,dataset,unpack", help="which --rss measurements")
    ap.add_argument("--tmp", default=None, help="folder for the synthetic trees (--rss)")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    (rss if a.rss else reduced if a.reduced else decode if a.decode else bench)(a)


if __name__ == "__main__":
    main()
