"""The work folder: finished shards kept on disk so that a crashed run resumes.

``<output>/.facekit/shards/`` holds ``fingerprint.json`` and, per finished shard ``N``,
``shard-N.parquet`` (every item's outcome: the kept faces' encoded bytes and fields, the
rejects) and ``shard-N.done.json`` (the shard's index and stats, the pipeline fingerprint,
the digest of the shard's input and the size and SHA-256 of its Parquet file), written
after the Parquet file, so a done file always means a whole shard. A rerun of the same
pipeline reuses a shard when its done file carries the same fingerprint, index and input
digest and its Parquet file is the one the done file describes (same size and SHA-256: a
Parquet file damaged, cut short or swapped with another shard's is not reused, the shard
runs again and counts in the summary's ``run_again``); a changed pipeline empties the
folder first. The engine removes the folder once the run's outputs are published.

The fingerprint (:mod:`facekit.pipeline.fingerprint`) covers what shapes a shard's
product: the source, detector, aligner and augmenters with their parameters, the encode
settings, the shard size, facekit's and each plugin's version and code (every file of the
plugin's package and distribution) and the content of every model file they read
(SHA-256, an ONNX model's external-data files included). It leaves out the output folder,
the executor and the sinks: a run resumed with more workers, on a cluster, or with one
more sink still reuses its shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facekit.clean.quality import QUALITY_COLUMNS, FaceQuality
from facekit.formats.atomic import atomic_write_text
from facekit.pipeline.shards import STAGE_ERROR, Outcome, Shard, ShardResult, file_stamp
from facekit.stages import Occlusion, PairRef, Reject, Sample

WORK_DIR = "shards"
#: model files up to this size are hashed; a larger file (a source dataset) is known by
#: its size and modification time
HASH_LIMIT = 1 << 30
#: a done file larger than this is not ours
MAX_DONE_BYTES = 1 << 20

log = logging.getLogger(__name__)

_F32 = pa.list_(pa.float32())
SCHEMA = pa.schema(
    [
        ("item", pa.int32()),
        ("kind", pa.int8()),  # 0 kept sample, 1 reject, 2 an item that left nothing
        ("read", pa.int8()),
        ("key", pa.int64()),
        ("path", pa.binary()),
        ("identity", pa.binary()),
        ("data", pa.large_binary()),
        ("face_id", pa.int32()),
        ("score", pa.float64()),
        ("box", _F32),
        ("landmarks", _F32),
        ("aligned", _F32),
        ("transform", pa.list_(pa.float64())),
        ("label", pa.int64()),
        ("stem", pa.binary()),
        ("record_key", pa.int64()),
        ("per_face_identity", pa.bool_()),
        ("required", pa.binary()),
        ("pair", pa.binary()),  # PairRef fields as JSON
        ("occ_data", pa.binary()),
        ("occ_mask", pa.binary()),
        ("occ_covered", pa.int64()),
        ("occ_kind", pa.binary()),
        ("embedding", _F32),
        ("embedding_norm", pa.float32()),
        ("quality", pa.list_(pa.float64())),  # FaceQuality's fields, in QUALITY_COLUMNS order
        ("similarity", pa.float64()),
        ("duplicate_of", pa.binary()),
        ("cluster", pa.int32()),
        ("flag", pa.binary()),
        ("source_identity", pa.binary()),
        ("reason", pa.binary()),
        ("detail", pa.binary()),
    ]
)


def _t(s: Optional[str]) -> Optional[bytes]:
    """Text as stored: UTF-8 bytes, undecodable bytes of odd file names kept as they were
    (``surrogateescape``), so any name round-trips exactly."""
    return None if s is None else s.encode("utf-8", "surrogateescape")


def _u(b: Optional[bytes]) -> Optional[str]:
    return None if b is None else b.decode("utf-8", "surrogateescape")


def _arr(v, shape, dtype):
    return None if v is None else np.asarray(v, dtype).reshape(shape)


def result_table(result: ShardResult) -> pa.Table:
    """A shard's outcomes as an Arrow table (:data:`SCHEMA`), lossless."""
    cols: dict[str, list] = {f.name: [] for f in SCHEMA}

    def row(item, kind, read, s=None, r=None, ident=""):
        c = cols
        c["item"].append(item)
        c["kind"].append(kind)
        c["read"].append(read)
        src = r if r is not None else s  # a reject about a face: the reject names the image
        c["path"].append(_t(src.path) if src is not None else b"")
        c["identity"].append(_t(src.identity) if src is not None else _t(ident))
        c["reason"].append(None if r is None else _t(r.reason))
        c["detail"].append(None if r is None else _t(r.detail))
        c["required"].append(_t(src.required) if src is not None else b"")
        if s is None:
            for k in ("key", "data", "face_id", "score", "box", "landmarks", "aligned", "transform", "label", "stem",
                      "record_key", "per_face_identity", "pair", "occ_data", "occ_mask", "occ_covered", "occ_kind",
                      "embedding", "embedding_norm", "quality", "similarity", "duplicate_of", "cluster", "flag", "source_identity"):
                c[k].append(None)
            return
        c["key"].append(s.key)
        c["data"].append(bytes(s.data) if s.data is not None else None)
        c["face_id"].append(s.face_id)
        c["score"].append(s.score)
        c["box"].append(None if s.box is None else np.asarray(s.box, np.float32).reshape(-1).tolist())
        c["landmarks"].append(None if s.landmarks is None else np.asarray(s.landmarks, np.float32).reshape(-1).tolist())
        c["aligned"].append(
            None if s.aligned_landmarks is None else np.asarray(s.aligned_landmarks, np.float32).reshape(-1).tolist()
        )
        c["transform"].append(None if s.transform is None else np.asarray(s.transform, np.float64).reshape(-1).tolist())
        c["label"].append(s.label)
        c["stem"].append(None if s.stem is None else _t(s.stem))
        c["record_key"].append(s.record_key)
        c["per_face_identity"].append(s.per_face_identity)
        c["pair"].append(None if s.pair is None else _t(json.dumps(s.pair.__dict__)))
        o = s.occlusion
        c["occ_data"].append(None if o is None else o.data)
        c["occ_mask"].append(None if o is None else o.mask)
        c["occ_covered"].append(None if o is None else o.covered)
        c["occ_kind"].append(None if o is None else _t(o.kind))
        c["embedding"].append(None if s.embedding is None else np.asarray(s.embedding, np.float32).reshape(-1).tolist())
        c["embedding_norm"].append(s.embedding_norm)
        c["quality"].append(None if s.quality is None else [getattr(s.quality, k) for k in QUALITY_COLUMNS])
        c["similarity"].append(s.similarity)
        c["duplicate_of"].append(_t(s.duplicate_of))
        c["cluster"].append(s.cluster)
        c["flag"].append(_t(s.flag))
        c["source_identity"].append(_t(s.source_identity))

    for i, oc in enumerate(result.outcomes):
        first = True
        for s in oc.samples:
            row(i, 0, oc.read if first else 0, s=s)
            first = False
        for r in oc.rejects:
            row(i, 1, oc.read if first else 0, s=r.face, r=r)
            first = False
        if first:
            row(i, 2, oc.read, ident=oc.identity)
    return pa.table(cols, schema=SCHEMA)


