"""Face embeddings as data: a folder of Parquet parts a user loads with pyarrow or numpy.

Written by the ``embeddings`` sink (``plugins/embeddings.py``), read back by
:func:`load_embeddings` / :func:`iter_embeddings`. The folder holds:

- ``part-00000.parquet``, ``part-00001.parquet``, ...: at most ``rows_per_part`` faces each,
  in the run's output order (labels non-decreasing, identities contiguous), with the
  columns

  ============== ================================ =========================================
  column         type                             meaning
  ============== ================================ =========================================
  record         int64 (null)                     the RecordIO record key the face was read
                                                  from (``mxrec`` source), else null
  path           string                           the source image (file path, ``rec:key``)
  identity       string                           the identity name as the source gave it
  label          int64                            the class id the run gave the identity
  face           int32                            the face's index within its image
  norm           float32 (null)                   the embedding's L2 norm before
                                                  normalisation (MagFace's quality signal)
  embedding      fixed_size_list<float16|float32> the L2-normalised embedding (D values)
  ============== ================================ =========================================

- ``embeddings.json``: ``{"format": "facekit-embeddings", "version": 1, "dim": D, "dtype":
  "float16"|"float32", "rows": N, "parts": [...], "normalised": true}``.

With numpy: ``np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(-1, D)``
(what :func:`load_embeddings` does). Row groups hold :data:`ROW_GROUP` rows, so writing
keeps at most that many embeddings in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facekit.errors import FacekitError

MANIFEST = "embeddings.json"
FORMAT = "facekit-embeddings"
#: faces per Parquet row group (and the most held in memory while writing)
ROW_GROUP = 8192
DTYPES = {"float16": (np.float16, pa.float16()), "float32": (np.float32, pa.float32())}


def part_name(index: int) -> str:
    """The file name of part ``index``: ``part-00000.parquet``."""
    return f"part-{index:05d}.parquet"


def schema(dim: int, dtype: str) -> pa.Schema:
    """The Arrow schema of a part with ``dim``-value embeddings stored as ``dtype``."""
    return pa.schema(
        [
            ("record", pa.int64()),
            ("path", pa.string()),
            ("identity", pa.string()),
            ("label", pa.int64()),
            ("face", pa.int32()),
            ("norm", pa.float32()),
            ("embedding", pa.list_(DTYPES[dtype][1], dim)),
        ]
    )


def _text(s: str) -> str:
    """Text as Arrow stores it: undecodable bytes of odd file names as ``\\x..`` escapes."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class EmbeddingsWriter:
    """Writes faces' embeddings into ``folder`` (an existing, empty folder) as parts of at
    most ``rows_per_part`` rows; ``dtype``: ``float16`` or ``float32``.

    The dimension D is taken from the first embedding; every later one must have it.
    """

    def __init__(self, folder: Path, dtype: str = "float32", rows_per_part: int = 1_000_000):
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
        self.folder = Path(folder)
        self.dtype = dtype
        self.rows_per_part = int(rows_per_part)
        self.dim: Optional[int] = None
        self.rows = 0
        self.parts: list[str] = []
        self._writer: Optional[pq.ParquetWriter] = None
        self._part_rows = 0
        self._cols: dict[str, list] = {}
        self._emb: Optional[np.ndarray] = None
        self._n = 0  # rows buffered

    def add(self, embedding: np.ndarray, *, record: Optional[int], path: str, identity: str, label: int,
            face: int = 0, norm: Optional[float] = None) -> str:
        """Append one face; returns where it went: ``part-00000.parquet:<row>``.

        Raises:
            FacekitError: the embedding is missing, not one vector, or of another dimension
                than the first.
        """
        if embedding is None:
            raise FacekitError(f"{path}: face {face} has no embedding (the pipeline needs a recognizer)")
        e = np.asarray(embedding, np.float32).reshape(-1)
        if self.dim is None:
            self.dim = int(e.shape[0])
            self._emb = np.empty((ROW_GROUP, self.dim), DTYPES[self.dtype][0])
            self._cols = {k: [] for k in ("record", "path", "identity", "label", "face", "norm")}
        elif e.shape[0] != self.dim:
            raise FacekitError(f"{path}: face {face} has an embedding of {e.shape[0]} values, the others {self.dim}")
        if self._writer is None:
            self._open_part()
        where = f"{self.parts[-1]}:{self._part_rows}"
        self._emb[self._n] = e
        c = self._cols
        c["record"].append(record)
        c["path"].append(_text(path))
        c["identity"].append(_text(identity))
        c["label"].append(int(label))
        c["face"].append(int(face))
        c["norm"].append(None if norm is None else float(norm))
        self._n += 1
        self._part_rows += 1
        self.rows += 1
        if self._n == ROW_GROUP:
            self._flush()
        if self._part_rows == self.rows_per_part:
            self._close_part()
        return where

    def _open_part(self) -> None:
        name = part_name(len(self.parts))
        self.parts.append(name)
        self._writer = pq.ParquetWriter(
            str(self.folder / name), schema(self.dim, self.dtype), compression="zstd", use_dictionary=False
        )
        self._part_rows = 0

    def _flush(self) -> None:
        if not self._n:
            return
        values = pa.array(self._emb[: self._n].reshape(-1), type=DTYPES[self.dtype][1])
        sch = schema(self.dim, self.dtype)
        cols = [pa.array(self._cols[f.name], type=f.type) for f in sch if f.name != "embedding"]
        cols.append(pa.FixedSizeListArray.from_arrays(values, self.dim))
        self._writer.write_table(pa.Table.from_arrays(cols, schema=sch), row_group_size=ROW_GROUP)
        self._cols = {k: [] for k in self._cols}
        self._n = 0

    def _close_part(self) -> None:
        self._flush()
        self._writer.close()
        self._writer = None

    def close(self) -> dict:
        """Finish the last part and write ``embeddings.json``; returns its content."""
        if self._writer is not None:
            self._close_part()
        meta = {
            "format": FORMAT,
            "version": 1,
            "dim": self.dim,
            "dtype": self.dtype,
            "rows": self.rows,
            "parts": self.parts,
            "normalised": True,
        }
        (self.folder / MANIFEST).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return meta

    def abort(self) -> None:
        """Close the open part, if any (the caller removes the folder)."""
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None


