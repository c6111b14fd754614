"""List source benchmark (issue 29 part 3): a synthetic list of 1M and 10M rows streamed,
peak RSS compared (target: the larger within 10% of the smaller).

    python benchmarks/bench_list.py [--rows 1000000 10000000] [--per-identity 21] [--plain] [--run] [--keep DIR]

Each size gets a list written to a temporary folder (``--keep DIR``: there, kept): a CSV
``path,identity,x1,y1,...,x5,y5`` (``--plain``: ``path,identity`` only), ``--per-identity``
rows per identity (21: WebFace42M's 42M images of 2M identities), every path naming a file
that does not exist, so each row is one ``missing_file`` reject after the source's parse,
name checks and ``stat`` (the per-row work of the source; no image is read).

Modes, each size in a fresh process (its peak RSS, ``ru_maxrss``, is the number):

- default: the source alone, ``count()`` (the streamed pre-pass: row count and identity
  runs) then iterating every item, as the engine does;
- ``--run``: the whole engine, ``facekit run``: ``list`` source -> ``mxrec`` sink
  (pass-through), one process (``workers: 0``), with two rows of a real 112x112 face first
  (``aligned_112`` of the shared data, so the run keeps something and publishes): the
  source plus shards, identity gate, ``rejects.tsv`` and ``results.parquet`` of every row.
  The gate's account of each identity (about 62 B an identity, ``summary.json``) grows with
  the identities, not the rows.

Prints one line per size: rows, identities, seconds, rows/s, peak RSS (MiB), and the
ratio of each peak to the first size's.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root  # noqa: E402

_SOURCE = """
import resource, sys, time
from facekit_plugins.lists import ListSource, ListSourceParams
t = time.perf_counter()
src = ListSource(ListSourceParams(path=sys.argv[1]))
n = src.count()
k = sum(1 for _ in src)
assert k == n, (k, n)
print(n, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

_RUN = """
import json, resource, sys, time
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
t = time.perf_counter()
summary = run(load_config(sys.argv[1]), progress=False)
print(summary.images_read + sum(summary.rejects.values()), time.perf_counter() - t,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

LANDMARKS = "38.3,51.7,73.5,51.5,56.0,71.7,41.5,92.4,70.7,92.2"


def write_list(path: Path, rows: int, per_identity: int, plain: bool, face: Path | None) -> int:
    """Write the synthetic list; returns its identities."""
    tail = "" if plain else "," + LANDMARKS
    with open(path, "w", buffering=1 << 20) as f:
        f.write("path,identity" + ("" if plain else "," + ",".join(f"{a}{i}" for i in range(1, 6) for a in "xy")) + "\n")
        if face is not None:  # a real face: the run keeps one identity and publishes
            for k in range(2):
                f.write(f"{face},face{tail}\n")
        for i in range(rows - (2 if face is not None else 0)):
            ident = f"n{i // per_identity:07d}"
            f.write(f"{ident}/{i:09d}_01.jpg,{ident}{tail}\n")
    return -(-rows // per_identity)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--per-identity", type=int, default=21)
    ap.add_argument("--plain", action="store_true", help="path,identity only (no landmark columns)")
    ap.add_argument("--run", action="store_true", help="the whole engine (facekit run), not the source alone")
    ap.add_argument("--keep", help="write the lists here and keep them")
    ap.add_argument("--data", help="the shared test material (for --run's real face)")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_list_"))
    work.mkdir(parents=True, exist_ok=True)
    face = None
    if args.run:
        faces = sorted((data_root(args.data) / "aligned_112").glob("*.jpg"))
        if not faces:
            print(f"no aligned_112 faces under {data_root(args.data)}", file=sys.stderr)
            return 2
        face = faces[0]
    first = None
    try:
        for rows in args.rows:
            lst = work / f"list_{rows}.csv"
            ids = write_list(lst, rows, args.per_identity, args.plain, face)
            if args.run:
                cfg = work / f"run_{rows}.yaml"
                cfg.write_text(textwrap.dedent(f"""\
                    output: out_{rows}
                    source: {{plugin: list, path: {lst.name}, min_images: 1}}
                    sinks: [{{plugin: mxrec, path: rec}}]
                    workers: 0
                    """))
                argv = [sys.executable, "-c", _RUN, str(cfg)]
            else:
                argv = [sys.executable, "-c", _SOURCE, str(lst)]
            r = subprocess.run(argv, capture_output=True, text=True, cwd=work)
            if r.returncode != 0:
                print(r.stdout, r.stderr, file=sys.stderr)
                return 1
            n, secs, peak = r.stdout.split()[-3:]
            n, secs, peak = int(n), float(secs), int(peak) / 1024
            first = first or peak
            print(f"{'run' if args.run else 'source'} rows {n:>11,} identities {ids:>9,} {secs:8.1f} s "
                  f"{n / secs:>9,.0f} rows/s peak RSS {peak:7.1f} MiB ({peak / first:.3f}x the first)", flush=True)
            lst.unlink()
            shutil.rmtree(work / f"out_{rows}", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
