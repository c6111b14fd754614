"""RecordIO throughput: facekit vs mxnet 1.9.1 side by side, with ``cat`` as the floor.

    python benchmarks/bench_recordio.py [--records 5000] [--repeat 3]

Builds a few thousand 112x112 JPEG face images (~6 KB each, as in MS1M/Glint360K) from the
shared photos (``../shared/data``, or ``FACEKIT_TEST_DATA``) in identity folders, then
measures, in one run, on the same bytes:

- packing (pass-through, no decode): ``cat`` of the files (the physical floor);
  ``mxnet.tools.im2rec --pass-through`` (CLI, list prepared beforehand) and the same loop
  in-process (``MXIndexedRecordIO.write_idx(pack(...))``); facekit's ``facekit run``
  folders -> mxrec (CLI and in-process ``engine.run``) and its writer loops in-process
  (record by record with ``write_idx``, batched with ``write_many_idx``). Each CLI is
  also run on a one-image corpus: that is its start-up, and ``time(n) - time(1)`` is
  what it spends packing ``n - 1`` images (the rate of a long run);
- sequential read of every record: ``cat rec > /dev/null`` (floor), mxnet
  ``MXRecordIO.read()``, facekit ``RecordIOReader`` iteration;
- random-key read (a shuffled key list): mxnet ``MXIndexedRecordIO.read_idx``, facekit
  ``IndexedRecordIOReader.read_idx``; both also with ``unpack``.

mxnet runs through the isolated environment's python (``FACEKIT_MXNET_PYTHON``, default
``.ci-venv-mxnet/bin/python``). Each timing is the best of ``--repeat`` runs on a warm page
cache (in-process timings exclude interpreter start-up; CLI timings include it).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]

MX_CODE = r"""
import json, os, random, sys, time, mxnet as mx
rec, idx, lst, root, out, repeat = sys.argv[1:7]
repeat = int(repeat)
res = {}
def best(fn):
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter(); n = fn(); t.append(time.perf_counter() - t0)
    return min(t), n
def seq():
    r = mx.recordio.MXRecordIO(rec, 'r'); n = 0
    while True:
        s = r.read()
        if s is None: break
        n += 1
    r.close(); return n
res['seq'] = best(seq)
def seq_unpack():
    r = mx.recordio.MXRecordIO(rec, 'r'); n = 0
    while True:
        s = r.read()
        if s is None: break
        mx.recordio.unpack(s); n += 1
    r.close(); return n
res['seq_unpack'] = best(seq_unpack)
r = mx.recordio.MXIndexedRecordIO(idx, rec, 'r')
keys = list(r.keys); random.Random(0).shuffle(keys)
def rnd():
    for k in keys: r.read_idx(k)
    return len(keys)
res['random'] = best(rnd)
def rnd_unpack():
    for k in keys: mx.recordio.unpack(r.read_idx(k))
    return len(keys)
res['random_unpack'] = best(rnd_unpack)
items = [l.rstrip('\n').split('\t') for l in open(lst)]
def pack_loop():
    w = mx.recordio.MXIndexedRecordIO(out + '.idx', out + '.rec', 'w')
    for i, lab, p in items:
        with open(os.path.join(root, p), 'rb') as f:
            w.write_idx(int(i), mx.recordio.pack(mx.recordio.IRHeader(0, float(lab), int(i), 0), f.read()))
    w.close(); return len(items)
