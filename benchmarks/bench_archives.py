"""Archive source against folders (issue 29 part 2): the same images read from a zip (and a
tar.gz) in place, member by member, against the same files in identity folders, in one run
of this script, rounds interleaved (folders, zip, tar.gz; then the order rotated).

    python benchmarks/bench_archives.py [--rounds 3] [--mode pack|detect] [--workers 0]

Data: the shared test material (``../shared/data`` or ``$FACEKIT_TEST_DATA``; the script
says so and exits 0 when it is absent), copied ``--copies`` times under new identity
names. Modes:

- ``pack`` (default): the 2,298 112x112 crops of ``aligned_identities/kz_celebs_112``
  packed pass-through into an ``mxrec`` sink, no detector: the source's own cost (listing,
  reading, the zip's inflate or the tar's gunzip) is most of the run, the worst case for an
  archive;
- ``detect``: the photos of ``images/identities`` (twice), SCRFD-500m + arcface, as a user
  builds a dataset: detection dominates.

The target is the archive at >= 0.9x the folders' speed (time_folders / time_archive).
Prints one line per round and the median ratios; the outputs' ``train.rec`` bytes are
checked equal across the three sources.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, data_root  # noqa: E402

sys.path.insert(0, str(REPO))


def _tree(src: Path, root: Path, copies: int) -> int:
    """``root/<identity>~<k>/<file>``: the shared identities ``copies`` times."""
    n = 0
    for k in range(copies):
        for d in sorted(p for p in src.iterdir() if p.is_dir()):
            out = root / f"{d.name}~{k}"
            out.mkdir(parents=True)
            for f in sorted(d.iterdir()):
                shutil.copy(f, out / f.name)
                n += 1
    return n


def _archives(root: Path, work: Path) -> tuple[Path, Path]:
    """A deflated zip and a tar.gz of ``root``'s identity folders (members ``<id>/<file>``),
    in the folders source's natural order (a tar is read in archive order, as it streams)."""
    from facekit_plugins.folders import natural_key

    z, t = work / "faces.zip", work / "faces.tar.gz"
    files = sorted((p for p in root.rglob("*") if p.is_file()),
                   key=lambda p: (natural_key(p.parent.name), natural_key(p.name)))
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f.relative_to(root).as_posix())
    with tarfile.open(t, "w:gz") as tf:
        for f in files:
            tf.add(f, f.relative_to(root).as_posix())
    return z, t


def _config(work: Path, name: str, source: str, mode: str, workers: int, model: Path) -> Path:
    det = f"detector: {{plugin: retinaface, model: {model}}}\naligner: {{plugin: arcface}}\n" if mode == "detect" else ""
    p = work / f"{name}.yaml"
    p.write_text(
        f"output: {work / ('out-' + name)}\nsource: {source}\n{det}"
        f"sinks: [{{plugin: mxrec, path: rec}}]\nworkers: {workers}\nresume: false\n"
    )
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="test material folder (default $FACEKIT_TEST_DATA or ../shared/data)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--copies", type=int, default=None, help="copies of the shared identities (default: pack 1, detect 2)")
    ap.add_argument("--mode", choices=("pack", "detect"), default="pack")
    ap.add_argument("--workers", type=int, default=0, help="executor workers (0: one process, the source's own pace)")
    args = ap.parse_args(argv)
    data = data_root(args.data)
    src = data / ("aligned_identities/kz_celebs_112" if args.mode == "pack" else "images/identities")
    if not src.is_dir():
        print(f"{src} is missing: nothing to measure")
        return 0
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run

    copies = args.copies or (1 if args.mode == "pack" else 2)
    with tempfile.TemporaryDirectory(prefix="facekit-bench-archives-") as tmp:
        work = Path(tmp)
        root = work / "faces"
        n = _tree(src, root, copies)
        z, t = _archives(root, work)
        model = data / "models" / "detection" / "scrfd_500m_bnkps.onnx"
        peers = {
            "folders": _config(work, "folders", f"{{plugin: folders, root: {root}, min_images: 1}}", args.mode,
                               args.workers, model),
            "zip": _config(work, "zip", f"{{plugin: archives, parts: {z}, min_images: 1}}", args.mode, args.workers,
                           model),
            "tar.gz": _config(work, "targz", f"{{plugin: archives, parts: {t}, min_images: 1}}", args.mode,
                              args.workers, model),
        }
        names = list(peers)
        times: dict[str, list[float]] = {k: [] for k in names}
        print(f"{n} files ({copies} copies of {src.name}), mode {args.mode}, workers {args.workers}, "
              f"zip {z.stat().st_size >> 10} KiB, tar.gz {t.stat().st_size >> 10} KiB")
        for r in range(args.rounds):
            order = names[r % 3:] + names[: r % 3]
            line = []
            for k in order:
                spec = load_config(peers[k])
                t0 = time.perf_counter()
                run(spec, progress=False)
                times[k].append(time.perf_counter() - t0)
                line.append(f"{k} {times[k][-1]:.2f} s")
            print(f"round {r + 1}: " + ", ".join(line))
        recs = {k: (work / f"out-{'targz' if k == 'tar.gz' else k}" / "rec" / "train.rec").read_bytes() for k in names}
        same = recs["zip"] == recs["folders"] == recs["tar.gz"]
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\n{'source':<10} {'median s':>9} {'files/s':>8} {'speed vs folders':>17}")
        for k in names:
            print(f"{k:<10} {med[k]:>9.2f} {n / med[k]:>8.0f} {med['folders'] / med[k]:>16.2f}x")
        print(f"train.rec bytes equal across the three sources: {same}")
        return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
