"""Reading a facekit run's output for the report: ``summary.json``, ``results.parquet``
(streamed, bounded memory), the crops the sinks wrote (``folders`` files or ``mxrec``
records, located through the ``outputs`` column) and ``decisions.tsv`` (the dataset-level
decisions, when the run made any)."""

from __future__ import annotations

import bisect
import json
import re
from pathlib import Path
from dataclasses import dataclass
from typing import Iterator, Optional

import cv2
import numpy as np
import pyarrow.parquet as pq

from facekit.errors import FacekitError, RecordIOError
from facekit.formats.recordio import IndexedRecordIOReader, unpack
from facekit.formats.tsv import unescape

SUMMARY = "summary.json"
RESULTS = "results.parquet"
COLUMNS = ("path", "identity", "label", "reason", "detail", "face", "score", "box", "landmarks", "outputs",
           "similarity", "flag")
#: columns of newer runs, read when present (None in every row of an older output):
#: ``transform`` and ``aligned`` cut a rejected face from its source image; the ``clean``
#: stage's ``duplicate_of`` and ``cluster``; ``merge_with`` (the identity a face was written
#: under when a decision moved it: a merge or a split)
OPTIONAL = ("aligned", "transform", "duplicate_of", "cluster", "merge_with")
DECISIONS = "decisions.tsv"
DECISION_FIELDS = ("kind", "identity", "path", "other", "similarity", "decision", "detail")
_SINK_KEY = re.compile(r"^sinks\[(\d+)\] \((?P<plugin>[^)]*)\)$")


