"""Lists of images: the ``list`` source (issue 29 part 3). One file names each image, its
identity and, optionally, its face's geometry (five landmarks, a box), as datasets are
distributed: an im2rec / face2rec2 ``.lst``, a CSV or TSV with named columns, VGGFace2's
``loose_landmark_train.csv`` (+ ``loose_bb_train.csv``), AdaFace/CVLface-style
``path,label`` CSVs.

Formats (``format: auto`` tells them by the file's suffix: ``.lst``, ``.csv``, ``.tsv``;
another suffix by its first line: tab-separated with an integer first field is a ``.lst``,
else a line with a tab is a TSV, else a CSV):

- ``.lst``, no header, tab-separated, as insightface's ``face2rec2`` reads it
  (``face_preprocess.parse_lst_line``): ``aligned<TAB>path<TAB>label`` optionally followed
  by a box ``x1 y1 x2 y2`` and then the five landmarks *planar* ``x0..x4 y0..y4`` (3, 7 or
  17 fields; a box of four zeros, as ``glint2lst`` and facekit's ``mxrec`` sink write, is
  no box; the ``aligned`` flag is read, and the pipeline decides what to do with the
  image). mxnet im2rec's ``index<TAB>label<TAB>path`` (3 fields, told apart by a number in
  the second field, as :class:`facekit.formats.lst.LstNames` does) carries no geometry. The
  identity is the label (``3`` and im2rec's ``3.000000`` are identity ``3``).
- CSV / TSV with a header row naming the columns (case-insensitive; other columns are
  ignored): ``path`` (or VGGFace2's ``NAME_ID``); ``identity`` or ``label`` (neither: the
  identity is the folder the path names, ``n000002`` for ``n000002/0001_01``); optional
  landmarks ``x1,y1,x2,y2,...,x5,y5`` (left eye, right eye, nose, left mouth corner, right
  mouth corner; "left" = image left) or VGGFace2's ``P1X,P1Y,...,P5Y``; optional box
  ``left,top,width,height``, VGGFace2's ``X,Y,W,H``, or ``box_x1,box_y1,box_x2,box_y2``.
  All in the image's pixels; a row whose landmark (box) fields are all empty has none. A TSV is read without quoting (a ``"`` is part of a name).
- ``boxes:`` a second CSV/TSV of the same images in the same order (VGGFace2's
  ``loose_bb_train.csv``: ``NAME_ID,X,Y,W,H`` beside ``loose_landmark_train.csv``), read
  in step with the list: its row ``n`` must name the list's row ``n`` (else a one-line
  error naming both files and lines).

Paths resolve against ``root`` (default: the list's folder); an absolute path stays as
it is. ``extension`` is appended to a name that has no image extension (default ``.jpg``
for a ``NAME_ID`` column, as VGGFace2 names its images without one; none otherwise).

The list is streamed (a file object line by line, the ``csv`` module for CSV/TSV), never
read whole: a 42M-row list runs in the memory of a 1M-row one, plus 8 bytes per identity
(the contiguity check keeps a 64-bit hash of each identity seen; two identities of a
list with the same hash, odds about ``n**2 / 2**65``, would be reported as a repeat).

Identities must be contiguous (all rows of an identity together): a row whose identity
came before another is a one-line error naming the file and line, raised before any work
when the run counts the list (a progress bar, several workers) and when it is read
otherwise. Sort a list by its identity column with a stable sort, header kept::

    (head -n 1 list.csv && tail -n +2 list.csv | LC_ALL=C sort -s -t, -k2,2) > sorted.csv
    LC_ALL=C sort -s -t$'\\t' -k3,3n train.lst > sorted.lst      # face2rec2 (label: field 3)
    LC_ALL=C sort -s -t$'\\t' -k2,2n train.lst > sorted.lst      # im2rec (label: field 2)

(``-k2,2`` names the identity column's number; VGGFace2's lists, sorted by ``NAME_ID``,
are already grouped: ``-k1,1``.)

Every row is kept or a reject whose detail starts with ``<list>:<line>:``: ``bad_row``
(wrong column count, a field that is not a number or not finite, a box without area, an
im2rec index that is not an integer, a label that is not a class id, no identity, a quoted
CSV field over several lines; the reject's path is ``<list>:<line>``; filed under the
identity of the row, or of the row before when it has none, so no identity's rows are cut
apart), ``missing_file``, ``unreadable`` (not a regular file, an OS error), ``empty_file``,
``too_large``, ``bad_name`` (a control character or bytes that are not UTF-8 in a name).
Each listed file is looked at with one ``stat`` (no open) before it is yielded. Blank
lines are skipped. When most rows name missing files, one warning line says so (a wrong
``root``?).

A row with five landmarks is aligned with them and never detected (the worker skips the
detector for it: :attr:`facekit.Source.provides_landmarks`): a pipeline may name a
detector for the rows without landmarks, or no detector at all (a row without landmarks
is then a ``no_landmarks`` reject). A box alone does not replace detection.
"""

