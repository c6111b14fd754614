"""The results table: one row per face kept or rejected and per rejected source image.

``<output>/results.parquet`` (Apache Parquet, written with pyarrow) holds, in source order:

============== ======================== =============================================
column         type                     meaning
============== ======================== =============================================
path           string                   the source image (file path, ``rec:key``, ...)
identity       string                   identity name as the source gave it
label          int64                    class id written to the sinks; -1 when not kept
reason         string (null when kept)  why the image or face was rejected
detail         string (null when kept)  the reject's one-line detail
face           int32 (null)             face index within the image
score          float32 (null)           detection score
box            list<float32>[4] (null)  x1, y1, x2, y2 in source-image pixels
landmarks      list<float32>[10] (null) five points x0, y0, ..., x4, y4 in source pixels
                                        (left eye, right eye, nose, left/right mouth)
aligned        list<float32>[10] (null) the same five points in the aligned crop's pixels
transform      list<float64>[6] (null)  2x3 affine source -> crop, row-major
outputs        list<string>             per sink (``summary.json`` ``sinks`` order): where
                                        the face went (RecordIO record id, file), or null
similarity     float32 (null)           ``select: identity``: cosine similarity to the
                                        identity's other kept faces; with a ``clean``
                                        stage, to the identity's robust centre
flag           string (null)            ``far_from_identity``: likely label noise;
                                        ``label_noise``, ``mixed_identity``,
                                        ``duplicate``: a ``clean`` stage's flags
embedding_norm float32 (null)           with a recognizer: the L2 norm of the face's
                                        embedding before normalisation (a quality
                                        signal of ArcFace-family models, MagFace)
blur, yaw,     float32 (null)           with a ``quality`` stage: the face's signals
pitch, roll,                            (:class:`facekit.clean.quality.FaceQuality`:
inter_ocular,                           Laplacian variance, degrees, source pixels,
face_size,                              grey levels; ``quality``: a learned model's
brightness,                             score), also on faces rejected for them
contrast,
quality
duplicate_of   string (null)            with a ``clean`` stage: the kept face this face
                                        copies (``duplicate``)
cluster        int32 (null)             with a ``clean`` stage, in a two-people
                                        identity: 0 its main person, 1 the other
merge_with     string (null)            the identity a kept face was written under when
                                        a decision moved it from ``identity``: the
                                        ``merge`` step joined its identity to another,
                                        or ``mixed: split`` made its cluster
                                        ``<identity>#2``; null: written under
                                        ``identity``
============== ======================== =============================================

Row groups hold :data:`ROW_GROUP` rows whatever the shard size, so the file's bytes depend
only on the rows: equal for every executor and shard size. Rows wait as Python objects
only :data:`CHUNK` at a time (about 1.5 kB each), then as Arrow columns (a tenth of that)
until their row group is written. Memory is what bounds these numbers (peak RSS of a
pass-through pack, measured with ``benchmarks/bench_detect_align.py --rss``):

- the Parquet writer keeps ~12 kB of metadata per row group until the file is closed, so
  row groups are not small (1,024 rows: +25 MiB at 1M rows; 8,192 rows: +3 MiB);
- it buffers a data page per column (1 MiB by default, and a dictionary): writing the
  first 8,192-row group then cost +10 MiB; with 64 KiB pages and no dictionaries (the
  paths are unique anyway) +3.6 MiB, and a smaller file.
- Arrow's allocator: pyarrow's default, mimalloc, keeps pages it has freed, and with it
  the peak RSS of a run grew with the row groups written (rec -> folders: 128 MiB at 1k
  records, 146 MiB at 1M). ``import facekit`` therefore makes jemalloc Arrow's default on
  Linux (``ARROW_DEFAULT_MEMORY_POOL``, unless already set; 122 and 134 MiB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from facekit.clean.quality import QUALITY_COLUMNS
from facekit.pipeline.gate import Row

RESULTS_FILE = "results.parquet"
#: rows per Parquet row group (and the most rows held in memory, as Arrow columns)
ROW_GROUP = 8192
#: rows held as Python objects before they become Arrow columns (divides ROW_GROUP)
CHUNK = 1024
#: the Parquet data page size (bytes): the writer's buffer per column
PAGE_BYTES = 64 << 10

SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("identity", pa.string()),
        ("label", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("face", pa.int32()),
        ("score", pa.float32()),
        ("box", pa.list_(pa.float32())),
        ("landmarks", pa.list_(pa.float32())),
        ("aligned", pa.list_(pa.float32())),
        ("transform", pa.list_(pa.float64())),
        ("outputs", pa.list_(pa.string())),
        ("similarity", pa.float32()),
        ("flag", pa.string()),
        ("embedding_norm", pa.float32()),
        *[(k, pa.float32()) for k in QUALITY_COLUMNS if k != "embedding_norm"],
        ("duplicate_of", pa.string()),
        ("cluster", pa.int32()),
        ("merge_with", pa.string()),
    ]
)
#: the quality columns (those of :class:`FaceQuality` but ``embedding_norm``, its own column)
QUALITY = tuple(k for k in QUALITY_COLUMNS if k != "embedding_norm")


def _flat(a) -> Optional[list]:
    return None if a is None else a.reshape(-1).tolist()


def _text(s: str) -> str:
    """Text as Arrow stores it (UTF-8): undecodable bytes of odd file names kept as
    ``\\x..`` escapes (file names on Linux are bytes)."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class ResultsWriter:
    """Writes :class:`~facekit.pipeline.gate.Row` objects to a Parquet file, flat memory.

    ``path``: the (staging) file; ``sinks``: how many sinks a row's ``outputs`` list has.
    """

    def __init__(self, path: Path, sinks: int):
        self.path = path
        self.sinks = sinks
        self.writer = pq.ParquetWriter(
            str(path), SCHEMA, compression="zstd", write_statistics=False, use_dictionary=False, data_page_size=PAGE_BYTES
        )
        self.cols: dict[str, list] = {f.name: [] for f in SCHEMA}
        self.batches: list[pa.RecordBatch] = []  # the row group being filled, CHUNK rows each
        self.rows = 0

    def add(self, row: Row, outputs: Optional[list]) -> None:
        """Append ``row``; ``outputs``: its place in each sink (kept faces), else None."""
        s, r = row.sample, row.reject
        c = self.cols
        src = s if s is not None else r
        c["path"].append(_text(src.path))
        moved = s is not None and s.source_identity is not None
        c["identity"].append(_text(s.source_identity if moved else src.identity))
        moved = moved and r is None  # merge_with: where a kept face was written
        c["label"].append(s.label if s is not None and r is None else -1)
        c["reason"].append(None if r is None else r.reason)
        c["detail"].append(None if r is None else _text(r.detail))
        if s is not None and s.score is not None:
            c["face"].append(s.face_id)
            c["score"].append(s.score)
        else:
            c["face"].append(None if s is None else s.face_id)
            c["score"].append(None)
        c["box"].append(_flat(None if s is None else s.box))
        c["landmarks"].append(_flat(None if s is None else s.landmarks))
        c["aligned"].append(_flat(None if s is None else s.aligned_landmarks))
        c["transform"].append(_flat(None if s is None else s.transform))
        c["outputs"].append(outputs if outputs is not None else [None] * self.sinks)
        c["similarity"].append(None if s is None else s.similarity)
        c["flag"].append(None if s is None or not s.flag else s.flag)
        c["embedding_norm"].append(None if s is None else s.embedding_norm)
        q = None if s is None else s.quality
        for k in QUALITY:
            v = None if q is None else getattr(q, k)
            c[k].append(None if v is None or v != v else v)  # NaN (not measured): null
        c["duplicate_of"].append(None if s is None or s.duplicate_of is None else _text(s.duplicate_of))
        c["cluster"].append(None if s is None else s.cluster)
        c["merge_with"].append(_text(s.identity) if moved else None)
        self.rows += 1
        if len(c["path"]) >= CHUNK:
            self._columns()
            if self.rows % ROW_GROUP == 0:
                self._flush()

    def _columns(self) -> None:
        """The rows held as Python objects become one Arrow record batch."""
        if self.cols["path"]:
            self.batches.append(pa.RecordBatch.from_pydict(self.cols, schema=SCHEMA))
            self.cols = {f.name: [] for f in SCHEMA}

    def _flush(self) -> None:
        """Write the rows held as one row group (its record batches are its chunks: no copy)."""
        self._columns()
        if self.batches:
            self.writer.write_table(pa.Table.from_batches(self.batches, schema=SCHEMA), row_group_size=ROW_GROUP)
            self.batches = []

    def close(self) -> dict:
        """Finish the file; returns ``{"path", "rows"}``."""
        self._flush()
        self.writer.close()
        return {"rows": self.rows}

    def abort(self) -> None:
        try:
            self.writer.close()
        except Exception:
            pass


def read_results(path: Path) -> pa.Table:
    """The results table of a run (``<output>/results.parquet``) as a pyarrow Table
    (``.to_pandas()`` / ``.to_pylist()`` for notebooks)."""
    return pq.read_table(str(path))
