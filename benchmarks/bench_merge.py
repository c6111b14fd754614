"""Merge step at scale (issue 26 part 4): facekit.clean.merge on synthetic data, peers side by
side, every measurement a fresh process (its own peak RSS), interleaved rounds.

    python benchmarks/bench_merge.py [--rounds 3] [--threads 2]
        [--centres 10000,100000] [--images 100000,1000000] [--image-dims 128,512]

Cases (seeded; the data is made in the child before the clock starts, in float32 chunks):

- **centres**: N identity centres, 512-d float32, uniform on the sphere, plus N/100 planted
  near-duplicate pairs (cosine 0.85: one identity under two names); the merge step is
  ``merge_candidates(threshold=DEFAULT_MERGE_THRESHOLD)`` + ``merge_groups``. Peers:
  ``faiss-flat`` (exact, triangular blocks), ``faiss-ivf`` (approximate, float16 lists) and
  ``numpy``: a blocked matrix product (``X[lo:hi] @ X[lo:].T``, blocks of at most 64 MB,
  the upper triangle only, pairs by ``np.nonzero``), the exact answer a user writes by hand.
- **images**: M image embeddings in M/100 identities (image to its identity's centre
  cosine ~0.6, same-identity images ~0.36, as real crops with a small model), 128-d stored
  float32 or 512-d stored float16 (1M x 512 x 4 B = 2 GB would be half the memory goal by
  itself; the embeddings sink writes float16); M/1000 planted copies of an image under
  another identity (cosine 0.96-0.999) and as many copies inside the same identity (must not be
  reported); ``cross_identity_images(threshold=0.95)``: ``cells`` is its default (faiss
  spherical k-means cells above 20k images, BLAS products inside cells and their nprobe
  nearest), ``exact`` one cell (every pair, blocked BLAS; 128-d up to 100k images). The 1M
  cases run in the first ``--big-rounds`` rounds only (default 1: no peer to interleave).

Columns: wall time of the step (median, min-max over rounds), the child's peak RSS
(``ru_maxrss``: data included; ``data`` = the input's own size), pairs found, planted and
found-and-planted. Prints a markdown table.

Calibration of the merge threshold on real crops (``--calibrate WORKDIR``): the shared
``aligned_identities/kz_celebs_112`` (25 identities of loose 112x112 crops) re-detected
with SCRFD-500m and aligned with ``arcface`` by a facekit run into ``WORKDIR/out`` (skipped
when ``WORKDIR/out/aligned/label.txt`` exists), embedded with the shared MobileFaceNet
(cached in ``WORKDIR/embeddings.npz``); each identity split at random into two halves under
two names (10 seeds), all its crops or ``m`` per half; precision and recall of
``merge_candidates`` at each threshold, with the robust and the mean centre.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MB = 1 << 20


def _unit_chunks(rng, n, d, np, chunk=65536):
    for lo in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - lo), d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield lo, x


def _near(x, cos, rng, np):
    """Unit rows at exactly cosine ``cos`` (per row) from the unit rows ``x``."""
    u = rng.standard_normal(x.shape, dtype=np.float32)
    u -= np.einsum("ij,ij->i", u, x)[:, None] * x  # orthogonal to x
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    y = cos * x + np.sqrt(1 - cos * cos) * u
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def make_centres(n, d=512, seed=0):
    """``(x, planted)``: n unit rows, n/100 planted pairs ``(i < j)`` at cosine 0.85."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.empty((n, d), np.float32)
    for lo, c in _unit_chunks(rng, n, d, np):
        x[lo : lo + len(c)] = c
    p = max(1, n // 100)
    pick = rng.choice(n, 2 * p, replace=False)
    src, dst = pick[:p], pick[p:]
    x[dst] = _near(x[src], np.float32(0.85), rng, np)
    return x, {(int(min(a, b)), int(max(a, b))) for a, b in zip(src, dst)}


def make_images(m, d, dtype, seed=0, per_identity=100):
    """``(emb, owners, planted)``: m unit rows in m/per_identity identities; m/1000 copies
    of an image under another identity (planted, cosine 0.96-0.999) and m/1000 inside its
    own identity (not to be reported)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_id = max(2, m // per_identity)
    centres = next(_unit_chunks(rng, n_id, d, np, chunk=n_id))[1]
    owners = rng.integers(0, n_id, m).astype(np.int64)
    emb = np.empty((m, d), dtype)
    for lo, noise in _unit_chunks(rng, m, d, np):
        y = 0.6 * centres[owners[lo : lo + len(noise)]] + 0.8 * noise
        emb[lo : lo + len(noise)] = y / np.linalg.norm(y, axis=1, keepdims=True)
    p = max(1, m // 1000)
    pick = rng.choice(m, 4 * p, replace=False)
    src, dst, src2, dst2 = pick[:p], pick[p : 2 * p], pick[2 * p : 3 * p], pick[3 * p :]
    ok = owners[src] != owners[dst]
    src, dst = src[ok], dst[ok]
    owners[dst2] = owners[src2]  # same-identity copies: dst2 moves into src2's identity
    for s, t in ((src, dst), (src2, dst2)):
        cos = rng.uniform(0.96, 0.999, (len(s), 1)).astype(np.float32)
        emb[t] = _near(emb[s].astype(np.float32), cos, rng, np)
    return emb, owners, {(int(min(a, b)), int(max(a, b))) for a, b in zip(src, dst)}


def numpy_pairs(x, threshold, block_bytes=64 * MB):
    """Exact pairs ``i < j`` with ``x_i . x_j >= threshold``: blocked upper triangle."""
    import numpy as np

    n = len(x)
    b = max(32, block_bytes // (4 * n))
    out = []
    for lo in range(0, n, b):
        s = x[lo : lo + b] @ x[lo:].T
        i, j = np.nonzero(s >= np.float32(threshold))
        keep = j > i
        out.append(np.stack([i[keep] + lo, j[keep] + lo], 1))
    return np.concatenate(out)


def _child(args) -> dict:
    import numpy as np

    from facekit.clean import merge

    kind, size, peer, threads, dim = args.child, args.size, args.peer, args.threads, args.dim
    if kind == "centres":
        x, planted = make_centres(size)
        data = x.nbytes
    else:
        x, owners, planted = make_images(size, dim, np.float16 if dim >= 512 else np.float32)
        data = x.nbytes + owners.nbytes
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    if peer == "numpy":
        if kind != "centres":
            raise SystemExit("numpy peer: centres only")
        p = numpy_pairs(x, merge.DEFAULT_MERGE_THRESHOLD)
        found = {(int(a), int(b)) for a, b in p}
        extra = {}
    elif kind == "centres":
        p = merge.merge_candidates(x, None, merge.DEFAULT_MERGE_THRESHOLD, threads=threads, index=peer.split("-")[1])
        groups = merge.merge_groups(p, x)
        found = set(zip(p.i.tolist(), p.j.tolist()))
        extra = {"groups": len(groups), "flagged": sum(g.flagged for g in groups), "saturated": len(p.saturated)}
    else:
        c = merge.cross_identity_images(x, owners, 0.95, threads=threads, nlist=1 if peer == "exact" else None)
        found = set(zip(c.a.tolist(), c.b.tolist()))
        extra = {"saturated": len(c.saturated)}
    dt = time.perf_counter() - t0
    return {
        "seconds": dt,
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_data": rss_data,
        "data": data,
        "found": len(found),
        "planted": len(planted),
        "hit": len(found & planted),
        **extra,
    }


ALIGN_YAML = """\
output: {out}
source: {{plugin: folders, root: {root}}}
detector: {{plugin: retinaface, model: {model}}}
aligner: {{plugin: arcface, size: 112}}
sinks:
  - {{plugin: folders, path: aligned}}
"""


def _kz_embeddings(work: Path, data: Path):
    """``(emb (n, 128) unit rows, labels (n,))`` of the re-aligned kz_celebs_112 crops."""
    import numpy as np

    cache = work / "embeddings.npz"
    if cache.exists():
        z = np.load(cache)
        return z["emb"], z["labels"]
    aligned = work / "out" / "aligned"
    if not (aligned / "label.txt").exists():
        from facekit.pipeline.config import load_config
        from facekit.pipeline.engine import run

        work.mkdir(parents=True, exist_ok=True)
        cfg = work / "align.yaml"
        cfg.write_text(ALIGN_YAML.format(
            out=work / "out", root=data / "aligned_identities" / "kz_celebs_112",
            model=data / "models" / "detection" / "scrfd_500m_bnkps.onnx"))
        run(load_config(cfg), progress=False)
    from facekit.eval.recognition import OnnxEmbedder

    rows = [ln.split("\t") for ln in (aligned / "label.txt").read_text().splitlines()]
    model = OnnxEmbedder(data / "models" / "recognition" / "photo_analyze_mobilefacenet_128d.onnx")
    emb = np.concatenate([
        model.embed_encoded([(aligned / r[1]).read_bytes() for r in rows[lo : lo + 64]], flip=False)[0]
        for lo in range(0, len(rows), 64)
    ])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels = np.array([int(r[2]) for r in rows])
    np.savez(cache, emb=emb, labels=labels)
    return emb, labels


def calibrate(work: Path, seeds: int = 10) -> None:
    """Print the merge-threshold calibration tables (see the module docstring)."""
    import numpy as np

    from facekit.clean import merge

    sys.path.insert(0, str(REPO / "benchmarks"))
    from _common import data_root

    emb, labels = _kz_embeddings(work, data_root())
    ids = np.unique(labels)
    ts = [0.60, 0.65, 0.70, 0.72, 0.75, 0.78, 0.80, 0.85]
    print(f"{len(emb)} crops, {len(ids)} identities; each split in two halves, {seeds} seeds "
          f"({len(ids)} true pairs and {len(ids) * (2 * len(ids) - 2)} different-person pairs a seed)\n")
    print("| centre | images per half | " + " | ".join(f"{t:.2f}" for t in ts)
          + " | same person: lowest | different people: highest |")
    print("|---|---|" + "---|" * len(ts) + "---|---|")
    for m in (0, 20, 10, 5):
        for name, fn in (("robust", None), ("mean", merge.mean_centre)):
            hits = {t: [0, 0] for t in ts}
            pos, neg = [], []
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                items = []
                for i in ids:
                    idx = rng.permutation(np.flatnonzero(labels == i))
                    a, b = (idx[:m], idx[m : 2 * m]) if m else (idx[: len(idx) // 2], idx[len(idx) // 2 :])
                    items += [((0, int(i)), emb[a]), ((1, int(i)), emb[b])]
                cs = merge.identity_centres(items, centre=fn)
                for t in ts:
                    p = merge.merge_candidates(cs.centres, cs.keys, t)
                    hits[t][0] += sum(a[1] == b[1] for a, b, _ in p.rows())
                    hits[t][1] += len(p)
                sim = cs.centres @ cs.centres.T
                same = np.equal.outer(np.arange(len(items)) // 2, np.arange(len(items)) // 2)
                upper = np.triu(np.ones_like(same), 1)
                pos.append(sim[same & upper].min())
                neg.append(sim[~same & upper].max())
            cells = [f"P {h[0] / max(h[1], 1):.3f} R {h[0] / (len(ids) * seeds):.3f}" for h in hits.values()]
            print(f"| {name} | {m or 'all (half)'} | " + " | ".join(cells)
                  + f" | {min(pos):.3f} | {max(neg):.3f} |")


def _run(kind, size, peer, threads, dim) -> dict:
    t = str(threads)
    env = dict(os.environ, OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, MKL_NUM_THREADS=t)
    cmd = [sys.executable, __file__, "--child", kind, "--size", str(size), "--peer", peer]
    cmd += ["--threads", t, "--dim", str(dim)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _fmt_n(n):
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--centres", default="10000,100000")
    ap.add_argument("--images", default="100000,1000000")
    ap.add_argument("--image-dims", default="128,512")
    ap.add_argument("--big-rounds", type=int, default=1, help="rounds that run the 1M-image cases (no peer)")
    ap.add_argument("--calibrate", metavar="WORKDIR", help="merge threshold on kz_celebs_112 (see above)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--child", choices=["centres", "images"])
    ap.add_argument("--size", type=int)
    ap.add_argument("--peer")
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args)))
        return
    if args.calibrate:
        calibrate(Path(args.calibrate), args.seeds)
        return
    cases = []
    for n in [int(v) for v in args.centres.split(",") if v]:
        cases += [("centres", n, 512, p) for p in ("faiss-flat", "faiss-ivf", "numpy")]
    for m in [int(v) for v in args.images.split(",") if v]:
        for d in [int(v) for v in args.image_dims.split(",") if v]:
            peers = ("cells", "exact") if m <= 100_000 and d <= 128 else ("cells",)
            cases += [("images", m, d, p) for p in peers]
    res: dict = {c: [] for c in cases}
    t_all = time.perf_counter()
    for r in range(args.rounds):
        order = cases if r % 2 == 0 else cases[::-1]  # interleaved, direction alternating
        for c in order:
            if c[1] >= 1_000_000 and r >= args.big_rounds:
                continue
            out = _run(c[0], c[1], c[3], args.threads, c[2])
            res[c].append(out)
            print(f"round {r + 1}: {c[0]} {_fmt_n(c[1])} {c[2]}-d {c[3]}: {out['seconds']:.1f} s, "
                  f"peak RSS {out['rss'] / MB:.0f} MiB, found {out['found']}/{out['planted']} planted",
                  file=sys.stderr, flush=True)
    load = os.getloadavg()
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"threads {args.threads}, {args.rounds} interleaved rounds, load average at the end "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, total {time.perf_counter() - t_all:.0f} s\n")
    print("| case | n | dim, storage | peer | rounds | median s | min-max s "
          "| time / exact baseline (median of per-round ratios) | peak RSS MiB | data MiB "
          "| found | planted | found & planted |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for c in cases:
        rs = res[c]
        secs = [x["seconds"] for x in rs]
        base = res.get((c[0], c[1], c[2], "numpy" if c[0] == "centres" else "exact"))
        ratio = (f"{statistics.median(x['seconds'] / b['seconds'] for x, b in zip(rs, base)):.2f}x"
                 if base and c[3] not in ("numpy", "exact") else "")
        store = "float32" if c[0] == "centres" or c[2] < 512 else "float16"
        f = rs[-1]
        print(f"| {c[0]} | {_fmt_n(c[1])} | {c[2]}, {store} | {c[3]} | {len(rs)} | {statistics.median(secs):.1f} | "
              f"{min(secs):.1f}-{max(secs):.1f} | {ratio} | {max(x['rss'] for x in rs) / MB:.0f} | "
              f"{f['data'] / MB:.0f} | {f['found']} | {f['planted']} | {f['hit']} |")


if __name__ == "__main__":
    main()