from __future__ import annotations

import csv
import hashlib
from array import array
from bisect import bisect_left
import logging
import math
import os
import stat
from typing import Literal, Optional

import numpy as np
from pydantic import Field

import facekit
from facekit.formats import class_id
from facekit.formats import lst_is_number as _number
from facekit.vision import EMPTY_FILE, MAX_FILE_BYTES, TOO_LARGE, UNREADABLE, file_kind, os_error_detail
from facekit_plugins.folders import BAD_NAME, IMAGE_SUFFIXES, _ext, name_problem

log = logging.getLogger("facekit.lists")

BAD_ROW = "bad_row"
MISSING_FILE = "missing_file"
#: the header names of each column role, lower-cased
PATH_COLUMNS = ("path", "name_id")
IDENTITY_COLUMNS = ("identity", "label")
LANDMARK_COLUMNS = (
    tuple(f"{a}{i}" for i in range(1, 6) for a in "xy"),  # x1, y1, ..., x5, y5
    tuple(f"p{i}{a}" for i in range(1, 6) for a in "xy"),  # VGGFace2: P1X, P1Y, ..., P5Y
)
#: box columns and whether they give width and height (else the far corner)
BOX_COLUMNS = (
    (("left", "top", "width", "height"), True),
    (("x", "y", "w", "h"), True),  # VGGFace2
    (("box_x1", "box_y1", "box_x2", "box_y2"), False),
)
#: face2rec2 field counts: aligned, path, label [, box [, planar landmarks]]
LST_FIELDS = (3, 7, 17)
_LST_BOX = tuple(f"box field {k} ({n})" for k, n in zip(range(4, 8), ("x1", "y1", "x2", "y2")))
_LST_LANDMARKS = tuple(f"landmark field {k} ({a}{i})" for k, (a, i) in zip(range(8, 18), [(a, i) for a in "xy" for i in range(5)]))
#: identities held in a Python set before they are merged into the sorted array
_RECENT = 1 << 12


class ListSourceParams(facekit.SourceParams):
    path: facekit.InputPath = Field(description="the list: an im2rec/face2rec2 .lst, or a CSV/TSV with a header")
    root: Optional[facekit.InputPath] = Field(None, description="folder the list's paths are relative to (default: the list's folder)")
    format: Literal["auto", "lst", "csv", "tsv"] = Field("auto", description="the list's format (auto: by suffix, else by its first line)")
    boxes: Optional[facekit.InputPath] = Field(
        None, description="a CSV/TSV of the same images' boxes in the same order (VGGFace2 loose_bb_train.csv: NAME_ID,X,Y,W,H)"
    )
    extension: Optional[str] = Field(
        None, pattern=r"^\.[^/\\\x00-\x1f\x7f]{1,16}$",
        description="appended to each name without an image extension (default: .jpg for a NAME_ID column, else none)",
    )
    max_file_mb: float = Field(MAX_FILE_BYTES / (1 << 20), gt=0, description="files larger than this many MiB are rejected (too_large)")


class _BadRow(Exception):
    """A row that cannot be used; ``identity``: the row's identity when it was read."""

    def __init__(self, detail: str, identity: Optional[str] = None):
        super().__init__(detail)
        self.identity = identity


