"""``facekit inspect``: what a face RecordIO dataset holds, read without mxnet.

Layout, files, records, images, identities, images-per-identity distribution, label
kinds, ``property``, and (on a seeded sample of images, header only, no pixel decode)
image encodings, sizes and colour modes.
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter

import numpy as np

from facekit.formats.facerec import MAX_CLASS, FaceRec, label_of

BUCKETS = [(1, 1), (2, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, 1000), (1001, None)]


def _bucket_name(lo, hi) -> str:
    if hi is None:
        return f">{lo - 1}"
    return str(lo) if lo == hi else f"{lo}-{hi}"


def distribution(counts) -> dict:
    """Summary of images per identity: min, max, mean, median and a bucket histogram."""
    c = np.asarray(counts, np.int64)
    if not len(c):
        return {"min": 0, "max": 0, "mean": 0.0, "median": 0.0, "histogram": {}}
    hist = {}
    for lo, hi in BUCKETS:
        n = int(((c >= lo) & (c <= (hi if hi is not None else c.max()))).sum())
        if n:
            hist[_bucket_name(lo, hi)] = n
    return {
        "min": int(c.min()),
        "max": int(c.max()),
        "mean": round(float(c.mean()), 2),
        "median": float(np.median(c)),
        "histogram": hist,
    }


def inspect(path: str | os.PathLike, prefix: str = "train", layout: str = "auto", sample: int = 500, seed: int = 0) -> dict:
    """Describe a face RecordIO dataset (a file, a folder or a shard set).

    Reads every image record's IRHeader (about 64 bytes each) for labels, and the encoded
    bytes of ``sample`` images drawn with ``numpy.random.default_rng(seed)``, whose format,
    size (width x height, pixels) and mode are read from the image header only.

    Returns:
        a JSON-serialisable dict (see ``facekit inspect --json``).
    Raises:
        RecordIOError: unreadable dataset (names file, key, offset).
    """
    with FaceRec(path, layout, prefix) as rec:
        files = []
        for p in rec.parts:
            files.append(
                {
                    "rec": p.rec_path,
                    "idx": p.idx_path,
                    "bytes": os.path.getsize(p.rec_path),
                    "layout": p.layout,
                    "records": p.records,
                    "header": list(p.header0) if p.header0 else None,
                    "images": len(p),
                    "identity_records": len(p.identity_keys),
                    "duplicate_keys": p.duplicate_keys,
                    "duplicate_offsets": p.duplicate_offsets,
                }
            )
        labels = np.empty(len(rec), np.int64)
        kinds: Counter = Counter()
        non_integral = 0
        invalid: list[str] = []  # not finite, negative or >= 2**31: left out of the counts
        i = 0
        for p in rec.parts:
            for k in range(len(p)):
                h, _ = p.read_header(k)
                kinds["scalar" if h.flag == 0 else f"array[{h.flag}]"] += 1
                lab = label_of(h)
                if not (math.isfinite(lab) and 0 <= lab < MAX_CLASS):
                    invalid.append(f"{p.rec_path}: key {int(p.image_keys[k])}, offset {int(p.image_offsets[k])}: label {lab}")
                    continue
                if not lab.is_integer():
                    non_integral += 1
                labels[i] = int(lab)
                i += 1
        labels = labels[:i]
        if len(labels):
            change = np.flatnonzero(np.diff(labels)) + 1
            starts = np.concatenate([[0], change])
            run_labels = labels[starts]
            uniq, counts = np.unique(labels, return_counts=True)
        else:
            run_labels = uniq = counts = np.zeros(0, np.int64)
        out = {
            "path": str(path),
            "layout": rec.layout,
            "files": files,
            "records": sum(f["records"] for f in files),
            "images": len(rec),
            "identities": int(len(uniq)),
            "identity_records": sum(f["identity_records"] for f in files),
            "labels": {
                "kinds": dict(kinds),
                "min": int(uniq.min()) if len(uniq) else None,
                "max": int(uniq.max()) if len(uniq) else None,
                "contiguous": bool(len(run_labels) == len(uniq)),
                "non_integral": non_integral,
                "invalid": len(invalid),
                "invalid_examples": invalid[:20],
            },
            "images_per_identity": distribution(counts),
            "property": None,
        }
        if rec.property_path:
            out["property"] = {"path": rec.property_path, "error": rec.property_error}
            if rec.property:
                n, h, w = rec.property
                out["property"].update({"num_classes": n, "height": h, "width": w})
        out["sample"] = _sample(rec, sample, seed)
    return out


def _sample(rec: FaceRec, n: int, seed: int) -> dict:
    from PIL import Image, UnidentifiedImageError

    total = len(rec)
    n = min(n, total)
    idx = np.sort(np.random.default_rng(seed).choice(total, n, replace=False)) if n else []
    enc: Counter = Counter()
    sizes: Counter = Counter()
    modes: Counter = Counter()
    nbytes = []
    bad = []
    for i in idx:
        _, img = rec.read(int(i))
        nbytes.append(len(img))
        try:
            with Image.open(io.BytesIO(img)) as im:
                enc[im.format or "?"] += 1
                sizes[f"{im.size[0]}x{im.size[1]}"] += 1
                modes[im.mode] += 1
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            enc["unrecognised"] += 1
            j, key = rec.key(int(i))
            bad.append(f"{rec.parts[j].rec_path}: key {key}: {type(e).__name__}: {e}")
    return {
        "images": int(n),
        "seed": seed,
        "encodings": dict(enc.most_common()),
        "sizes": dict(sizes.most_common(10)),
        "modes": dict(modes.most_common()),
        "bytes_mean": round(float(np.mean(nbytes)), 1) if nbytes else 0.0,
        "unrecognised": bad[:20],
    }


def format_report(info: dict) -> str:
    """The human-readable ``facekit inspect`` text for :func:`inspect`'s dict."""
    lines = [f"{info['path']}", f"  layout            {info['layout']}"]
    for f in info["files"]:
        hdr = f" header {f['header']}" if f["header"] else ""
        idx = "" if f["idx"] else " (no .idx: indexed by scanning)"
        if f["duplicate_offsets"]:
            idx += f" ({f['duplicate_offsets']} idx keys repeat another key's record)"
        lines.append(f"  file              {f['rec']} ({f['bytes']:,} bytes, {f['records']} records{hdr}){idx}")
    lab = info["labels"]
    ipi = info["images_per_identity"]
    lines += [
        f"  records           {info['records']}",
        f"  images            {info['images']}",
        f"  identities        {info['identities']} (identity records: {info['identity_records']})",
        f"  labels            {lab['min']}..{lab['max']}, kinds {lab['kinds']}, "
        f"{'contiguous per identity' if lab['contiguous'] else 'NOT contiguous per identity (shuffled?)'}"
        + (f", {lab['invalid']} NOT class ids (left out)" if lab["invalid"] else ""),
        f"  images/identity   min {ipi['min']}, max {ipi['max']}, mean {ipi['mean']}, median {ipi['median']}",
        "                    " + ", ".join(f"{k}: {v}" for k, v in ipi["histogram"].items()),
    ]
    prop = info["property"]
    if prop is None:
        lines.append("  property          (none)")
    elif prop.get("error"):
        lines.append(f"  property          INVALID: {prop['error']}")
    else:
        lines.append(f"  property          {prop['num_classes']},{prop['height']},{prop['width']}")
    s = info["sample"]
    lines += [
        f"  sample            {s['images']} images (seed {s['seed']}), mean {s['bytes_mean']} bytes",
        f"    encodings       {s['encodings']}",
        f"    sizes (WxH)     {s['sizes']}",
        f"    modes           {s['modes']}",
    ]
    lines += [f"  invalid label     {u}" for u in lab["invalid_examples"]]
    lines += [f"    unrecognised    {u}" for u in s["unrecognised"]]
    return "\n".join(lines)
