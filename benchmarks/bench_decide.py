"""The pipeline's decision step at scale (issue 26 parts 4-6): facekit.pipeline.decide's three
passes (Collector.add per shard, decide, Replay.apply per shard) on synthetic shards, in
process, without detection or recognition; each case a fresh process (its own peak RSS).

    python benchmarks/bench_decide.py [--identities 10000,100000] [--faces 10]
        [--shard-faces 1000] [--rounds 3] [--big-rounds 1] [--threads 2]
        [--moved-index auto] [--nprobe 16] [--replay-budget 300]

Synthetic data (seeded, made shard by shard from ``(seed, shard)`` so no shard is held
between passes, as the engine reloads kept shards from its work folder):

- N identities of ``--faces`` faces (one face an image), ``--shard-faces / --faces``
  identities a shard (whole identities, as facekit's shards are cut); each face a
  :class:`facekit.stages.Sample` with a 512-d float32 unit ``embedding``: ``0.6 c + 0.8 u``
  normalised (``c`` the identity's true centre, uniform on the sphere; ``u`` a random unit
  vector: cosine ~0.6 to the centre, as real crops with a small model, bench_merge.py) and
  16 bytes of ``data`` (seed and face number, so every face has its own content hash).
- **pairs**: N/100 planted identity pairs that are one person under two names (the second
  identity's faces are drawn around the first one's true centre); the step should merge
  them (``merge.identities: apply``, the default here, or list them with ``propose``).
- **moved**: N x faces / 1000 planted moved faces: the last face of an identity drawn around
  another identity's true centre; the replay's moved check should flag it, naming that
  identity.
- **copies**: N/100 planted copies: face 0 of an identity carrying the same bytes as face 0
  of another identity (each source copied once); decide's copies should find them.

Phases timed (``time.perf_counter`` around the step's own calls; making the synthetic shards
is timed apart and not counted): **collect** (``Collector.add`` for every shard), **decide**
(``decide``: merge candidates and groups, copies by hash, the moved check's
``CentreIndex`` build; each part timed by a wrapper around it; the kept shards it reads
again to name the copies' first faces are regenerated here and subtracted), **replay**
(``Replay.apply`` for every shard with a ``DecisionsWriter`` to a temporary file, no gate or
sinks; its moved check timed apart, and the shards it loads again for merged identities,
which are regenerated here, subtracted). Peak RSS per phase: ``ru_maxrss`` of the child after
its peak is reset at the phase's start (``/proc/self/clear_refs``, Linux); the process peak
is the largest of them.

``--replay-budget S``: the replay stops after S seconds of shards (in order) and its time
is extrapolated to every shard (marked ``extrapolated``; the moved recall is then over the
planted faces of the shards replayed). ``--moved-index ivf`` (and ``--nprobe``,
``--merge-index``) monkeypatch :class:`facekit.clean.moved.CentreIndex` (and
``merge_candidates``) **in the benchmark's child only**, to measure a proposed change to
decide.py without making it; every such row is labelled.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MB = 1 << 20


# ---------------------------------------------------------------------------- data


class World:
    """The synthetic data set: shard ``s`` is made again, identically, by :meth:`shard`."""

    def __init__(self, n: int, faces: int, shard_faces: int, dim: int = 512, seed: int = 0):
        import numpy as np

        self.np, self.n, self.faces, self.dim, self.seed = np, n, faces, dim, seed
        self.per_shard = max(1, shard_faces // faces)
        self.n_shards = -(-n // self.per_shard)
        rng = np.random.default_rng([seed, 0])
        perm = rng.permutation(n).tolist()
        p = max(1, n // 100)
        a, b = perm[:p], perm[p : 2 * p]
        self.alias = dict(zip(b, a))  # identity b is drawn around a's true centre
        self.pairs = {frozenset((self.name(x), self.name(y))) for x, y in zip(a, b)}
        rest = perm[2 * p :]
        q = max(1, min(n * faces // 1000, len(rest) // 3))
        self.moved = {}  # identity -> the identity its last face is drawn from
        for i in rest[:q]:
            j = i
            while j == i:
                j = rest[int(rng.integers(len(rest)))]
            self.moved[i] = j
        self.moved_paths = {self.path(i, faces - 1): self.name(j) for i, j in self.moved.items()}
        r = max(1, min(n // 100, len(rest) // 3))
        # identity -> the identity whose face 0 its face 0 copies (bytes); sources and copies
        # apart, each source once, so every planted copy is exactly one pair
        self.copy_of = dict(zip(rest[q : q + r], rest[q + r : q + 2 * r]))
        self.copies = {frozenset((self.path(i, 0), self.path(j, 0))) for i, j in self.copy_of.items()}
        self._blocks: dict = {}

    def name(self, i: int) -> str:
        return f"id{i:07d}"

    def path(self, i: int, f: int) -> str:
        return f"{self.name(i)}/{f:03d}.jpg"

    def centre(self, i: int):
        """Identity ``i``'s true centre (blocks of one shard's identities, a few cached)."""
        np = self.np
        blk = i // self.per_shard
        c = self._blocks.get(blk)
        if c is None:
            if len(self._blocks) > 16:
                self._blocks.clear()
            c = np.random.default_rng([self.seed, 1, blk]).standard_normal((self.per_shard, self.dim), np.float32)
            c /= np.linalg.norm(c, axis=1, keepdims=True)
            self._blocks[blk] = c
        return c[i % self.per_shard]

    def shard(self, s: int):
        """Shard ``s`` as a :class:`ShardResult` of kept faces (one Outcome an image)."""
        from facekit.pipeline.shards import Outcome, ShardResult
        from facekit.stages import Sample

        np = self.np
        ids = range(s * self.per_shard, min(self.n, (s + 1) * self.per_shard))
        m = len(ids) * self.faces
        u = np.random.default_rng([self.seed, 2, s]).standard_normal((m, self.dim), np.float32)
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        c = np.empty_like(u)
        for k, i in enumerate(ids):
            c[k * self.faces : (k + 1) * self.faces] = self.centre(self.alias.get(i, i))
            if i in self.moved:
                c[(k + 1) * self.faces - 1] = self.centre(self.moved[i])
        e = 0.6 * c + 0.8 * u
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        outs = []
        for k, i in enumerate(ids):
            name = self.name(i)
            for f in range(self.faces):
                key = i * self.faces + f
                src = self.copy_of[i] * self.faces if f == 0 and i in self.copy_of else key
                smp = Sample(key, self.path(i, f), name, data=struct.pack("<QQ", self.seed, src),
                             embedding=e[k * self.faces + f])
                outs.append(Outcome(name, [smp], read=1))
        return ShardResult(s, outs)


# ---------------------------------------------------------------------------- child


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux 4.0+); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Clock:
    """Seconds spent inside wrapped callables, by name."""

    def __init__(self):
        self.t: dict = {}

    def wrap(self, name, fn):
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t
        return timed


def _patch(args, clock: _Clock):
    """Timing wrappers around decide's parts; the benchmark-only index options."""
    from facekit.clean import merge, moved
    from facekit.pipeline import decide as dmod

    kind, _, probe = args.moved_index.partition(":")
    if kind != "auto":
        base = moved.CentreIndex
        opts = {"index": kind, "nprobe": int(probe or args.nprobe)}
        if args.nlist:
            opts["nlist"] = args.nlist

        class PatchedCentreIndex(base):  # benchmark-only: decide.py passes no index option
            def __init__(self, *a, **k):
                super().__init__(*a, **{**k, **opts})

        moved.CentreIndex = PatchedCentreIndex
    if args.merge_index != "auto":
        def mc(*a, _mc=merge.merge_candidates, **k):  # benchmark-only, as above
            return _mc(*a, **{"index": args.merge_index, "nprobe": args.nprobe, **k})
    else:
        mc = merge.merge_candidates
    merge.merge_candidates = clock.wrap("merge_candidates", mc)
    merge.merge_groups = clock.wrap("merge_groups", merge.merge_groups)
    merge.cross_identity_hashes = clock.wrap("copies", merge.cross_identity_hashes)
    if hasattr(dmod.Collector, "copies"):  # copies by the collector's own hash table
        dmod.Collector.copies = clock.wrap("copies", dmod.Collector.copies)
    mcls = dmod.MovedCheck

    class TimedMovedCheck(mcls):
        def __init__(self, *a, **k):
            t = time.perf_counter()
            super().__init__(*a, **k)
            clock.t["moved_index_build"] = time.perf_counter() - t

        def check(self, faces, *a, **k):
            t = time.perf_counter()
            try:
                return super().check(faces, *a, **k)
            finally:
                clock.t["moved_check"] = clock.t.get("moved_check", 0.0) + time.perf_counter() - t
                clock.t["moved_faces"] = clock.t.get("moved_faces", 0) + len(faces)

    dmod.MovedCheck = TimedMovedCheck