def _num(text: str, what: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise _BadRow(f"{what}: {text.strip()[:40]!r} is not a number") from None
    if not math.isfinite(v):
        raise _BadRow(f"{what}: {text.strip()!r} is not a finite number")
    return v


def _floats(fields: list[str], names) -> list[float]:
    """The numbers in ``fields`` (finite floats). Raises _BadRow naming the first field
    (by its name in ``names``) that is not a number or not finite."""
    try:
        vals = [float(v) for v in fields]
        total = sum(vals)
        if total - total == 0:  # every value finite (inf - inf, nan: nan)
            return vals
    except ValueError:
        pass
    return [_num(v, name) for v, name in zip(fields, names)]  # raises, or finite values summing past 1e308


def _box(vals: list[float], sized: bool) -> Optional[np.ndarray]:
    """``(4,)`` float32 x1, y1, x2, y2 from four numbers (``sized``: x, y, width, height);
    None for four zeros (no box). Raises _BadRow: no area."""
    if not any(vals):
        return None
    x1, y1, a, b = vals
    x2, y2 = (x1 + a, y1 + b) if sized else (a, b)
    if not (x2 > x1 and y2 > y1):
        raise _BadRow(f"box {vals} has no area")
    return np.array([x1, y1, x2, y2], np.float32)


def _hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")


class _Runs:
    """Checks that identities come in one run each, in about 8 bytes per identity: a
    64-bit hash of each identity passed, the last :data:`_RECENT` in a set, the older ones
    in one sorted ``array('Q')`` that grows in place (realloc; the new hashes are appended
    and the two sorted runs merged in place), so that no large block is freed and
    allocated again at every merge (that fragments the heap: +70 B an identity)."""

    def __init__(self, where: str, hint: str):
        self.where, self.hint = where, hint
        self.current: Optional[str] = None
        self.current_hash = 0
        self.recent: set[int] = set()
        self.old = array("Q")

    def check(self, identity: str, line: int) -> None:
        """Raise FacekitError when ``identity`` (of ``line``) came before another one."""
        if identity == self.current:
            return
        h = _hash(identity)
        old = self.old
        k = bisect_left(old, h)
        if h in self.recent or (k < len(old) and old[k] == h):
            raise facekit.FacekitError(
                f"{self.where}:{line}: identity {identity!r} comes again after other identities: a list must keep "
                f"each identity's rows together; sort it by identity first, e.g. {self.hint}"
            )
        if self.current is not None:
            self.recent.add(self.current_hash)
            if len(self.recent) >= _RECENT:
                self.old.extend(sorted(self.recent))
                np.frombuffer(self.old, np.uint64).sort(kind="stable")  # two sorted runs: a merge
                self.recent.clear()
        self.current, self.current_hash = identity, h


def _open(path) -> "object":
    """The list opened as text (UTF-8, a BOM skipped, bytes that are not UTF-8 kept as
    escapes so that the name checks report them). Raises ConfigError: not a regular file."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise facekit.ConfigError(f"list source: {path} is not a regular file ({file_kind(st.st_mode)})")
        return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as e:
        raise facekit.ConfigError(f"list source: cannot read {path}: {os_error_detail(e)}") from None


def _format(path, fmt: str) -> str:
    """The format of list ``path`` (``lst``, ``csv``, ``tsv``) for ``format: fmt``."""
    if fmt != "auto":
        return fmt
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix in (".lst", ".csv", ".tsv"):
        return suffix[1:]
    with _open(path) as f:
        first = next((line for line in f if line.strip()), "")
    fields = first.rstrip("\r\n").split("\t")
    if len(fields) >= 3 and fields[0].strip().isdigit():
        return "lst"
    return "tsv" if len(fields) > 1 else "csv"


class _Table:
    """A CSV/TSV file with a header: its rows ``(first line, last line, fields)`` and the
    column of each role."""

    def __init__(self, path, fmt: str):
        self.path, self.fmt = str(path), fmt
        self.f = _open(path)
        kw = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
        self.reader = csv.reader(self.f, **kw)
        self.header = next(self._rows(), (0, 0, None))[2]
        if not isinstance(self.header, list):
            self.close()
            why = f"unreadable header: {self.header}" if self.header is not None else "empty"
            raise facekit.ConfigError(f"list source: {path}:1: {why} (a {fmt.upper()} list starts with a header row)")
        names = [h.strip().lower() for h in self.header]
        col = {n: i for i, n in reversed(list(enumerate(names)))}  # a repeated name: its first column
        self.width = len(names)
        self.path_col = next((col[n] for n in PATH_COLUMNS if n in col), None)
        self.name_id = self.path_col is not None and names[self.path_col] == "name_id"
        self.ident_col = next((col[n] for n in IDENTITY_COLUMNS if n in col), None)
        self.lmk = self.box = None
        self.sized = False
        #: each column's name as the header writes it (for the rejects' details)
        self.names = [h.strip() for h in self.header]
        for group in LANDMARK_COLUMNS:
            have = [n for n in group if n in col]
            if have and len(have) < len(group):
                self.close()
                missing = ", ".join(n for n in group if n not in col)
                raise facekit.ConfigError(
                    f"list source: {path}:1: landmark columns {missing} missing (give all ten; a box is "
                    "left,top,width,height or box_x1,box_y1,box_x2,box_y2)"
                )
            if have:
                self.lmk = [col[n] for n in group]
                break
        for group, sized in BOX_COLUMNS:
            if all(n in col for n in group):
                self.box, self.sized = [col[n] for n in group], sized
                break

    def _rows(self):
        """``(first line, last line, fields or csv.Error)`` of each row, blank lines skipped."""
        reader = self.reader
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                if reader.line_num < start:  # nothing consumed: the reader cannot go on
                    raise facekit.FacekitError(f"{self.path}:{start}: unreadable CSV: {e}") from None
                yield start, reader.line_num, e
                continue
            if row:
                yield start, reader.line_num, row

    def rows(self):
        """The data rows (after the header)."""
        return self._rows()

    def path_of(self, row: list[str]) -> str:
        """The row's path field. Raises _BadRow: wrong column count, empty path."""
        if len(row) != self.width:
            raise _BadRow(f"wrong column count: {len(row)} fields, the header has {self.width}")
        text = row[self.path_col].strip()
        if not text:
            raise _BadRow("empty path")
        return text

    def geometry(self, row: list[str], identity: Optional[str]):
        """``(box, landmarks)`` of a row (each None when the list gives none)."""
        try:
            box = lmk = None
            if self.box is not None:
                fields = [row[i] for i in self.box]
                if any(fields):  # all four empty: no box for this row
                    box = _box(_floats(fields, [self.names[i] for i in self.box]), self.sized)
            if self.lmk is not None:
                fields = [row[i] for i in self.lmk]
                if any(fields):  # all ten empty: no landmarks for this row (detected, if the pipeline can)
                    lmk = np.array(_floats(fields, [self.names[i] for i in self.lmk]), np.float32).reshape(5, 2)
        except _BadRow as e:
            e.identity = identity
            raise
        return box, lmk

    def close(self) -> None:
        self.f.close()


class ListSource(facekit.Source):
    """Images named by a list (a ``.lst``, a CSV/TSV with a header, VGGFace2's landmark
    and box CSVs), with their identities and, optionally, five landmarks and a box; see the
    module's documentation for the formats, the rejects and how to sort a list."""

    name = "list"
    description = "images named by a .lst / CSV / TSV list (face2rec2, im2rec, VGGFace2), with their landmarks"
    Params = ListSourceParams
    provides_landmarks = True

    def __init__(self, params):
        super().__init__(params)
        self.list = str(params.path)
        self.fmt = _format(params.path, params.format)
        #: what the list's paths are joined to ("" for a list in the current folder: its paths as they are)
        self.root = str(params.root) if params.root is not None else os.path.dirname(self.list)
        if not os.path.isdir(self.root or os.curdir):
            raise facekit.ConfigError(f"list source: root {self.root} is not a folder")
        self.max_bytes = int(params.max_file_mb * (1 << 20))
        self._im2rec = False
        #: the path column is VGGFace2's NAME_ID (names without an extension)
        self.name_id = False
        if self.fmt != "lst":
            with self._table() as f:  # the header is checked before the run
                self.name_id = f.table.name_id
        if params.boxes is not None:
            _Boxes(params.boxes).t.close()

    def _table(self) -> "_Opened":
        t = _Table(self.list, self.fmt)
        if t.path_col is None:
            t.close()
            raise facekit.ConfigError(
                f"list source: {self.list}:1: no 'path' (or VGGFace2 'NAME_ID') column in the header "
                f"{', '.join(t.header)[:200]!r}: a CSV/TSV list names its columns: path, identity or label, optional "
                "landmarks x1,y1,...,x5,y5, optional box left,top,width,height"
            )
        return _Opened(t)

    def _hint(self, table: Optional[_Table]) -> str:
        """How to sort this list by identity (a shell command)."""
        name = os.path.basename(self.list)
        if table is None:
            k = 2 if self._im2rec else 3
            return f"LC_ALL=C sort -s -t$'\\t' -k{k},{k}n {name} > sorted.lst"
        k = (table.ident_col if table.ident_col is not None else table.path_col) + 1
        t = "$'\\t'" if table.fmt == "tsv" else ","
        return f"(head -n 1 {name} && tail -n +2 {name} | LC_ALL=C sort -s -t{t} -k{k},{k}) > sorted.{table.fmt}"

    # ------------------------------------------------------------------ rows

    def _lst_rows(self, f):
        """``(line, line, fields)`` of a ``.lst``'s non-blank lines; sets ``_im2rec`` from
        the first one."""
        self._im2rec = False
        first = True
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if first:
                self._im2rec = len(fields) >= 3 and _number(fields[1])
                first = False
            yield n, n, fields

    def _lst_row(self, fields: list[str], geometry: bool = True):
        """``(path, identity, box, landmarks)`` of a ``.lst`` line (box and landmarks None
        without ``geometry``: not read)."""
        if self._im2rec:
            if len(fields) != 3:
                raise _BadRow(f"wrong column count: {len(fields)} fields (im2rec: index, label, path)")
            try:
                int(fields[0])
            except ValueError:
                raise _BadRow(f"index {fields[0]!r} is not an integer") from None
            label, path, rest = fields[1], fields[2], []
        else:
            if len(fields) not in LST_FIELDS:
                raise _BadRow(f"wrong column count: {len(fields)} fields (face2rec2: aligned, path, label [, x1, y1, "
                              "x2, y2 [, x0..x4, y0..y4]]: 3, 7 or 17)")
            try:
                int(fields[0])
            except ValueError:
                raise _BadRow(f"aligned flag {fields[0]!r} is not an integer") from None
            label, path, rest = fields[2], fields[1], fields[3:]
        try:
            identity = str(class_id(_num(label, "label")))
        except ValueError as e:
            raise _BadRow(str(e)) from None
        path = path.strip()
        if not path:
            raise _BadRow("empty path", identity)
        box = lmk = None
        try:
            if rest and geometry:
                box = _box(_floats(rest[:4], _LST_BOX), False)
            if len(rest) > 4 and geometry:
                v = _floats(rest[4:], _LST_LANDMARKS)
                lmk = np.array([v[:5], v[5:]], np.float32).T.copy()  # planar x0..x4, y0..y4
        except _BadRow as e:
            e.identity = identity
            raise
        return path, identity, box, lmk

    def _csv_row(self, t: _Table, row: list[str], geometry: bool = True):
        """``(path, identity, box, landmarks)`` of a CSV/TSV row (box and landmarks None
        without ``geometry``: not read)."""
        path = t.path_of(row)
        if t.ident_col is not None:
            identity = row[t.ident_col].strip()
            if not identity:
                raise _BadRow("empty identity")
        else:
            folder = os.path.dirname(path.replace("\\", "/"))
            identity = os.path.basename(folder)
            if not identity:
                raise _BadRow(f"no identity: no identity or label column, and the path {path!r} names no folder")
        return (path, identity, *t.geometry(row, identity)) if geometry else (path, identity, None, None)

    def _items(self, geometry: bool = True):
        """``(first line, last line, parsed or _BadRow)`` of every row; ``parsed``:
        ``(path, identity, box, landmarks)`` (box and landmarks not read without
        ``geometry``). The identities' runs are checked (FacekitError naming the line that
        breaks one)."""
        current = ""  # the identity of the last row that had one
        runs = None
        with (_open(self.list) if self.fmt == "lst" else self._table()) as f:
            table = f.table if isinstance(f, _Opened) else None
            rows = self._lst_rows(f) if table is None else table.rows()
            for start, end, fields in rows:
                try:
                    if isinstance(fields, csv.Error):
                        raise _BadRow(f"unreadable CSV row: {fields}")
                    if end > start:
                        raise _BadRow(f"a quoted field spans lines {start}-{end}")
                    item = self._lst_row(fields, geometry) if table is None else self._csv_row(table, fields, geometry)
                    identity = item[1]
                except _BadRow as e:
                    item, identity = e, e.identity
                if identity is not None:
                    if identity != current:
                        runs = runs or _Runs(self.list, self._hint(table))
                        runs.check(identity, start)
                        current = identity
                else:
                    item.identity = current  # filed under the run it is in
                yield start, end, item

    def count(self) -> int:
        """The rows of the list (one item each), from one streamed pass that also checks
        the identities' runs (the one-line error comes before any work)."""
        return sum(1 for _ in self._items(geometry=False))

    def __iter__(self):
        """A Sample per usable row (with the row's box and landmarks), a Reject per other
        row, in the list's order."""
        p = self.params
        Sample, Reject = facekit.Sample, facekit.Reject
        limit = self.max_bytes if self.max_bytes != MAX_FILE_BYTES else None
        boxes = _Boxes(p.boxes) if p.boxes is not None else None
        ext = p.extension if p.extension is not None else (".jpg" if self.name_id else None)
        key = rows = missing = 0
        try:
            for start, _, parsed in self._items():
                rows += 1
                where = f"{self.list}:{start}"
                box_row = boxes.next(start, self.list) if boxes is not None else None
                if isinstance(parsed, _BadRow):
                    yield Reject(where, BAD_ROW, f"{where}: {parsed}", parsed.identity)
                    continue
                name, identity, box, lmk = parsed
                if box_row is not None:
                    if isinstance(box_row[1], _BadRow) and box_row[0] in (None, name):
                        yield Reject(where, BAD_ROW, f"{boxes.path}:{box_row[2]}: {box_row[1]}", identity)
                        continue
                    if box_row[0] != name:
                        raise facekit.FacekitError(
                            f"{boxes.path}:{box_row[2]} names {box_row[0]!r} but {where} names {name!r}: the boxes file "
                            "must list the same images in the same order"
                        )
                    box = box_row[1] if box is None else box
                if ext is not None and _ext(name) not in IMAGE_SUFFIXES:
                    name += ext
                full = os.path.join(self.root, name)
                problem = name_problem(identity)
                problem = f"identity: {problem}" if problem else name_problem(name)
                if problem:
                    yield Reject(full, BAD_NAME, f"{where}: {problem}", identity)
                    continue
                reject = self._stat(full, where, identity)
                if reject is not None:
                    missing += reject.reason == MISSING_FILE
                    yield reject
                    continue
                yield Sample(key=key, path=full, identity=identity, box=box, landmarks=lmk, max_bytes=limit)
                key += 1
            if boxes is not None:
                boxes.check_end()
        finally:
            if boxes is not None:
                boxes.close()
        if 2 * missing > rows:
            log.warning("list source: %s: %d of %d rows name files that do not exist under root %s (is root right? "
                        "paths resolve against root, default the list's folder)", self.list, missing, rows, self.root)

    def _stat(self, path: str, where: str, identity: str):
        """The Reject for a listed file that cannot be read, or None (one ``stat``)."""
        R = facekit.Reject
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return R(path, MISSING_FILE, f"{where}: no such file", identity)
        except OSError as e:
            return R(path, UNREADABLE, f"{where}: {os_error_detail(e)}", identity)
        if not stat.S_ISREG(st.st_mode):
            return R(path, UNREADABLE, f"{where}: not a regular file: {file_kind(st.st_mode)}", identity)
        if st.st_size == 0:
            return R(path, EMPTY_FILE, f"{where}: file has 0 bytes", identity)
        if st.st_size > self.max_bytes:
            return R(path, TOO_LARGE, f"{where}: {st.st_size} bytes > limit {self.max_bytes}", identity)
        return None


class _Opened:
    """A :class:`_Table` as a context manager (closed at the end)."""

    def __init__(self, table: _Table):
        self.table = table

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.table.close()


class _Boxes:
    """The ``boxes:`` file read in step with the list: :meth:`next` gives the next row's
    ``(name, box or _BadRow, line)``, or None once the file has ended (with a warning)."""

    def __init__(self, path):
        self.path = str(path)
        self.t = _Table(path, "tsv" if self.path.endswith(".tsv") else "csv")
        self.rows = self.t.rows()
        self.ended = False

    def next(self, line: int, list_path: str):
        """The boxes row for the list's row at ``line``."""
        if self.ended:
            return None
        row = next(self.rows, None)
        if row is None:
            self.ended = True
            log.warning("list source: boxes %s ends before %s:%d: the rows from there have no box", self.path, list_path, line)
            return None
        start, end, fields = row
        try:
            if isinstance(fields, csv.Error) or end > start:
                raise _BadRow(f"unreadable CSV row: {fields}" if isinstance(fields, csv.Error) else "a quoted field spans lines")
            name = self.t.path_of(fields)
            return name, self.t.geometry(fields, None)[0], start
        except _BadRow as e:
            name = fields[self.t.path_col].strip() if isinstance(fields, list) and len(fields) > self.t.path_col else None
            return name, e, start

    def check_end(self) -> None:
        """Once the list has ended: one warning when the boxes file has rows left."""
        left = sum(1 for _ in self.rows) if not self.ended else 0
        if left:
            log.warning("list source: boxes %s has %d rows more than the list: not used", self.path, left)

    def close(self) -> None:
        """Close the file."""
        self.t.close()


@facekit.hookimpl
def register_stages(register):
    register(ListSource)