def table_outcomes(table: pa.Table, items: int) -> list[Outcome]:
    """The outcomes :func:`result_table` stored (``items`` of them, in order).

    Raises:
        ValueError: the table does not describe ``items`` items.
    """
    return rows_outcomes(table.to_pylist(), items)


def rows_outcomes(rows: Iterable[dict], items: int) -> list[Outcome]:
    """:func:`table_outcomes` of the table's rows as dicts, taken one by one (a kept shard
    is read batch by batch: only the outcomes stay, see :meth:`WorkFolder.reuse`).

    Raises:
        ValueError: the rows do not describe ``items`` items.
    """
    outs: list[Optional[Outcome]] = [None] * items
    for d in rows:
        i = d["item"]
        if not 0 <= i < items:
            raise ValueError(f"item {i} out of range")
        oc = outs[i]
        if oc is None:
            oc = outs[i] = Outcome(_u(d["identity"]))
        oc.read += d["read"]
        if d["kind"] == 1:
            face = _sample(d) if d["key"] is not None else None
            oc.rejects.append(
                Reject(_u(d["path"]), _u(d["reason"]), _u(d["detail"]), _u(d["identity"]), _u(d["required"]), face)
            )
        elif d["kind"] == 0:
            oc.samples.append(_sample(d))
    if any(o is None for o in outs):
        raise ValueError("items missing")
    return outs  # type: ignore[return-value]