def decode_bgr(data: bytes, where: str) -> np.ndarray:
    """Encoded image bytes -> ``(H, W, 3)`` uint8 BGR. Raises FacekitError naming ``where``."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        raise FacekitError(f"{where}: not a decodable image")
    return img


class RunOutput:
    """A finished run's output folder.

    Attributes:
        root: the folder. summary: ``summary.json`` as a dict.
        sinks: ``[(plugin, Path or None)]`` in ``outputs`` order; a sink path recorded
            under the run's output folder (``summary["output"]``) is taken relative to
            ``root``, so a moved or copied output reads its own files.
    Raises:
        FacekitError: not a folder, no or unreadable ``summary.json``, no
            ``results.parquet`` or one without facekit's columns (names the file).
    """

    def __init__(self, root: str | Path):
        root = Path(root)
        if not root.is_dir():
            raise FacekitError(f"{root}: not a folder (give a facekit run's output folder)")
        sp = root / SUMMARY
        if not sp.is_file():
            raise FacekitError(f"{sp}: missing: {root} is not a facekit output (run 'facekit run' first)")
        try:
            self.summary = json.loads(sp.read_text(encoding="utf-8"))
            if not isinstance(self.summary, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            raise FacekitError(f"{sp}: unreadable summary: {' '.join(str(e).split())}") from None
        self.root = root
        self.results_path = root / RESULTS
        if not self.results_path.is_file():
            raise FacekitError(f"{self.results_path}: missing (a run of a facekit version that wrote no results table?)")
        try:
            self._pf = pq.ParquetFile(str(self.results_path))
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise FacekitError(f"{self.results_path}: not a readable Parquet file: {' '.join(str(e).split())}") from None
        names = set(self._pf.schema_arrow.names)
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise FacekitError(f"{self.results_path}: not a facekit results table (no column {', '.join(missing)})")
        self.rows = self._pf.metadata.num_rows
        self.columns = list(COLUMNS) + [c for c in OPTIONAL if c in names]
        self.absent = [c for c in OPTIONAL if c not in names]
        old = self.summary.get("output")
        self.sinks: list[tuple[str, Optional[Path]]] = []
        for key, info in (self.summary.get("sinks") or {}).items():
            m = _SINK_KEY.match(str(key))
            plugin = m["plugin"] if m else str(key)
            p = info.get("path") if isinstance(info, dict) else None
            path = None
            if isinstance(p, str):
                path = Path(p)
                if not path.is_absolute():
                    path = root / path
                elif old:  # sinks lie inside the output: follow the output where it is now
                    try:
                        path = root / path.relative_to(old)
                    except ValueError:
                        pass
            self.sinks.append((plugin, path))

    def iter_rows(self, batch: int = 8192) -> Iterator[dict]:
        """The results rows as dicts, in source order, ``batch`` rows in memory at a time.
        Raises FacekitError naming the file when a row group cannot be read."""
        try:
            for b in self._pf.iter_batches(batch_size=batch, columns=self.columns):
                for r in b.to_pylist():
                    for c in self.absent:
                        r[c] = None
                    yield r
        except (OSError, ValueError) as e:
            raise FacekitError(f"{self.results_path}: unreadable: {' '.join(str(e).split())}") from None


@dataclass
class Decision:
    """One line of ``decisions.tsv`` (``line``: its line number in the file)."""

    kind: str
    identity: str
    path: str
    other: str
    similarity: Optional[float]
    decision: str
    detail: str
    line: int
    face: Optional[int] = None  # the face index in its image (a ``face`` column), None when not given


def _text(field: str) -> str:
    """A TSV field as ``results.parquet`` holds the same text (bytes that are not UTF-8 as
    ``\\x..`` escapes), so names and paths compare equal."""
    return unescape(field).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_decisions(path: Path, cap: int) -> tuple[list[Decision], dict[str, int]]:
    """``decisions.tsv`` (a header line naming at least :data:`DECISION_FIELDS`, in any
    order, and optionally ``face``; then one decision a line, fields escaped as
    :mod:`facekit.formats.tsv` does; blank lines and lines starting with ``#`` are
    skipped), streamed.

    Returns ``(decisions, counts)``: the first ``cap`` decisions of each kind, in file
    order, and how many lines each kind has. Raises FacekitError naming the file and line:
    no header or a header without a field, a line with another number of fields than the
    header, an empty kind, a similarity or face that is not a number.
    """
    kept: list[Decision] = []
    counts: dict[str, int] = {}
    try:
        f = open(path, encoding="utf-8", errors="surrogateescape", newline="\n")
    except OSError as e:
        raise FacekitError(f"{path}: unreadable: {e.strerror or e}") from None
    with f:
        head = f.readline().rstrip("\n").rstrip("\r").split("\t")
        missing = [c for c in DECISION_FIELDS if c not in head]
        if missing:
            raise FacekitError(f"{path}:1: not a decisions header (no field {', '.join(missing)}; "
                               f"expected {' TAB '.join(DECISION_FIELDS)})")
        at = {c: head.index(c) for c in DECISION_FIELDS}
        for n, line in enumerate(f, 2):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip() or line.startswith("#"):
                continue
            v = line.split("\t")
            if len(v) != len(head):
                raise FacekitError(f"{path}:{n}: {len(v)} fields, the header has {len(head)}")
            kind = unescape(v[at["kind"]]).strip()
            if not kind:
                raise FacekitError(f"{path}:{n}: empty kind")
            counts[kind] = counts.get(kind, 0) + 1
            if counts[kind] > cap:
                continue
            sim = v[at["similarity"]].strip()
            try:
                similarity = float(sim) if sim else None
            except ValueError:
                raise FacekitError(f"{path}:{n}: similarity {sim[:40]!r} is not a number") from None
            face = v[head.index("face")].strip() if "face" in head else ""
            if face and not face.isdigit():
                raise FacekitError(f"{path}:{n}: face {face[:40]!r} is not a face index")
            kept.append(Decision(kind, _text(v[at["identity"]]), _text(v[at["path"]]), _text(v[at["other"]]),
                                 similarity, _text(v[at["decision"]]).strip(), _text(v[at["detail"]]), n,
                                 int(face) if face else None))
    return kept, counts


class _RecSink:
    """Image record id -> image bytes for one ``mxrec`` sink folder (``train.rec``, or a
    shard set through ``train.identities.tsv``; a shuffled file is indexed by its records'
    header ids on first use)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.readers: dict[str, IndexedRecordIOReader] = {}
        self.ranges: list[tuple[int, int, str, Optional[int]]] = []  # (first_id, end_id, file, start key)
        self.by_id: Optional[dict[int, tuple[str, int]]] = None
        side = sorted(folder.glob("*.identities.tsv"))
        if side:
            for line in side[0].read_text(encoding="utf-8").splitlines()[1:]:
                f = line.split("\t")
                if len(f) == 7 and f[5].isdigit() and f[6].isdigit():
                    self.ranges.append((int(f[5]), int(f[6]), f[1], int(f[2]) if f[2].isdigit() else None))
            self.ranges.sort()
        elif (folder / "train.rec").is_file():
            self.ranges = [(0, 2**62, "train.rec", 0)]

    def _reader(self, name: str) -> IndexedRecordIOReader:
        r = self.readers.get(name)
        if r is None:
            rec = self.folder / name
            try:
                r = IndexedRecordIOReader(rec.with_suffix(".idx"), rec)
            except (RecordIOError, OSError) as e:
                raise FacekitError(f"{rec}: unreadable: {' '.join(str(e).split())}") from None
            self.readers[name] = r
        return r

    def _scan(self) -> dict[int, tuple[str, int]]:
        out = {}
        for name in sorted({r[2] for r in self.ranges}):
            r = self._reader(name)
            for key in r.keys:
                try:
                    h, _ = r.read_header(r.offset_of(key), key)
                except RecordIOError as e:
                    raise FacekitError(f"{self.folder / name}: {e}") from None
                if h.flag == 0:
                    out[int(h.id)] = (name, key)
        return out

    def read(self, rid: int) -> tuple[bytes, str]:
        """``(image bytes, "file: key K")`` of record id ``rid``. Raises FacekitError."""
        i = bisect.bisect_right(self.ranges, (rid, 2**63)) - 1
        where = None
        if i >= 0 and self.ranges[i][0] <= rid < self.ranges[i][1] and self.ranges[i][3] is not None:
            first, _, name, start = self.ranges[i]
            where = (name, start + rid - first)
        if where is None:
            if self.by_id is None:
                self.by_id = self._scan()
            if rid not in self.by_id:
                raise FacekitError(f"{self.folder}: no image record with id {rid}")
            where = self.by_id[rid]
        name, key = where
        r = self._reader(name)
        try:
            h, img = unpack(r.read_idx(key))
        except (RecordIOError, KeyError, OSError) as e:
            raise FacekitError(f"{self.folder / name}: key {key}: {' '.join(str(e).split()) or 'missing'}") from None
        return img, f"{self.folder / name}: key {key}"

    def close(self):
        for r in self.readers.values():
            r.close()


