"""Engine benchmark (issue 9): detect + align + pack on ~300 real photos, peers side by side.

    python benchmarks/bench_engine.py [--repeats 3] [--images 300] [--data DIR] [--model PATH] [--ray]
    python benchmarks/bench_engine.py --driver 20000 [--repeats 3]

Photos: the shared ``images/identities`` tree (``--data``, else ``$FACEKIT_TEST_DATA``, else
``../shared/data`` beside the repo), its identity folders repeated under new identity names
(``<name>_r<k>``, symlinks in a temporary folder) until there are ``--images`` photos.
Every peer is a fresh process per repeat, timed by this script from its start to its exit
(imports, model load, the loop, the writes): images/s = images / that wall time. The peers
also time their own run (model load to the end; facekit: ``summary.json``'s ``seconds``),
shown as "in-run". One warm-up of every peer first (on a small tree: it also shows the
start-up cost), then ``--repeats`` rounds, peers interleaved (order reversed every other
round). Thread budgets are enforced with ``taskset`` (1 or 2 cores) and, in every process,
``OMP_NUM_THREADS``/``OPENCV_FOR_THREADS_NUM`` = the threads that process may use (plus
``cv2.setNumThreads`` and onnxruntime's ``intra_op_num_threads`` in the in-process peers).

Peers (same SCRFD model, 640x640 input, one face per image: the largest-central one):

- ``facekit``: the real CLI, ``facekit run CONFIG -o OUT -q``: ``folders`` -> ``retinaface``
  -> ``arcface`` (112) -> ``mxrec``; 1 worker process with ``threads: 1`` (1 core), 2 worker
  processes with ``threads: 1`` each (2 cores), 1 worker with ``threads: 2`` (2 cores). The
  worker count goes in ``executor: {plugin: processes, workers: N}`` (plus ``shard_size``)
  when the installed facekit accepts it (``facekit validate``), else ``-w N``.
- ``facekit on Ray`` (``--ray``, issue 10; needs ``pip install -e ".[ray]"``): the same
  CLI run with ``executor: {plugin: ray, workers: 2, threads: 1}``: 2 actors x 1 thread
  on a local 2-CPU Ray cluster that this script starts once (``ray start --head --block
  --num-cpus 2`` under the same ``taskset``; the run joins it with ``address:``, as on a real
  cluster), and a second peer that starts its own local Ray instance for the run (no
  ``address:``; the Ray start-up is in its time). Their rows compare them with ``facekit,
  2 workers x 1 thread`` (the ``processes`` executor; target >= 0.9x) and check that the
  outputs are the same bytes (``rec/``, ``rejects.tsv``, ``results.parquet``).
- ``insightface loop``: what a user writes today: ``model_zoo.get_model(scrfd,
  sess_options=...)``, ``prepare(ctx_id=-1, input_size=(640, 640))``, per image
  ``cv2.imread``, ``detect`` (pad 50% and retry on a miss, facekit's default rule, so tight
  chips are kept on both sides), ``norm_crop`` (112), ``cv2.imencode`` (JPEG 95), bytes
  appended to one pack file (RecordIO-like: data file + offsets); 1 thread on 1 core and 2
  threads on 2 cores.
- ``onnxruntime floor``: ``cv2.imread`` + letterbox to 640 + ``session.run``, one inference
  per image, nothing else: 1 process x 1 thread (1 core), and 2 processes x 1 thread, each
  on its own core, each on half of the images (the 2-core floor).

The table gives images/s (median of the repeats, min-max spread), then the checks: facekit
2 workers >= 1.8x facekit 1 worker, facekit ahead of the insightface loop at the same budget,
facekit's overhead above the floor (ratios taken per repeat, then the median), and the
sanity row (every peer keeps the same number of faces).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import REPO, data_root, insightface_face

JPEG_QUALITY = 95  # facekit's encode.quality default
INPUT = 640
EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Peer:
    name: str
    kind: str  # facekit | insightface | floor
    cores: int  # taskset budget
    threads: int  # onnxruntime/OpenCV threads per process
    procs: int = 1  # facekit workers / floor processes


PEERS = [
    Peer("facekit, 1 worker x 1 thread", "facekit", 1, 1, 1),
    Peer("facekit, 2 workers x 1 thread", "facekit", 2, 1, 2),
    Peer("facekit, 1 worker x 2 threads", "facekit", 2, 2, 1),
    Peer("insightface loop, 1 thread", "insightface", 1, 1),
    Peer("insightface loop, 2 threads", "insightface", 2, 2),
    Peer("onnxruntime floor, 1 process x 1 thread", "floor", 1, 1, 1),
    Peer("onnxruntime floor, 2 processes x 1 thread", "floor", 2, 1, 2),
]
#: the ray executor (--ray): joining a running local 2-CPU cluster, and starting its own Ray
RAY_PEERS = [
    Peer("facekit on Ray, 2 actors x 1 thread, joins a 2-CPU cluster", "ray", 2, 1, 2),
    Peer("facekit on Ray, 2 actors x 1 thread, starts its own Ray", "ray-local", 2, 1, 2),
]
#: the processes peer the Ray peers are compared with
RAY_BASE = "facekit, 2 workers x 1 thread"


# ---------------------------------------------------------------- the photo tree


def make_tree(identities: Path, root: Path, n: int) -> int:
    """Symlink the identity folders' photos under ``root``, repeated under new identity names
    (``<name>_r<k>``), until ``n`` photos (the last identity may be cut short). Returns the
    number of photos."""
    dirs = sorted(d for d in identities.iterdir() if d.is_dir())
    src = [(d.name, sorted(f for f in d.iterdir() if f.suffix.lower() in EXTS)) for d in dirs]
    if not any(files for _, files in src):
        raise SystemExit(f"{identities}: no photos in identity folders")
    count, k = 0, 0
    while count < n:
        for name, files in src:
            take = files[: n - count]
            if not take:
                continue
            d = root / f"{name}_r{k}"
            d.mkdir(parents=True)
            for f in take:
                os.symlink(f, d / f.name)
            count += len(take)
            if count >= n:
                break
        k += 1
    return count


def tree_files(root: Path) -> list[Path]:
    return sorted(f for d in sorted(root.iterdir()) for f in sorted(d.iterdir()))


# ---------------------------------------------------------------- facekit config


def facekit_config(
    root: Path, model: Path, workers: int, threads: int, style: str, shard_size: int, executor: str = ""
) -> tuple[str, list[str]]:
    """The pipeline YAML and the extra ``facekit run`` arguments for one facekit peer.

    ``style``: ``"cli"`` (``-w N``), ``"executor"`` (``executor: {plugin: processes,
    workers: N}``), ``"executor+shard"`` (and ``shard_size`` at the top level) or
    ``"executor.shard"`` (``shard_size`` inside ``executor``). ``executor``: an executor
    mapping to use instead (the Ray peers), with ``shard_size`` at the top level. The output
    folder is given with ``-o``.
    """
    lines = [
        "output: out",
        f"source: {{plugin: folders, root: {json.dumps(str(root))}, min_images: 1}}",
        f"detector: {{plugin: retinaface, model: {json.dumps(str(model))}, input_size: {INPUT}, threads: {threads}}}",
        "aligner: {plugin: arcface, size: 112}",
        f"encode: {{quality: {JPEG_QUALITY}}}",
        "sinks: [{plugin: mxrec, path: rec}]",
    ]
    if executor:
        return "\n".join([*lines, f"executor: {executor}", f"shard_size: {shard_size}"]) + "\n", []
    if style == "cli":
        return "\n".join(lines) + "\n", ["-w", str(workers)]
    executor = f"plugin: processes, workers: {workers}"
    if style == "executor.shard":
        executor += f", shard_size: {shard_size}"
    lines.append(f"executor: {{{executor}}}")
    if style == "executor+shard":
        lines.append(f"shard_size: {shard_size}")
    return "\n".join(lines) + "\n", []


def facekit_bin() -> list[str]:
    exe = Path(sys.executable).with_name("facekit")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("facekit")
    if not found:
        raise SystemExit("facekit is not installed (pip install -e .)")
    return [found]


def config_style(tmp: Path, root: Path, model: Path, shard_size: int) -> str:
    """The first config style the installed facekit validates (executor plugins if it has
    them, else the ``-w`` option)."""
    for style in ("executor+shard", "executor.shard", "executor", "cli"):
        text, _ = facekit_config(root, model, 2, 1, style, shard_size)
        cfg = tmp / f"probe-{style}.yaml"
        cfg.write_text(text)
        p = subprocess.run([*facekit_bin(), "validate", str(cfg)], capture_output=True, text=True)
        if p.returncode == 0:
            return style
        if style == "cli":
            raise SystemExit(f"facekit validate rejects the benchmark config:\n{p.stdout}{p.stderr}")
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- in-process peers (children)


def _threads(n: int) -> None:
    import cv2

    cv2.setNumThreads(n)


def _session_options(threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def peer_insightface(root: Path, out: Path, model: Path, threads: int) -> dict:
    """The loop a user writes with insightface: detect, norm_crop, imencode, append."""
    import cv2
    from insightface.model_zoo import get_model
    from insightface.utils.face_align import norm_crop

    _threads(threads)
    files = tree_files(root)
    t0 = time.perf_counter()
    det = get_model(str(model), providers=["CPUExecutionProvider"], sess_options=_session_options(threads))
    det.prepare(ctx_id=-1, input_size=(INPUT, INPUT))
    faces = inferences = 0
    offsets = []
    with open(out / "faces.pack", "wb") as pack:
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                continue
            kps, n = insightface_face(det, img, (INPUT, INPUT))
            inferences += n
            if kps is None:
                continue
            crop = norm_crop(img, kps, 112)
            ok, buf = cv2.imencode(".jpg", crop, [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY])
            offsets.append(f"{faces}\t{pack.tell()}\t{f.parent.name}\n")
            pack.write(buf.tobytes())
            faces += 1
    (out / "faces.idx").write_text("".join(offsets))
    return {"faces": faces, "inferences": inferences, "run_s": time.perf_counter() - t0}


def _fixed_input_model(model: Path) -> bytes:
    """The model with its input fixed to 1x3x640x640 (as facekit and insightface 2.x run it)."""
    import onnx

    m = onnx.load_model(str(model))
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (1, 3, INPUT, INPUT)):
        d.ClearField("dim_param")
        d.dim_value = v
    return m.SerializeToString()


def _decode(data: bytes):
    """BGR pixels: libjpeg-turbo (``simplejpeg``, the fastest decoder at hand) for a JPEG,
    ``cv2.imdecode`` otherwise (the floor's decode; EXIF orientation ignored)."""
    import cv2
    import numpy as np

    try:
        import simplejpeg

        if simplejpeg.is_jpeg(data):
            return simplejpeg.decode_jpeg(data, "BGR")
    except ImportError:
        pass
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def peer_floor(root: Path, model: Path, threads: int, part: int, parts: int) -> dict:
    """Decode (:func:`_decode`) + letterbox to 640 (top-left, as insightface) +
    ``session.run``; every ``parts``-th image from ``part``."""
    import cv2
    import numpy as np
    import onnxruntime as ort

    _threads(threads)
    files = tree_files(root)[part::parts]
    t0 = time.perf_counter()
    sess = ort.InferenceSession(_fixed_input_model(model), _session_options(threads), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    canvas = np.zeros((INPUT, INPUT, 3), np.uint8)
    for f in files:
        img = _decode(f.read_bytes())
        h, w = img.shape[:2]
        scale = INPUT / max(h, w)
        nw, nh = int(w * scale), int(h * scale)
        canvas[:] = 0
        canvas[:nh, :nw] = cv2.resize(img, (nw, nh))
        blob = cv2.dnn.blobFromImage(canvas, 1.0 / 128, (INPUT, INPUT), (127.5, 127.5, 127.5), swapRB=True)
        sess.run(None, {name: blob})
    return {"inferences": len(files), "run_s": time.perf_counter() - t0}


def child(argv: list[str]) -> None:
    kind, root, out, model, threads = argv[0], Path(argv[1]), Path(argv[2]), Path(argv[3]), int(argv[4])
    if kind == "insightface":
        r = peer_insightface(root, out, model, threads)
    else:
        r = peer_floor(root, model, threads, int(argv[5]), int(argv[6]))
    print("RESULT " + json.dumps(r), flush=True)


# ---------------------------------------------------------------- running a peer


def _cpus(n: int, first: int = 0) -> str:
    avail = sorted(os.sched_getaffinity(0))
    if len(avail) < first + n:
        raise SystemExit(f"this benchmark needs {first + n} cores; this process may use {len(avail)}")
    return ",".join(str(c) for c in avail[first : first + n])


def _env(threads: int) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
        env[k] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    return env


def _result(p: subprocess.Popen, what: str) -> dict:
    stdout, stderr = p.communicate()
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{what} failed (exit {p.returncode}):\n{stdout[-2000:]}\n{stderr[-4000:]}")


def _digest(out: Path) -> str:
    """sha256 of a facekit run's outputs: every file of ``rec/``, ``rejects.tsv``, ``results.parquet``."""
    import hashlib

    h = hashlib.sha256()
    files = sorted((out / "rec").rglob("*")) + [out / "rejects.tsv", out / "results.parquet"]
    for f in files:
        if f.is_file():
            h.update(f"{f.relative_to(out)}\0".encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def run_peer(peer: Peer, root: Path, work: Path, model: Path, style: str, shard_size: int, ray_address: str = "") -> dict:
    """Run ``peer`` once on ``root``; returns wall seconds, in-run seconds, faces, inferences
    (and, for facekit, a digest of its outputs)."""
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = _env(peer.threads)
    if peer.kind in ("facekit", "ray", "ray-local"):
        executor = ""
        if peer.kind == "ray":
            executor = f"{{plugin: ray, workers: {peer.procs}, threads: {peer.threads}, address: {json.dumps(ray_address)}}}"
        elif peer.kind == "ray-local":
            executor = f"{{plugin: ray, workers: {peer.procs}, threads: {peer.threads}}}"
        text, extra = facekit_config(root, model, peer.procs, peer.threads, style, shard_size, executor)
        cfg = work / "pipeline.yaml"
        cfg.write_text(text)
        cmd = ["taskset", "-c", _cpus(peer.cores), *facekit_bin(), "run", str(cfg), "-o", str(out), "-q", *extra]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"{peer.name} failed (exit {p.returncode}): {' '.join(cmd)}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
        s = json.loads((out / "summary.json").read_text())
        faces = s.get("faces_kept")
        if faces is None:  # another summary layout: the sink's own count
            faces = next((v.get("images") for v in s.get("sinks", {}).values() if isinstance(v, dict)), None)
        res = {"faces": faces, "run_s": s.get("seconds"), "digest": _digest(out)}
    else:
        me = [sys.executable, str(Path(__file__).resolve()), "--child"]
        args = [peer.kind, str(root), str(out), str(model), str(peer.threads)]
        parts = peer.procs if peer.kind == "floor" else 1

        def child_cmd(i: int) -> list[str]:  # several floor processes: one core each, a part each
            cpus = _cpus(1, i) if parts > 1 else _cpus(peer.cores)
            return ["taskset", "-c", cpus, *me, *args, *([str(i), str(parts)] if peer.kind == "floor" else [])]

        t0 = time.perf_counter()
        pipe = subprocess.PIPE
        procs = [subprocess.Popen(child_cmd(i), stdout=pipe, stderr=pipe, text=True, env=env) for i in range(parts)]
        rs = [_result(p, peer.name) for p in procs]
        wall = time.perf_counter() - t0
        res = {
            "faces": rs[0].get("faces"),
            "inferences": sum(r["inferences"] for r in rs),
            "run_s": max(r["run_s"] for r in rs),
        }
    shutil.rmtree(out, ignore_errors=True)
    return {"wall_s": wall, **res}


# ---------------------------------------------------------------- the report


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def report(n: int, runs: dict[str, list[dict]], warm: dict[str, dict]) -> None:
    rate = {k: [n / r["wall_s"] for r in v] for k, v in runs.items()}
    inrun = {k: [n / r["run_s"] for r in v if r.get("run_s")] for k, v in runs.items()}
    base = PEERS[0].name
    print("| peer | cores | faces | images/s (median) | spread (min-max) | in-run images/s | start-up (s) | vs facekit 1 worker |")
    print("|---|---|---|---|---|---|---|---|")
    for p in PEERS:
        v = rate[p.name]
        faces = runs[p.name][-1].get("faces")
        ir = f"{_med(inrun[p.name]):.1f}" if inrun[p.name] else "-"
        start = warm[p.name]["wall_s"] - (warm[p.name].get("run_s") or 0)
        print(
            f"| {p.name} | {p.cores} | {faces if faces is not None else '-'} | {_med(v):.1f} | {min(v):.1f}-{max(v):.1f} | "
            f"{ir} | {start:.2f} | {_med(v) / _med(rate[base]):.2f}x |"
        )

    def ratio(a: str, b: str, key: str) -> list[float]:  # per repeat: a's speed / b's speed
        return [rb[key] / ra[key] for ra, rb in zip(runs[a], runs[b]) if ra.get(key) and rb.get(key)]

    def cell(xs: list[float], pct: bool) -> str:
        if not xs:
            return "-"
        f = (lambda x: f"{(x - 1) * 100:+.0f}%") if pct else (lambda x: f"{x:.2f}x")
        return f"{f(_med(xs))} ({f(min(xs))} to {f(max(xs))})"

    names = [p.name for p in PEERS]
    fk1, fk2, fk1t2, if1, if2, fl1, fl2 = names
    checks = [
        ("facekit 2 workers / facekit 1 worker (1 thread each)", fk2, fk1, False, ">= 1.80x", lambda x: x >= 1.8),
        ("facekit 1 worker / insightface loop, 1 core", fk1, if1, False, "> 1.00x", lambda x: x > 1),
        ("facekit 2 workers / insightface loop 2 threads, 2 cores", fk2, if2, False, "> 1.00x", lambda x: x > 1),
        ("facekit 1 worker x 2 threads / insightface loop 2 threads", fk1t2, if2, False, "> 1.00x", lambda x: x > 1),
        ("the machine's parallelism: floor 2 processes / floor 1 process", fl2, fl1, False, "~2x if 2 cores free", None),
        ("facekit 1 worker: time above the 1-core floor", fl1, fk1, True, "report", None),
        ("facekit 2 workers: time above the 2-core floor", fl2, fk2, True, "report", None),
    ]
    print("\n| check (ratio per repeat: median (min to max)) | whole process | in-run | target | met |")
    print("|---|---|---|---|---|")
    for label, a, b, pct, target, ok in checks:
        # speed ratio a/b = time b / time a; overhead = time facekit / time floor - 1
        w, r = ratio(a, b, "wall_s"), ratio(a, b, "run_s")
        if ok is None or not w:
            met = "-"
        else:  # judged on the whole process and on the run alone (Python start-up left out)
            met = {(True, True): "yes", (False, True): "in-run only", (True, False): "whole only"}.get(
                (ok(_med(w)), bool(r) and ok(_med(r))), "no"
            )
        print(f"| {label} | {cell(w, pct)} | {cell(r, pct)} | {target} | {met} |")
    # facekit's 2-worker scaling measured against what the machine gave two plain processes
    sc = [a * b for a, b in zip(ratio(fk2, fk1, "wall_s"), ratio(fl1, fl2, "wall_s"))]
    met = "-" if not sc else ("yes" if _med(sc) >= 0.9 else "no")
    print(f"| facekit 2 workers / 1 worker, over the floor's 2 / 1 processes | {cell(sc, False)} | | >= 0.90x | {met} |")
    faces = {k: {r.get("faces") for r in v} - {None} for k, v in runs.items()}
    all_faces = set().union(*faces.values())
    print(
        f"| sanity: faces kept by every facekit and insightface run | {', '.join(map(str, sorted(all_faces)))} | | equal | "
        f"{'yes' if len(all_faces) == 1 else 'no'} |"
    )


def report_ray(n: int, runs: dict[str, list[dict]], warm: dict[str, dict]) -> None:
    """The Ray rows: each Ray peer against the ``processes`` executor's 2 workers."""
    rate = {k: [n / r["wall_s"] for r in v] for k, v in runs.items()}
    base = runs[RAY_BASE]
    print("| peer | cores | faces | images/s (median) | spread (min-max) | in-run images/s | start-up (s) | "
          "vs processes, 2 workers (per repeat: median (min to max)) | target | same bytes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in [next(q for q in PEERS if q.name == RAY_BASE), *RAY_PEERS]:
        if p.name not in runs:
            continue
        v, rs = rate[p.name], runs[p.name]
        inrun = [n / r["run_s"] for r in rs if r.get("run_s")]
        start = warm[p.name]["wall_s"] - (warm[p.name].get("run_s") or 0)
        ratios = [b["wall_s"] / r["wall_s"] for r, b in zip(rs, base)]
        same = {r.get("digest") for r in rs} == {b.get("digest") for b in base} and len({r.get("digest") for r in rs}) == 1
        target = ">= 0.90x" if p.kind == "ray" else ("-" if p.kind == "ray-local" else "1.00x")
        met = f" ({'met' if statistics.median(ratios) >= 0.9 else 'not met'})" if p.kind == "ray" else ""
        print(
            f"| {p.name} | {p.cores} | {rs[-1].get('faces')} | {_med(v):.1f} | {min(v):.1f}-{max(v):.1f} | "
            f"{_med(inrun):.1f} | {start:.2f} | {_med(ratios):.2f}x ({min(ratios):.2f}x to {max(ratios):.2f}x) | "
            f"{target}{met} | {'yes' if same else 'NO'} |"
        )


def bench_driver(a) -> None:
    """``--driver N``: what the driver of a distributed run sustains. A pass-through run
    (no detector: ``folders`` -> ``mxrec``, in process) of N aligned 112x112 crops (the
    shared ``aligned_112/`` JPEGs linked under distinct names, 10 per identity) does the
    driver's whole share of a Ray run (shards through the work folder, identity gate,
    ``mxrec`` sink, ``rejects.tsv``, ``results.parquet``) plus reading and header-checking
    the files, which on a cluster the workers do: its faces/s is a lower bound of the rate
    at which one driver writes what the workers send. With and without the work folder
    (``resume: false``); ``--repeats`` runs each, median."""
    data = data_root(a.data)
    crops = sorted((data / "aligned_112").glob("*.jpg"))
    if not crops:
        raise SystemExit(f"{data / 'aligned_112'}: no aligned crops")
    with tempfile.TemporaryDirectory(prefix="facekit-bench-driver-") as tmp:
        tmp = Path(tmp)
        root = tmp / "crops"
        for i in range(a.driver):
            d = root / f"id{i // 10:06d}"
            d.mkdir(parents=True, exist_ok=True)
            os.symlink(crops[i % len(crops)], d / f"{i:08d}.jpg")
        mb = sum(crops[i % len(crops)].stat().st_size for i in range(a.driver)) / 1e6
        print(f"{a.driver} aligned crops ({mb:.0f} MB) in {a.driver // 10} identities; load average {_load()}", flush=True)
        print("| driver run (pass-through, in process) | faces/s (median) | MB/s | spread faces/s |")
        print("|---|---|---|---|")
        for resume in (True, False):
            rates = []
            for _ in range(a.repeats):
                out = tmp / "out"
                shutil.rmtree(out, ignore_errors=True)
                cfg = tmp / "driver.yaml"
                cfg.write_text(
                    f"output: {json.dumps(str(out))}\nresume: {str(resume).lower()}\n"
                    f"source: {{plugin: folders, root: {json.dumps(str(root))}, min_images: 1}}\n"
                    "sinks: [{plugin: mxrec, path: rec}]\n"
                )
                p = subprocess.run([*facekit_bin(), "run", "-q", str(cfg)], capture_output=True, text=True)
                if p.returncode != 0:
                    raise SystemExit(f"driver run failed:\n{p.stderr[-3000:]}")
                rates.append(a.driver / json.loads((out / "summary.json").read_text())["seconds"])
            what = "with the work folder (resume)" if resume else "resume: false"
            print(f"| {what} | {_med(rates):,.0f} | {_med(rates) * mb / a.driver:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} |", flush=True)


class RayCluster:
    """A local Ray head node with ``cores`` CPUs on ``taskset`` cores, for the joining Ray
    peer: ``ray start --head --block`` (it stops every process it started when terminated)."""

    def __init__(self, cores: int):
        self.cores = cores
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def __enter__(self) -> "RayCluster":
        import re
        import socket

        ray_bin = Path(sys.executable).with_name("ray")
        if not ray_bin.exists():
            raise SystemExit('--ray needs Ray: pip install -e ".[ray]"')
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="facekit-bench-ray-", suffix=".log")
        cmd = ["taskset", "-c", _cpus(self.cores), str(ray_bin), "start", "--head", "--block", f"--port={port}",
               f"--num-cpus={self.cores}", "--include-dashboard=false", "--disable-usage-stats"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=_env(1))
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            text = Path(self.log.name).read_text()
            m = re.search(r"--address='([^']+)'", text)
            if m and "block forever" in text:
                self.address = m.group(1)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        self.__exit__()
        raise SystemExit(f"ray start failed:\n{Path(self.log.name).read_text()[-3000:]}")

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


# ---------------------------------------------------------------- main


def bench(a) -> None:
    import cv2
    import onnxruntime

    data = data_root(a.data)
    identities = data / "images" / "identities"
    model = Path(a.model) if a.model else data / "models" / "detection" / "scrfd_500m_bnkps.onnx"
    for p in (identities, model):
        if not p.exists():
            raise SystemExit(f"{p} not found (--data / $FACEKIT_TEST_DATA)")
    peers = [p for p in PEERS + (RAY_PEERS if a.ray else []) if not a.peers or any(s in p.name for s in a.peers.split(","))]
    if a.ray:
        # token authentication for the Ray cluster and every process joining it (the token
        # in ~/.ray/auth_token, made by the first Ray start)
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    with tempfile.TemporaryDirectory(prefix="facekit-bench-engine-") as tmp, contextlib.ExitStack() as stack:
        cluster = stack.enter_context(RayCluster(2)) if any(p.kind == "ray" for p in peers) else None
        address = cluster.address if cluster else ""
        tmp = Path(tmp)
        root, small = tmp / "photos", tmp / "warmup"
        n = make_tree(identities, root, a.images)
        make_tree(identities, small, min(a.images, 12))
        for f in tree_files(root):
            f.read_bytes()  # page cache
        style = config_style(tmp, root, model, a.shard_size)
        worker_how = {"cli": "`-w N`"}.get(style, f"`executor: {{plugin: processes, workers: N}}` ({style}, shard_size {a.shard_size})")
        print(
            f"{n} photos ({len(list(root.iterdir()))} identities) from {identities.name}/, model {model.name} at {INPUT}x{INPUT}; "
            f"facekit workers via {worker_how}; {os.cpu_count()} cores; python {platform.python_version()}, "
            f"onnxruntime {onnxruntime.__version__}, OpenCV {cv2.__version__}",
            flush=True,
        )
        warm = {}
        for p in peers:
            warm[p.name] = run_peer(p, small, tmp / "work", model, style, a.shard_size, address)
            print(f"  warm-up {p.name}: {json.dumps(warm[p.name])}", flush=True)
        runs: dict[str, list[dict]] = {p.name: [] for p in peers}
        for r in range(a.repeats):
            print(f"repeat {r + 1}: load average {_load()}", flush=True)
            for p in peers if r % 2 == 0 else list(reversed(peers)):
                res = run_peer(p, root, tmp / "work", model, style, a.shard_size, address)
                runs[p.name].append(res)
                print(f"  {p.name}: {n / res['wall_s']:.1f} images/s {json.dumps(res)}", flush=True)
        print(f"load average after: {_load()}\n", flush=True)
    if all(p in peers for p in PEERS):
        report(n, runs, warm)
    if RAY_BASE in runs and any(p in peers for p in RAY_PEERS):
        print()
        report_ray(n, runs, warm)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=300, help="photos in the benchmark tree (default 300)")
    ap.add_argument("--data", default=None, help="test material folder (default $FACEKIT_TEST_DATA or ../shared/data)")
    ap.add_argument("--model", default=None, help="SCRFD .onnx (default <data>/models/detection/scrfd_500m_bnkps.onnx)")
    ap.add_argument("--shard-size", type=int, default=24, help="facekit shard_size when the executor config exists")
    ap.add_argument("--peers", default=None, help="comma-separated substrings: run only the matching peers (no report)")
    ap.add_argument("--ray", action="store_true", help="add the Ray executor peers (issue 10; needs the ray extra)")
    ap.add_argument("--driver", type=int, default=0, metavar="N", help="only measure the driver's write rate on N aligned crops")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    bench_driver(a) if a.driver else bench(a)


if __name__ == "__main__":
    main()