def _sample(d: dict) -> Sample:
    """The :class:`Sample` a row of :data:`SCHEMA` stores."""
    occ = None
    if d["occ_data"] is not None:
        occ = Occlusion(d["occ_data"], d["occ_mask"], d["occ_covered"], _u(d["occ_kind"]))
    return Sample(
        key=d["key"],
        path=_u(d["path"]),
        identity=_u(d["identity"]),
        data=d["data"],
        face_id=d["face_id"],
        box=_arr(d["box"], (4,), np.float32),
        score=d["score"],
        landmarks=_arr(d["landmarks"], (5, 2), np.float32),
        aligned_landmarks=_arr(d["aligned"], (5, 2), np.float32),
        transform=_arr(d["transform"], (2, 3), np.float64),
        label=d["label"],
        occlusion=occ,
        stem=_u(d["stem"]),
        record_key=d["record_key"],
        per_face_identity=bool(d["per_face_identity"]),
        required=_u(d["required"]) or "",
        pair=None if d["pair"] is None else PairRef(**json.loads(_u(d["pair"]))),
        embedding=None if d["embedding"] is None else np.asarray(d["embedding"], np.float32),
        embedding_norm=d["embedding_norm"],
        quality=None if d["quality"] is None else FaceQuality(*d["quality"]),
        similarity=d["similarity"],
        duplicate_of=_u(d["duplicate_of"]),
        cluster=d["cluster"],
        flag=_u(d["flag"]) or "",
        source_identity=_u(d["source_identity"]),
    )


#: about this many bytes of a kept shard's rows are decoded at a time when it is reused
READ_BYTES = 8 << 20