def _child(args) -> dict:
    from facekit.pipeline.decide import Collector, decide
    from facekit.pipeline.replay import Replay
    from facekit.pipeline.decisions import DecisionsWriter, MergeConfig

    clock = _Clock()
    _patch(args, clock)
    world = World(args.size, args.faces, args.shard_faces, args.dim, args.seed)
    world.shard(0)  # imports and first allocations before the clocks
    out: dict = {"shards": world.n_shards, "faces": world.n * world.faces, "identities": world.n,
                 "rss_start": _rss()}
    resettable = _reset_peak()
    gen = 0.0

    # pass 1: collect
    col = Collector()
    t_col = 0.0
    for s in range(world.n_shards):
        t = time.perf_counter()
        res = world.shard(s)
        t1 = time.perf_counter()
        col.add(res)
        t_col += time.perf_counter() - t1
        gen += t1 - t
        del res
    out["collect"] = {"seconds": t_col, "rss": _rss()}

    # pass 2: decide
    found: dict = {"merge": [], "moved": [], "copy": []}
    counts: dict = {}

    class Recording(DecisionsWriter):
        def add(self, d):
            counts[(d.kind, d.decision)] = counts.get((d.kind, d.decision), 0) + 1
            if d.kind in found:
                found[d.kind].append((d.identity, d.path, d.other, d.decision))
            super().add(d)

    loads = [0.0]  # kept shards read again (here: made again, not counted)

    def load(i):
        t = time.perf_counter()
        try:
            return world.shard(i)
        finally:
            loads[0] += time.perf_counter() - t

    cfg = MergeConfig(identities=args.identities)
    kw = {"load": load} if "load" in inspect.signature(decide).parameters else {}
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "decisions.tsv", "w", encoding="utf-8") as f:
        writer = Recording(f)
        _reset_peak()
        t = time.perf_counter()
        plan = decide(col, cfg, None, writer, **kw)
        out["decide"] = {"seconds": time.perf_counter() - t - loads[0], "rss": _rss(), "loads": loads[0],
                         "parts": {k: v for k, v in clock.t.items() if k != "moved_check"}}
        out["moved_index"] = getattr(plan.moved.index, "kind", None) if plan.moved is not None else None
        loads[0] = 0.0

        # pass 3: replay
        replay = Replay(col, plan, load)
        _reset_peak()
        t_rep, done = 0.0, 0
        for s in range(world.n_shards):
            t = time.perf_counter()
            res = world.shard(s)
            t1 = time.perf_counter()
            gen += t1 - t
            before = loads[0]
            replay.apply(res, writer, None)
            t_rep += time.perf_counter() - t1 - (loads[0] - before)
            done += 1
            del res
            if args.replay_budget and t_rep > args.replay_budget and done < world.n_shards:
                break
        mc = clock.t.get("moved_check", 0.0)
        mf = clock.t.get("moved_faces", 0)
        out["replay"] = {"seconds": t_rep, "rss": _rss(), "shards_done": done,
                         "extrapolated": t_rep * world.n_shards / done if done < world.n_shards else None,
                         "moved_check": mc, "moved_faces": mf, "loads": loads[0]}
        out["decisions_bytes"] = f.tell()
    out["generate"] = gen
    out["peak_resettable"] = resettable

    # what was found
    merged = {frozenset((a, o)) for a, _, o, d in found["merge"] if d == "merge"}
    listed = {frozenset((a, o)) for a, _, o, _ in found["merge"]}
    out["pairs"] = {"planted": len(world.pairs), "listed": len(listed), "listed_planted": len(listed & world.pairs),
                    "merged": len(merged), "merged_planted": len(merged & world.pairs)}
    done_ids = done * world.per_shard
    planted_moved = {p: o for p, o in world.moved_paths.items() if int(p[2:9]) < done_ids}
    flagged = {p: o for _, p, o, _ in found["moved"]}
    out["moved"] = {"planted": len(planted_moved), "flagged": len(flagged),
                    "found": sum(p in flagged for p in planted_moved),
                    "found_right_identity": sum(flagged.get(p) == o for p, o in planted_moved.items()),
                    "per_shard_flagged_not_planted": len(set(flagged) - set(planted_moved)) / max(done, 1)}
    planted_copies = {c for c in world.copies if all(int(p[2:9]) < done_ids for p in c)}
    got = {frozenset((p, o)) for _, p, o, _ in found["copy"]}
    out["copies"] = {"planted": len(planted_copies), "found": len(got), "found_planted": len(got & planted_copies)}
    out["lines"] = {f"{k}:{d}": v for (k, d), v in sorted(counts.items())}
    return out