res['pack_loop'] = best(pack_loop)
print(json.dumps(res))
"""


def build_corpus(data: Path, root: Path, n: int, per_identity: int = 50) -> list[Path]:
    """``n`` 112x112 JPEGs (centre square of each shared photo, resized, quality 95)."""
    photos = sorted((data / "images" / "identities").glob("*/*")) + sorted((data / "aligned_112").glob("*.jpg"))
    encoded = []
    for p in photos:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            continue
        h, w = img.shape[:2]
        s = min(h, w)
        crop = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        ok, buf = cv2.imencode(".jpg", cv2.resize(crop, (112, 112), interpolation=cv2.INTER_AREA), [cv2.IMWRITE_JPEG_QUALITY, 95])
        encoded.append(buf.tobytes())
    files = []
    for i in range(n):
        d = root / f"id_{i // per_identity:05d}"
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"{i:07d}.jpg"
        f.write_bytes(encoded[i % len(encoded)])
        files.append(f)
    return files


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def paired_net(full, one, repeat: int) -> float:
    """Median over ``repeat`` rounds of ``time(full()) - time(one())``, run back to back."""
    diffs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        full()
        t1 = time.perf_counter()
        one()
        diffs.append((t1 - t0) - (time.perf_counter() - t1))
    return statistics.median(diffs)


def sh(cmd, **kw) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", default=os.environ.get("FACEKIT_TEST_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--mxnet-python", default=os.environ.get("FACEKIT_MXNET_PYTHON", str(REPO / ".ci-venv-mxnet" / "bin" / "python")))
    args = ap.parse_args()

    from facekit.pipeline.config import parse_config
    from facekit.pipeline.engine import run
    from facekit.vision.images import read_file
    from facekit.formats.recordio import (
        IndexedRecordIOReader,
        IndexedRecordIOWriter,
        IRHeader,
        RecordIOReader,
        pack,
        pack_header,
        unpack,
    )

    with tempfile.TemporaryDirectory(prefix="facekit-bench-") as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        files = build_corpus(Path(args.data), root, args.records)
        n = len(files)
        nbytes = sum(f.stat().st_size for f in files)
        rel = [str(f.relative_to(root)) for f in files]
        # im2rec list (idx, label, path), prepared outside the timings
        labels = {d: i for i, d in enumerate(sorted({f.parent.name for f in files}))}
        lst = tmp / "im2rec" / "data.lst"
        lst.parent.mkdir()
        lst.write_text("".join(f"{i}\t{labels[Path(r).parent.name]:f}\t{r}\n" for i, r in enumerate(rel)))
        for f in files:  # warm the page cache
            f.read_bytes()
        rows = []

        # -------------------------------------------------------------- packing
        def cat():
            with open(tmp / "cat.bin", "wb") as out:
                subprocess.run(["cat", *map(str, files)], stdout=out, check=True)

        t_cat = best_of(cat, args.repeat)

        def im2rec():
            sh([args.mxnet_python, "-m", "mxnet.tools.im2rec", str(lst.with_suffix("")), str(root), "--pass-through"])

        t_im2rec = best_of(im2rec, args.repeat)
        cfg_text = f"output: {tmp / 'fk'}\nsource: {{plugin: folders, root: {root}, min_images: 1}}\nsinks: [{{plugin: mxrec, path: rec}}]\n"
        (tmp / "fk.yaml").write_text(cfg_text)

        def fk_cli():
            sh([sys.executable, "-m", "facekit.cli.main", "run", "-q", str(tmp / "fk.yaml")])

        t_fk_cli = best_of(fk_cli, args.repeat)

        # Start-up of each CLI: the same command on a one-image corpus. CLI throughput is
        # then (n - 1) images / (time(n) - time(1)), the rate a long run packs at.
        root1 = tmp / "root1"
        (root1 / "id_00000").mkdir(parents=True)
        (root1 / "id_00000" / "0000000.jpg").write_bytes(files[0].read_bytes())
        lst1 = tmp / "im2rec1" / "data.lst"
        lst1.parent.mkdir()
        lst1.write_text("0\t0.000000\tid_00000/0000000.jpg\n")
        (tmp / "fk1.yaml").write_text(cfg_text.replace(str(root), str(root1)).replace(str(tmp / "fk"), str(tmp / "fk1")))

        def cat1():
            with open(tmp / "cat1.bin", "wb") as out:
                subprocess.run(["cat", str(root1 / "id_00000" / "0000000.jpg")], stdout=out, check=True)

        def im2rec1():
            sh([args.mxnet_python, "-m", "mxnet.tools.im2rec", str(lst1.with_suffix("")), str(root1), "--pass-through"])

        def fk_cli1():
            sh([sys.executable, "-m", "facekit.cli.main", "run", "-q", str(tmp / "fk1.yaml")])

        t0_cat, t0_im2rec, t0_fk = (best_of(f, args.repeat) for f in (cat1, im2rec1, fk_cli1))
        # net packing time: median over repeats of (n-image run - 1-image run) taken back to
        # back, so that drifts of the machine cancel; start-ups vary by more than the signal
        t_cat_net, t_im2rec_net, t_fk_net = (
            paired_net(full, one, max(args.repeat, 7)) * n / (n - 1)
            for full, one in ((cat, cat1), (im2rec, im2rec1), (fk_cli, fk_cli1))
        )
        spec = parse_config(cfg_text, config_dir=tmp)
        t_fk_engine = best_of(lambda: run(spec, progress=False), args.repeat)
        label_list = [labels[Path(r).parent.name] for r in rel]

        def fk_loop():
            with IndexedRecordIOWriter(tmp / "loop.idx", tmp / "loop.rec") as w:
                for i, f in enumerate(files):
                    with open(f, "rb") as fh:
                        w.write_idx(i, pack(IRHeader(0, float(label_list[i]), i, 0), fh.read()))

        t_fk_loop = best_of(fk_loop, args.repeat)

        def fk_batch_loop():
            with IndexedRecordIOWriter(tmp / "batch.idx", tmp / "batch.rec") as w:
                for b in range(0, n, 512):
                    keys = range(b, min(b + 512, n))
                    w.write_many_idx(
                        keys, [(pack_header((0, float(label_list[i]), i, 0)), read_file(str(files[i]))) for i in keys]
                    )

        t_fk_batch = best_of(fk_batch_loop, args.repeat)
        assert (tmp / "batch.rec").read_bytes() == (tmp / "loop.rec").read_bytes()

        # -------------------------------------------------------------- reading
        rec = tmp / "im2rec" / "data.rec"
        idx = rec.with_suffix(".idx")
        rec.read_bytes()
        mx = json.loads(
            subprocess.run(
                [args.mxnet_python, "-c", MX_CODE, rec, idx, lst, root, tmp / "mxloop", str(args.repeat)],
                check=True, capture_output=True, text=True,
            ).stdout
        )
        t_cat_read = best_of(lambda: sh(["cat", str(rec)]), args.repeat)

        def fk_seq():
            return sum(1 for _ in RecordIOReader(rec))

        def fk_seq_unpack():
            n = 0
            for _, p in RecordIOReader(rec):
                unpack(p)
                n += 1
            return n

        reader = IndexedRecordIOReader(idx, rec)
        keys = list(reader.keys)
        random.Random(0).shuffle(keys)

        def fk_rnd():
            for k in keys:
                reader.read_idx(k)

        def fk_rnd_unpack():
            for k in keys:
                unpack(reader.read_idx(k))

        assert fk_seq() == mx["seq"][1] == len(files)
        t = {
            "seq": best_of(fk_seq, args.repeat),
            "seq_unpack": best_of(fk_seq_unpack, args.repeat),
            "random": best_of(fk_rnd, args.repeat),
            "random_unpack": best_of(fk_rnd_unpack, args.repeat),
        }
        rec_bytes = rec.stat().st_size

        def rate(sec, size=nbytes):
            return f"{n / sec:,.0f} img/s, {size / sec / 1e6:,.0f} MB/s"

        def row(name, fk, mxs, floor=None, unit_bytes=nbytes):
            ratio = mxs / fk if mxs else None
            rows.append(
                (
                    name,
                    f"{fk * 1e3:,.1f} ms ({rate(fk, unit_bytes)})",
                    f"{mxs * 1e3:,.1f} ms ({rate(mxs, unit_bytes)})" if mxs else "-",
                    f"{floor * 1e3:,.1f} ms ({rate(floor, unit_bytes)})" if floor else "-",
                    f"{ratio:.2f}x" if ratio else "-",
                    f"{fk / floor:.2f}x" if floor else "-",
                )
            )

        row("pack, CLI end to end (facekit run / im2rec --pass-through / cat)", t_fk_cli, t_im2rec, t_cat)
        row("pack, CLI net of start-up (median of n-image minus 1-image runs)", t_fk_net, t_im2rec_net, t_cat_net)
        row("pack, in-process (engine.run / write_idx+pack loop)", t_fk_engine, mx["pack_loop"][0], t_cat)
        row("pack, in-process writer loop, record by record (write_idx)", t_fk_loop, mx["pack_loop"][0], t_cat)
        row("pack, in-process writer loop, batched (write_many_idx)", t_fk_batch, mx["pack_loop"][0], t_cat)
        row("sequential read (RecordIOReader / MXRecordIO.read)", t["seq"], mx["seq"][0], t_cat_read, rec_bytes)
        row("sequential read + unpack", t["seq_unpack"], mx["seq_unpack"][0], t_cat_read, rec_bytes)
        row("random-key read (read_idx, shuffled keys)", t["random"], mx["random"][0], None, rec_bytes)
        row("random-key read + unpack", t["random_unpack"], mx["random_unpack"][0], None, rec_bytes)

        print(f"# facekit RecordIO benchmark ({n} records, {nbytes / 1e6:.1f} MB of 112x112 JPEGs, best of {args.repeat})")
        print()
        print(
            f"CLI start-up (1-image run): facekit {t0_fk * 1e3:,.0f} ms, im2rec {t0_im2rec * 1e3:,.0f} ms, "
            f"cat {t0_cat * 1e3:,.1f} ms"
        )
        print()
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()} {platform.release()}")
        print()
        print("| operation | facekit | mxnet 1.9.1 | cat (floor) | facekit speed-up vs mxnet | facekit time / cat |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        print()
        targets = [
            ("random reads at least as fast as mxnet (read_idx, shuffled keys)", mx["random"][0] / t["random"] >= 1),
            ("sequential reads at least as fast as mxnet", mx["seq"][0] / t["seq"] >= 1),
            ("packing >= 2x faster than im2rec (facekit run vs im2rec --pass-through, end to end)", t_im2rec / t_fk_cli >= 2),
            ("packing within 2x of cat (throughput: in-process engine.run)", t_fk_engine / t_cat <= 2),
        ]
        print("targets (issue 3):")
        for name, ok in targets:
            print(f"- {name}: {'met' if ok else 'MISSED'}")
        print()
        print("for information (not targets):")
        print(f"- CLI end to end / cat end to end: {t_fk_cli / t_cat:.1f}x (start-up {t0_fk * 1e3:,.0f} ms vs cat's {t0_cat * 1e3:.1f} ms)")
        print(
            f"- CLI net of start-up: im2rec / facekit {t_im2rec_net / t_fk_net:.2f}x, facekit / cat "
            f"{t_fk_net / t_cat_net:.2f}x (differences of two process runs: noisy, +-20 ms here)"
        )
        print(f"- mxnet bare write_idx loop / facekit whole engine, in-process: {mx['pack_loop'][0] / t_fk_engine:.2f}x")


if __name__ == "__main__":
    main()
