"""Verification pairs as folders: source ``pairs`` (a pairs list + an image root) and sink
``pairs`` (a folder of pair images + a ``path1 path2 0|1`` list that the source reads back).

Pair semantics: ``facekit.formats.pairs`` (both images of pair i share identity ``pair<i>``; a pair
whose face is missing stops the run unless ``on_missing_face: drop_pair``).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

import facekit
from facekit.formats import (
    DROP_PAIR,
    PairCollector,
    PairSourceParams,
    check_images,
    pair_identity,
    pair_required,
    read_pairs,
)


class PairsSourceParams(PairSourceParams):
    pairs: facekit.InputPath = Field(description="pairs file: LFW pairs.txt or a 'path1 path2 0|1' list")
    root: Optional[facekit.InputPath] = Field(
        None, description="folder the image paths are relative to (default: the pairs file's folder)"
    )
    format: Literal["auto", "lfw", "list"] = Field("auto", description="pairs file format (auto: by the first line)")
    extension: str = Field("jpg", description="image extension of the LFW format (name/name_%04d.<ext>)")


class PairsSource(facekit.Source):
    """Images of a pairs list in pair order (a0, b0, a1, b1, ...) with their same/different flag."""

    description = "pairs list + image root -> pair images in order (a0, b0, a1, b1, ...) with their same/different flag"
    name = "pairs"
    Params = PairsSourceParams

    def __init__(self, params):
        super().__init__(params)
        p = params
        self.root = p.root if p.root is not None else p.pairs.parent
        if not self.root.is_dir():
            raise facekit.ConfigError(f"pairs source: root {self.root} is not a folder")
        self.pairs = read_pairs(p.pairs, p.format, p.extension.lstrip("."))
        check_images(self.pairs, self.root, p.pairs)
        self.where = {pair_identity(i): f"{p.pairs}:{pr.line}" for i, pr in enumerate(self.pairs)}

    def count(self):
        """Two images per pair of the list (read and checked at construction)."""
        return 2 * len(self.pairs)

    def __iter__(self):
        drop = self.params.on_missing_face == DROP_PAIR
        total = len(self.pairs)
        for i, pr in enumerate(self.pairs):
            ident = pair_identity(i)
            where = self.where[ident]
            required = pair_required(where, self.params.on_missing_face)
            for side, rel in enumerate((pr.a, pr.b)):
                ref = facekit.PairRef(i, side, pr.issame, total, where, drop)
                yield facekit.Sample(
                    key=2 * i + side, path=str(self.root / rel), identity=ident, pair=ref, required=required
                )


class PairsSinkParams(facekit.Params):
    path: facekit.OutputPath = Field(description="output folder (replaced atomically at the end of the run)")
    list_file: str = Field("pairs.txt", description="pairs list written in the folder: 'images/A images/B 0|1'")
    images_dir: str = Field("images", description="sub-folder of the images, named <pair>_a.<ext>, <pair>_b.<ext>")


_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"BM", "bmp"), (b"GIF8", "gif"))


def image_extension(data: bytes) -> str:
    """File extension for encoded image bytes, from their signature (``img`` if unknown)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return "img"


class PairsSink(facekit.Sink):
    """Pair images as files, ``<images_dir>/<pair>_a.<ext>`` and ``_b``, bytes unchanged, plus
    a ``path1 path2 0|1`` list in pair order (pair numbers = the source's pair index)."""

    description = "folder of pair images (<pair>_a/_b, bytes unchanged) + a path1 path2 0|1 list"
    name = "pairs"
    Params = PairsSinkParams

    def open(self, publication):
        p = self.params
        self.dir = publication.dir(p.path)
        (self.dir.staging / p.images_dir).mkdir()
        self.list = open(self.dir.staging / p.list_file, "w", encoding="utf-8", newline="\n")
        self.pairs = PairCollector(f"sink pairs ({p.path})")
        self.names: list[str] = []
        self.width = 5

    def write(self, s):
        ref = self.pairs.add(s)
        self.width = max(self.width, len(str(ref.total - 1)))
        rel = f"{self.params.images_dir}/{ref.index:0{self.width}d}_{'ab'[ref.side]}.{image_extension(s.data)}"
        with open(self.dir.staging / rel, "wb") as f:
            f.write(s.data)
        self.names.append(rel)
        if ref.side == 1:
            self.list.write(f"{self.names[0]}\t{self.names[1]}\t{int(ref.issame)}\n")
            self.names = []

    def close(self):
        stats = self.pairs.finish()
        self.list.close()
        return {"path": str(self.params.path), **stats}

    def abort(self):
        if hasattr(self, "list"):
            self.list.close()


@facekit.hookimpl
def register_stages(register):
    register(PairsSource)
    register(PairsSink)