# ---------------------------------------------------------------------------- parent


def _run(args, size: int, variant: str) -> dict:
    t = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, MKL_NUM_THREADS=t)
    cmd = [sys.executable, __file__, "--child", "--size", str(size), "--faces", str(args.faces),
           "--shard-faces", str(args.shard_faces), "--dim", str(args.dim), "--seed", str(args.seed),
           "--identities-mode", args.identities, "--moved-index", variant, "--merge-index", args.merge_index,
           "--nprobe", str(args.nprobe), "--replay-budget", str(args.replay_budget), "--threads", t]
    if args.nlist:
        cmd += ["--nlist", str(args.nlist)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _code() -> str:
    """The commit measured, and whether the decision step's files differ from it."""
    def git(*a):
        r = subprocess.run(["git", *a], capture_output=True, text=True, cwd=REPO, check=False)
        return r.stdout.strip() if r.returncode == 0 else "?"
    files = ["facekit/pipeline/decide.py", "facekit/pipeline/decisions.py", "facekit/clean/moved.py",
             "facekit/clean/merge.py", "facekit/clean/identity.py"]
    changed = git("diff", "--name-only", "HEAD", "--", *files).split()
    blobs = ", ".join(f"{c} (blob {git('hash-object', c)[:10]})" for c in changed)
    return f"at {git('rev-parse', '--short', 'HEAD')}" + (f", with uncommitted changes to {blobs}" if changed else "")


def _fmt_n(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _label(variant: str, args) -> str:
    kind, _, probe = variant.partition(":")
    if kind == "auto":
        return "decide.py as is"
    extra = f", nprobe {probe or args.nprobe}" if kind == "ivf" else ""
    return f"moved index {kind}{extra} (monkeypatched in the benchmark)"


def _table(res: dict, args) -> None:
    print("| identities x faces | shards | decision step | rounds | phase | median s | min-max s "
          "| us a face | phase peak RSS MiB | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (size, variant), rs in res.items():
        if not rs:
            continue
        r0 = rs[0]
        head = f"{_fmt_n(size)} x {args.faces} = {_fmt_n(r0['faces'])} | {r0['shards']} | {_label(variant, args)} | {len(rs)}"
        for ph in ("collect", "decide", "replay"):
            secs = [x[ph]["seconds"] if ph != "replay" or x[ph]["extrapolated"] is None else x[ph]["extrapolated"]
                    for x in rs]
            med = statistics.median(secs)
            rss = max(x[ph]["rss"] for x in rs) / MB
            note = ""
            if ph == "collect":
                note = (f"robust centre + hashes; process before it {r0['rss_start'] / MB:.0f} MiB; making the "
                        f"shards (not counted) {statistics.median(x['generate'] for x in rs):.1f} s a run")
            elif ph == "decide":
                parts = {}
                for x in rs:
                    for k, v in x["decide"]["parts"].items():
                        parts.setdefault(k, []).append(v)
                note = ", ".join(f"{k} {statistics.median(v):.2f} s" for k, v in parts.items()) + \
                    f"; moved index {r0['moved_index']}"
                if r0["decide"].get("loads"):
                    note += f"; shards read again for copies' paths {r0['decide']['loads']:.1f} s (not counted)"
            else:
                x = rs[0]["replay"]
                rate = statistics.median(y["replay"]["moved_check"] / max(y["replay"]["moved_faces"], 1) * 1e6 for y in rs)
                note = (f"moved check {statistics.median(y['replay']['moved_check'] for y in rs):.1f} s "
                        f"({rate:.0f} us a face); shards reloaded for merges {x['loads']:.1f} s (not counted)")
                if x["extrapolated"] is not None:
                    note = (f"**extrapolated** from {x['shards_done']} of {r0['shards']} shards "
                            f"({x['seconds']:.0f} s measured); " + note)
            print(f"| {head} | {ph} | {med:.1f} | {min(secs):.1f}-{max(secs):.1f} | "
                  f"{med / r0['faces'] * 1e6:.0f} | {rss:.0f} | {note} |")
            head = " | | | "
        total = [sum(x[p]["seconds"] if p != "replay" or x[p]["extrapolated"] is None else x[p]["extrapolated"]
                     for p in ("collect", "decide", "replay")) for x in rs]
        print(f"| | | | | **all three** | {statistics.median(total):.1f} | {min(total):.1f}-{max(total):.1f} | "
              f"{statistics.median(total) / r0['faces'] * 1e6:.0f} | "
              f"{max(x[p]['rss'] for x in rs for p in ('collect', 'decide', 'replay')) / MB:.0f} | process peak |")
    print()
    print("| identities x faces | decision step | planted pairs | merged (planted) | listed (planted) "
          "| planted moved | flagged right identity | flagged, not planted, a shard | planted copies | found (planted) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (size, variant), rs in res.items():
        if not rs:
            continue
        x = rs[-1]
        p, m, c = x["pairs"], x["moved"], x["copies"]
        part = f" (in {x['replay']['shards_done']} shards replayed)" if x["replay"]["extrapolated"] else ""
        print(f"| {_fmt_n(size)} x {args.faces} | {_label(variant, args)} | {p['planted']} | {p['merged']} "
              f"({p['merged_planted']}) | {p['listed']} ({p['listed_planted']}) | {m['planted']}{part} | "
              f"{m['found_right_identity']} | {m['per_shard_flagged_not_planted']:.2f} | {c['planted']} | "
              f"{c['found']} ({c['found_planted']}) |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--identities", dest="sizes", default="10000,100000", help="identity counts, comma-separated")
    ap.add_argument("--faces", type=int, default=10, help="faces an identity")
    ap.add_argument("--shard-faces", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big", type=int, default=1_000_000, help="cases of at least this many faces run in --big-rounds only")
    ap.add_argument("--big-rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--identities-mode", dest="identities", default="apply", choices=["apply", "propose", "ignore"])
    ap.add_argument("--moved-index", default="auto",
                    help="comma-separated: auto (decide.py as is), flat, ivf, ivf:NPROBE, hnsw (monkeypatched)")
    ap.add_argument("--merge-index", default="auto", choices=["auto", "flat", "ivf", "hnsw"])
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--nlist", type=int, default=0)
    ap.add_argument("--replay-budget", type=float, default=0.0,
                    help="stop the replay after this many seconds and extrapolate (0: every shard)")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--size", type=int)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args)))
        return
    cases = [(int(n), v) for n in args.sizes.split(",") if n for v in args.moved_index.split(",") if v]
    res: dict = {c: [] for c in cases}
    t_all = time.perf_counter()
    load0 = os.getloadavg()
    for r in range(args.rounds):
        order = cases if r % 2 == 0 else cases[::-1]  # interleaved, direction alternating
        for c in order:
            if c[0] * args.faces >= args.big and r >= args.big_rounds:
                continue
            out = _run(args, c[0], c[1])
            res[c].append(out)
            rep = out["replay"]
            print(f"round {r + 1}: {_fmt_n(c[0])} identities, {c[1]}: collect {out['collect']['seconds']:.1f} s, "
                  f"decide {out['decide']['seconds']:.1f} s, replay {rep['seconds']:.1f} s"
                  + (f" ({rep['shards_done']}/{out['shards']} shards, extrapolated {rep['extrapolated']:.0f} s)"
                     if rep["extrapolated"] else "")
                  + f", peak RSS {max(out[p]['rss'] for p in ('collect', 'decide', 'replay')) / MB:.0f} MiB, "
                  f"moved {out['moved']['found_right_identity']}/{out['moved']['planted']}, "
                  f"pairs {out['pairs']['merged_planted']}/{out['pairs']['planted']}, load {os.getloadavg()[0]:.1f}",
                  file=sys.stderr, flush=True)
    load = os.getloadavg()
    print(f"\nfacekit {_code()}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"threads {args.threads}, merge.identities {args.identities}, {args.rounds} interleaved rounds "
          f"(cases of {_fmt_n(args.big)}+ faces in {args.big_rounds}), load average at the start "
          f"{load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}, at the end {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, "
          f"total {time.perf_counter() - t_all:.0f} s\n")
    _table(res, args)


if __name__ == "__main__":
    main()
