"""``facekit show``: a contact sheet of an existing dataset, RecordIO (``train.rec`` +
``train.idx``, one file or a shard set, read with :mod:`facekit.formats.facerec`) or
identity folders (``ROOT/<identity>/<image>``, e.g. the ``folders`` sink's output)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from facekit.errors import FacekitError, RecordIOError
from facekit.formats.facerec import FaceRec, label_of
from facekit.report.load import decode_bgr
from facekit.report.thumbs import fit

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _natural(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _is_rec(p: Path) -> bool:
    if p.is_file():
        return p.suffix in (".rec", ".idx")
    return p.is_dir() and any(f.suffix == ".rec" for f in p.iterdir() if f.is_file())


def _tile(img: np.ndarray, text: str, side: int) -> np.ndarray:
    t = np.full((side + 16, side, 3), 40, np.uint8)
    t[:side] = fit(img, side)
    cv2.putText(t, text[: max(4, side // 6)], (3, side + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (235, 235, 235), 1, cv2.LINE_AA)
    return t


def _grid(tiles: list[np.ndarray], cols: int) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    cols = min(cols, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    out = np.full((rows * (h + 2), cols * (w + 2), 3), 20, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = t
    return out


def _rec_items(rec: FaceRec, identity: Optional[str], count: int) -> list[tuple[int, int]]:
    """``[(image index, label)]``: ``count`` images spread over the dataset, or the first
    ``count`` images of label ``identity`` (insightface identity records when present,
    else a header scan)."""
    n = len(rec)
    if n == 0:
        raise FacekitError(f"{rec.path}: the dataset has no images")
    if identity is None:
        picks = sorted({int(i) for i in np.linspace(0, n - 1, min(count, n))})
        return [(i, -1) for i in picks]
    try:
        want = int(identity)
    except ValueError:
        raise FacekitError(f"{rec.path}: --identity must be a label (an integer) for a RecordIO dataset, not {identity!r}") from None
    out: list[tuple[int, int]] = []
    for pi, part in enumerate(rec.parts):
        base = rec._starts[pi]
        if part.layout == "insightface" and len(part.identity_keys):
            key_to_index = {int(k): i for i, k in enumerate(part.image_keys.tolist())}
            for _, start, end in part.identity_ranges():
                if start not in key_to_index:
                    continue
                h, _ = part.read_header(key_to_index[start])
                if int(label_of(h)) == want:
                    out += [(base + key_to_index[k], want) for k in range(start, end) if k in key_to_index][: count - len(out)]
        else:
            for i in range(len(part)):
                h, _ = part.read_header(i)
                if int(label_of(h)) == want:
                    out.append((base + i, want))
                    if len(out) >= count:
                        break
        if len(out) >= count:
            break
    if not out:
        raise FacekitError(f"{rec.path}: no image with label {want}")
    return out


def _folder_items(root: Path, identity: Optional[str], count: int) -> list[tuple[Path, str]]:
    dirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: _natural(d.name))
    if not dirs:
        raise FacekitError(f"{root}: neither a RecordIO dataset (.rec) nor identity folders (ROOT/<identity>/<image>)")

    def images(d: Path) -> list[Path]:
        return sorted((f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXT and f.is_file()), key=lambda f: _natural(f.name))

    if identity is not None:
        match = [d for d in dirs if d.name == identity] or [
            d for d in dirs if re.fullmatch(r"\D*0*" + re.escape(identity.lstrip("0") or "0"), d.name)]
        if not match:
            raise FacekitError(f"{root}: no identity folder {identity!r} (nor <prefix>{identity})")
        return [(f, match[0].name) for f in images(match[0])[:count]]
    picks = sorted({int(i) for i in np.linspace(0, len(dirs) - 1, min(count, len(dirs)))})
    out = []
    per = max(1, count // len(picks))
    for i in picks:
        out += [(f, dirs[i].name) for f in images(dirs[i])[:per]]
    return out[:count]


def contact_sheet(path: str | os.PathLike, identity: Optional[str] = None, count: int = 64, cols: int = 8,
                  side: int = 112) -> np.ndarray:
    """A contact sheet of a dataset as a ``(H, W, 3)`` uint8 BGR image.

    Args:
        path: a RecordIO dataset (folder with ``train.rec``/``train.idx`` or a shard set,
            or a ``.rec``/``.idx`` file) or a folder of identity folders.
        identity: only this identity: a label (RecordIO; for folders also ``<prefix><label>``)
            or an identity folder's name. None: ``count`` images spread over the dataset.
        count: most images shown. cols: tiles per row. side: tile side in pixels.
    Each tile is the image fitted into ``side`` x ``side`` with its label (RecordIO) or
    folder name under it.
    Raises:
        FacekitError: not a dataset, unreadable or undecodable records/files (names the
            file and key), an identity that is not there.
    """
    p = Path(path)
    if not p.exists():
        raise FacekitError(f"{p}: no such file or folder")
    tiles = []
    if _is_rec(p):
        try:
            rec = FaceRec(p)
        except (RecordIOError, OSError) as e:
            raise FacekitError(" ".join(str(e).split())) from None
        try:
            for i, lab in _rec_items(rec, identity, count):
                pi, j = rec.locate(i)
                part = rec.parts[pi]
                h, img = part.read(j)
                label = int(label_of(h)) if lab < 0 else lab
                tiles.append(_tile(decode_bgr(img, f"{part.rec_path}: key {int(part.image_keys[j])}"), f"{label}", side))
        except RecordIOError as e:
            raise FacekitError(" ".join(str(e).split())) from None
        finally:
            for part in rec.parts:
                part.close()
    elif p.is_dir():
        for f, name in _folder_items(p, identity, count):
            try:
                data = f.read_bytes()
            except OSError as e:
                raise FacekitError(f"{f}: {e.strerror or e}") from None
            tiles.append(_tile(decode_bgr(data, str(f)), name, side))
    else:
        raise FacekitError(f"{p}: not a RecordIO dataset (.rec/.idx) or a folder of identity folders")
    if not tiles:
        raise FacekitError(f"{p}: no images to show" + (f" for identity {identity!r}" if identity else ""))
    return _grid(tiles, cols)