def _kept_rows(path: Path) -> Iterator[dict]:
    """The rows of a kept shard's Parquet file (:data:`SCHEMA`), decoded in batches of
    about :data:`READ_BYTES` (1 to 1024 rows) from 1 MiB reads, page checksums verified.

    Raises:
        ValueError: the file's table is not :data:`SCHEMA`.
    """
    with pq.ParquetFile(str(path), pre_buffer=False, buffer_size=1 << 20, page_checksum_verification=True) as pf:
        if not pf.schema_arrow.equals(SCHEMA):
            raise ValueError("its table is not a kept shard's")
        md = pf.metadata
        size = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
        batch = max(1, min(1024, md.num_rows * READ_BYTES // max(size, 1)))
        for b in pf.iter_batches(batch_size=batch, use_threads=False):
            yield from b.to_pylist()


def file_digest(path: Path) -> str:
    """SHA-256 of a model file (hex), or for a file over :data:`HASH_LIMIT` its
    :func:`~facekit.pipeline.shards.file_stamp` (size, mtime, ctime, inode, device)."""
    st = path.stat()
    if st.st_size > HASH_LIMIT:
        return "stamp " + file_stamp(path).replace("\0", " ")
    return sha256_file(path)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class WorkFolder:
    """Finished shards of one pipeline (``fingerprint``) under ``<state>/shards``."""

    def __init__(self, state_dir: Path, fingerprint: Optional[dict], enabled: bool = True):
        self.enabled = enabled
        self.dir = state_dir / WORK_DIR
        self.fingerprint = fingerprint
        self.key = ""
        self.reused = 0
        #: kept shards found not to be what their done file describes (damaged, cut short,
        #: another shard's Parquet file): they run again
        self.run_again = 0

    def _old(self) -> Optional[dict]:
        fp = self.dir / "fingerprint.json"
        try:
            old = json.loads(fp.read_text("utf-8")) if fp.is_file() and fp.stat().st_size < MAX_DONE_BYTES else None
        except (OSError, ValueError):
            return None
        return old if isinstance(old, dict) else None

    def previous_shard_size(self) -> Optional[int]:
        """The shard size of the finished shards the folder holds for this pipeline, or
        None: a resumed run whose shard size was chosen automatically (it depends on the
        executor) cuts the same shards whatever executor it now uses."""
        old = self._old() if self.enabled else None
        if old and old.get("pipeline") == self.fingerprint and isinstance(old.get("shard_size"), int):
            return old["shard_size"] if old["shard_size"] >= 1 else None
        return None

    def previous_taper(self) -> Optional[tuple[int, int]]:
        """``(total, workers)`` the finished shards of this pipeline were cut with (see
        :func:`~facekit.pipeline.shards.cut_shards`), or None: a run resumed with another
        worker count cuts the same shards, its last ones included."""
        old = self._old() if self.enabled else None
        if old and old.get("pipeline") == self.fingerprint:
            taper = old.get("taper")
            if isinstance(taper, list) and len(taper) == 2 and all(isinstance(v, int) and v >= 0 for v in taper):
                return taper[0], taper[1]
        return None

    def open(self, shard_size: int, taper: Optional[tuple[int, int]] = None) -> int:
        """Make the folder ready for shards of ``shard_size`` items (``taper``: the
        ``(total, workers)`` they are cut with, when known); empty it when it holds another
        pipeline's shards or another shard size. Returns how many finished shards it holds."""
        fp = self.dir / "fingerprint.json"
        if not self.enabled:  # resume: false: no finished shard is kept, none is reused
            shutil.rmtree(self.dir, ignore_errors=True)
            return 0
        self.key = hashlib.sha256(json.dumps([self.fingerprint, shard_size], sort_keys=True).encode()).hexdigest()
        old = self._old()
        if not (old and old.get("key") == self.key):
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = {"key": self.key, "pipeline": self.fingerprint, "shard_size": shard_size}
            if taper is not None:
                meta["taper"] = list(taper)
            atomic_write_text(fp, json.dumps(meta, indent=1, sort_keys=True) + "\n")
            return 0
        return sum(1 for _ in self.dir.glob("shard-*.done.json"))

    def _paths(self, index: int) -> tuple[Path, Path]:
        return self.dir / f"shard-{index:06d}.parquet", self.dir / f"shard-{index:06d}.done.json"

    def reuse(self, shard: Shard, digest: str) -> Optional[Callable[[], ShardResult]]:
        """A loader of ``shard``'s finished result when the folder has it for this pipeline,
        this shard index and this input, else None.

        A kept shard whose Parquet file is not the one its done file describes is not
        reused: its size is checked here (a file cut short by a power loss), its SHA-256 by
        the loader before it parses the file (damaged bytes, another shard's file put in its
        place; a file rewritten between the two is told by its stamp), which then raises
        :class:`~facekit.pipeline.executor.ShardFailed`. Either way the shard runs again, with
        a warning, and counts in :attr:`run_again`."""
        if not self.enabled:
            return None
        data, done = self._paths(shard.index)
        try:
            if not done.is_file() or done.stat().st_size > MAX_DONE_BYTES:
                return None
            meta = json.loads(done.read_text("utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("key") != self.key or meta.get("input") != digest:
            return None
        if meta.get("reusable") is False:
            return None
        items = len(shard.items)
        stats, kept = meta.get("stats"), meta.get("parquet")
        if not isinstance(stats, dict) or stats.get("items") != items:
            return None
        if not (isinstance(kept, dict) and isinstance(kept.get("size"), int) and isinstance(kept.get("sha256"), str)):
            return None
        try:
            size = data.stat().st_size
        except OSError as e:
            size = f"unreadable ({e.strerror or e})"
        if meta.get("index") != shard.index or size != kept["size"]:
            why = (f"its done file is shard {meta.get('index')}'s" if meta.get("index") != shard.index
                   else f"{size} bytes where its done file says {kept['size']}")
            self._discard(done)
            log.warning("shard %d: %s: not the kept shard (%s); running it again", shard.index, data, why)
            return None

        def load() -> ShardResult:
            from facekit.errors import one_line
            from facekit.pipeline.executor import ShardFailed

            # hashed in blocks, then parsed from the file batch by batch: neither all its bytes
            # nor a whole Arrow table beside the outcomes; the file's stamp (size, mtime,
            # ctime, inode) before and after tells a file rewritten or replaced between the
            # hash and the read
            try:
                before = file_stamp(data)
                if sha256_file(data) != kept["sha256"]:
                    raise ValueError("its SHA-256 is not the one its done file records (damaged or another shard's file)")
                outs = rows_outcomes(_kept_rows(data), items)
                if file_stamp(data) != before:
                    raise ValueError("it changed while it was read")
                res = ShardResult(shard.index, outs, seconds=float(stats.get("seconds", 0.0)),
                                  attempts=int(stats.get("attempts", 1)), reused=True)
            except (OSError, ValueError, TypeError, pa.ArrowException) as e:
                self._discard(done)
                raise ShardFailed(f"{data}: cannot reuse the kept shard ({type(e).__name__}: {one_line(e)})") from None
            self.reused += 1
            return res

        return load

    def _discard(self, done: Path) -> None:
        """Forget a kept shard that is not what its done file describes: it runs again."""
        done.unlink(missing_ok=True)
        self.run_again += 1

    def save(self, result: ShardResult, digest: str, replay: bool = False) -> None:
        """Keep a finished shard: its Parquet file, then its done file (both atomic), which
        records the Parquet file's size and SHA-256 (a shard of 1000 112x112 faces, 5.6 MB:
        about 8 ms to hash, 6 ms more to load). A failed shard is not kept, nor one with a
        ``stage_error`` (a fault of the code or the environment, not of the input): the
        next run tries them again; with ``replay`` (a run whose decision step reads every
        shard again, :meth:`load`) they are kept, marked as not to be reused."""
        if not self.enabled:
            return
        reusable = not (result.failed or any(r.reason == STAGE_ERROR for oc in result.outcomes for r in oc.rejects))
        if not (reusable or replay):
            return
        data, done = self._paths(result.index)
        done.unlink(missing_ok=True)  # never an old done file over a new Parquet file
        tmp = data.with_name(data.name + ".tmp")
        pq.write_table(result_table(result), str(tmp), compression="none", write_page_checksum=True)
        kept = {"size": tmp.stat().st_size, "sha256": sha256_file(tmp)}
        os.replace(tmp, data)
        meta = {"index": result.index, "key": self.key, "input": digest, "parquet": kept, "stats": result.stats()}
        if not reusable:
            meta["reusable"] = False
        # renamed into place (a crash never leaves half a done file), not fsynced: after a
        # power loss a Parquet file that does not match is simply run again (see reuse)
        tmp = done.with_name(done.name + ".tmp")
        tmp.write_text(json.dumps(meta, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, done)

    def load(self, index: int) -> ShardResult:
        """Shard ``index`` as this run kept it (the decision step's replay reads every
        shard again after all are done).

        Raises:
            FacekitError: the shard is not there or not what its done file says (names it).
        """
        from facekit.errors import FacekitError, one_line

        data, done = self._paths(index)
        try:
            meta = json.loads(done.read_text("utf-8"))
            if sha256_file(data) != meta["parquet"]["sha256"]:
                raise ValueError("its SHA-256 is not the one its done file records")
            outs = rows_outcomes(_kept_rows(data), int(meta["stats"]["items"]))
        except (OSError, ValueError, TypeError, KeyError, pa.ArrowException) as e:
            raise FacekitError(f"{data}: cannot read the kept shard again ({type(e).__name__}: {one_line(e)})") from None
        return ShardResult(index, outs, seconds=float(meta["stats"].get("seconds", 0.0)), reused=True)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
