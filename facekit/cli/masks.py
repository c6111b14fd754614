"""``facekit mask-sheet``: a contact sheet PNG of a masked dataset (the ``masked_rec``
sink's folder: ``train.rec`` + ``mask_out.rec`` + ``mask.rec``), to look at what was made.

Each tile is three 112x112 panels side by side: the clean face (``train.rec``), the masked
face (``mask_out.rec``) and the occlusion mask (``mask.rec``: white clean, black occluded),
with ``key label kind`` under it (from ``mask.tsv``). Keys are spread evenly over the
dataset.
"""

from __future__ import annotations

import os
from pathlib import Path

import click
import cv2
import numpy as np

from facekit.errors import FacekitError, RecordIOError
from facekit.formats.facerec import FaceRec
from facekit.formats.recordio import IndexedRecordIOReader, unpack


def _decode(data: bytes, where: str) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise FacekitError(f"{where}: image bytes not decodable")
    return img


def contact_sheet(folder: str | os.PathLike, count: int = 24, cols: int = 4, panel: int = 112) -> np.ndarray:
    """The contact sheet of a masked dataset folder as a ``(H, W, 3)`` uint8 BGR image.

    Args:
        folder: holds ``train.rec/.idx`` (insightface layout), ``mask_out.rec/.idx``,
            ``mask.rec/.idx`` and optionally ``mask.tsv``.
        count: number of faces shown (spread evenly over the keys). cols: tiles per row.
        panel: side of each panel in pixels.
    Raises:
        FacekitError: missing or unreadable files (names the file and key).
    """
    folder = Path(folder)
    try:
        rec = FaceRec(folder, "insightface")
        out = IndexedRecordIOReader(folder / "mask_out.idx", folder / "mask_out.rec")
        msk = IndexedRecordIOReader(folder / "mask.idx", folder / "mask.rec")
    except (RecordIOError, OSError) as e:
        raise FacekitError(f"{folder}: not a masked dataset folder: {e}") from None
    kinds = {}
    tsv = folder / "mask.tsv"
    if tsv.is_file():
        for line in tsv.read_text(encoding="utf-8").splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) == 4 and parts[0].isdigit():
                kinds[int(parts[0])] = parts[2]
    n = len(rec)
    if n == 0:
        raise FacekitError(f"{folder}: train.rec has no images")
    picks = sorted({int(i) for i in np.linspace(0, n - 1, min(count, n))})
    tiles = []
    try:
        for i in picks:
            _, key = rec.key(i)
            header, clean = rec.read(i)
            label = int(header.label if np.isscalar(header.label) else header.label[0])
            masked = _decode(unpack(out.read_idx(key))[1], f"{folder / 'mask_out.rec'}: key {key}")
            mask = _decode(unpack(msk.read_idx(key))[1], f"{folder / 'mask.rec'}: key {key}")
            row = [cv2.resize(_decode(clean, f"{folder / 'train.rec'}: key {key}"), (panel, panel)),
                   cv2.resize(masked, (panel, panel)), cv2.resize(mask, (panel, panel), interpolation=cv2.INTER_NEAREST)]
            tile = np.full((panel + 16, 3 * panel + 4, 3), 40, np.uint8)
            tile[:panel, :panel] = row[0]
            tile[:panel, panel + 2 : 2 * panel + 2] = row[1]
            tile[:panel, 2 * panel + 4 :] = row[2]
            text = f"{key} L{label} {kinds.get(key, '')}"
            cv2.putText(tile, text, (3, panel + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (235, 235, 235), 1, cv2.LINE_AA)
            tiles.append(tile)
    except RecordIOError as e:
        raise FacekitError(str(e)) from None
    finally:
        rec.close()
        out.close()
        msk.close()
    th, tw = tiles[0].shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    sheet = np.full((rows * (th + 6) + 6, min(cols, len(tiles)) * (tw + 6) + 6, 3), 20, np.uint8)
    for j, tile in enumerate(tiles):
        r, c = divmod(j, cols)
        sheet[6 + r * (th + 6) : 6 + r * (th + 6) + th, 6 + c * (tw + 6) : 6 + c * (tw + 6) + tw] = tile
    return sheet


@click.command("mask-sheet")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", default="mask-sheet.png", show_default=True, help="PNG to write")
@click.option("-n", "--count", default=24, show_default=True, help="faces shown, spread over the keys")
@click.option("--cols", default=4, show_default=True, help="tiles per row")
def mask_sheet_command(folder, output, count, cols):
    """Contact sheet PNG of a masked dataset: clean | masked | mask per face."""
    try:
        sheet = contact_sheet(folder, count, cols)
    except FacekitError as e:
        raise click.ClickException(str(e)) from None
    if not cv2.imwrite(str(output), sheet):
        raise click.ClickException(f"{output}: cannot write the PNG")
    click.echo(f"{output}: {sheet.shape[1]}x{sheet.shape[0]} contact sheet of {folder}")