@dataclass
class Embeddings:
    """Embeddings read back: ``vectors`` ``(N, D)`` (float32 unless asked otherwise), one row
    per face in file order, and ``table``, the other columns (record, path, identity,
    label, face, norm) as a pyarrow Table."""

    vectors: np.ndarray
    table: pa.Table


def read_manifest(folder: Path) -> dict:
    """``embeddings.json`` of an embeddings folder.

    Raises:
        FacekitError: missing, unreadable or not a facekit embeddings manifest (names it).
    """
    path = Path(folder) / MANIFEST
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FacekitError(f"{path}: not a facekit embeddings folder: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("parts"), list):
        raise FacekitError(f"{path}: not a facekit embeddings manifest")
    return meta


def iter_embeddings(folder: Path, dtype=np.float32) -> Iterator[Embeddings]:
    """The embeddings of ``folder`` a row group at a time (flat memory): each an
    :class:`Embeddings` of at most :data:`ROW_GROUP` faces, in file order.

    Raises:
        FacekitError: a part is missing or is not an embeddings part (names it).
    """
    meta = read_manifest(folder)
    for name in meta["parts"]:
        path = Path(folder) / str(name)
        try:
            pf = pq.ParquetFile(str(path))
            for i in range(pf.num_row_groups):
                t = pf.read_row_group(i)
                emb = t.column("embedding").combine_chunks()
                dim = emb.type.list_size
                vec = np.asarray(emb.flatten()).reshape(-1, dim).astype(dtype, copy=False)
                yield Embeddings(vec, t.drop_columns(["embedding"]))
        except (OSError, KeyError, pa.ArrowException, AttributeError) as e:
            raise FacekitError(f"{path}: not a readable embeddings part: {e}") from None


def load_embeddings(folder: Path, dtype=np.float32) -> Embeddings:
    """All of ``folder``'s embeddings at once: ``vectors`` ``(N, D)`` ``dtype`` (N x D x 4
    bytes for float32: 2 GB for 1M faces of 512 values; use :func:`iter_embeddings` or
    ``dtype=np.float16`` for less) and the other columns.

    Raises:
        FacekitError: see :func:`iter_embeddings`.
    """
    meta = read_manifest(folder)
    dim = int(meta.get("dim") or 0)
    chunks = list(iter_embeddings(folder, dtype))
    if not chunks:
        return Embeddings(np.zeros((0, dim), dtype), schema(max(dim, 1), "float32").empty_table().drop_columns(["embedding"]))
    return Embeddings(np.concatenate([c.vectors for c in chunks]), pa.concat_tables([c.table for c in chunks]))