class CropReader:
    """The aligned crop of a kept face from the sinks' files, via the row's ``outputs``:
    a ``folders`` sink's file first (plain JPEG), else an ``mxrec`` record.

    ``read(outputs) -> (H, W, 3)`` uint8 BGR. Raises FacekitError naming the file (and
    key) when the crop is missing or undecodable; returns None when no sink can show it.
    """

    def __init__(self, run: RunOutput):
        self.run = run
        self.recs: dict[int, _RecSink] = {}

    def read(self, outputs) -> Optional[np.ndarray]:
        if not outputs:
            return None
        order = sorted(range(len(self.run.sinks)), key=lambda j: self.run.sinks[j][0] != "folders")
        for j in order:
            if j >= len(outputs) or outputs[j] is None:
                continue
            plugin, base = self.run.sinks[j]
            if base is None:
                continue
            if plugin == "folders":
                f = base / outputs[j]
                try:
                    data = f.read_bytes()
                except OSError as e:
                    raise FacekitError(f"{f}: unreadable crop: {e.strerror or e}") from None
                return decode_bgr(data, str(f))
            if plugin in ("mxrec", "masked_rec") and str(outputs[j]).isdigit():
                if j not in self.recs:
                    self.recs[j] = _RecSink(base)
                data, where = self.recs[j].read(int(outputs[j]))
                return decode_bgr(data, where)
        return None

    def close(self):
        for r in self.recs.values():
            r.close()
