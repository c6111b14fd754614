"""MXNet RecordIO: the ``mxrec`` source (read any face ``.rec``) and the ``mxrec`` sink
(``train.rec``, ``train.idx``, ``property``, ``train.lst``, shards).

Layouts (``shared/docs/FORMATS.md`` section 2):

- ``insightface``: key 0 = header ``flag=2, label=[N+1, N+1+K]``; keys 1..N = images
  (``IRHeader(0, class_id, id, 0)`` + JPEG); keys N+1..N+K = one record per identity with
  ``label=[start, end)``. What arcface_torch's ``MXFaceDataset`` and mxnet trainers read.
- ``plain``: images only, keys from 0, scalar labels (``im2rec`` style; NVIDIA DALI's
  ``readers.mxnet`` reads every record as a sample, so it needs this layout), optionally
  shuffled with a seed (arcface_torch's ``shuffle_rec.py``, reproducible).

Image record ids: ``id`` is the key the image has in the unsharded, unshuffled file of
the layout (so in such a file ``id == key``, as ``im2rec`` writes). The side file
``<prefix>.identities.tsv`` keeps the identity ranges in every layout:
``label, file, start, end, count, first_id, end_id`` (start/end: keys in ``file``, ``-``
when shuffled; first_id/end_id: the range of ``id``).

Shards (``shards: N``): ``<prefix>-00000-of-0000N.rec/.idx``, split on identity
boundaries nearest to equal image counts; each shard is a complete file of the layout
(own header and identity records, keys from 0/1) with the dataset's global labels, and one
``property``/``.lst``/side file covers the set. Sharded or shuffled output is first
written to a staging file, then copied into place (``os.copy_file_range``).

A plain shard set also gets ``<prefix>.dali.idx``, one index over all shards for NVIDIA
DALI's ``readers.mxnet``, which takes a list of ``.rec`` files but exactly one index file
and reads that index as byte offsets into the concatenation of the files in the order
given (``recordio_loader.h``; keys ignored, offsets sorted). Its lines are
``f"{i}\\t{offset}\\n"``: ``i`` = 0, 1, ... over the set, ``offset`` = the record's offset in
its shard plus the sizes of the shards before it; so it is also the ``.idx`` of
``cat <prefix>-*-of-*.rec`` (see :func:`write_combined_index`).

Written with facekit's own RecordIO writer (no mxnet), into a staging folder that replaces
``path`` only when the run succeeds. A dataset holds one image size (``property``): the
sink is ``uniform_size`` and stops at the first image whose size (read from its header)
differs from the first image's.

Names (``names: auto``, the default): where a ``.lst`` lies beside the rec (``<stem>.lst``;
``<prefix>.lst`` beside a shard set: what this sink writes, ``face2rec2``'s and im2rec's
lists), each image's ``stem`` is ``<identity folder>/<file stem>`` from its path column, so
the ``folders`` sink writes the tree the rec was packed from. Line ``n`` names the record
with id ``first_id + n`` (insightface format) or the id in its first column (im2rec); where
the first records' header ids do not find lines of their labels (ids all 0: not recorded;
numbered another way), line ``n`` names the ``n``-th image record in file order, if that
fits them. Decided before any image is named: a ``.lst`` with another line count, a
malformed line, a label in two folders or a folder with two labels, lines matching the
records neither way, folder names that do not sort like the labels or an identity's file
names not in natural order in the rec (packed again from the folders, the identities would
get other labels or the records another order) is not used: one warning line, then
label/key names. A later line whose label differs from its record's stops the run (one
line: fix the ``.lst`` or set ``names: keys``).

The source yields one item per image record: a sample, or a reject ``bad_record``
(malformed record), ``bad_label`` (not a class id: a finite integer in 0..2**31-1),
``empty_record`` or ``duplicate_record`` (an idx offset already listed under another key:
each record is read once).
"""

from __future__ import annotations

import bisect
import logging
import os
from array import array
from itertools import islice
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import Field, field_validator, model_validator

import facekit
from facekit.formats import (
    FaceRec,
    IndexedRecordIOWriter,
    IRHeader,
    LstMismatch,
    LstNames,
    RecordIOError,
    class_id,
    encode_record,
    encode_records,
    find_parts,
    format_idx,
    image_hw,
    label_of,
    load_idx,
    lst_line,
    pack,
    pack_header,
    shard_stem,
)
from facekit_plugins.folders import NAME_MAX, _extension, fit_name, natural_key, nfc

FLOAT32_EXACT = 1 << 24
log = logging.getLogger("facekit.mxrec")

# --------------------------------------------------------------------------- source


class MxrecSourceParams(facekit.SourceParams):
    path: facekit.InputPath = Field(
        description="a .rec (its .idx beside it, or none: scanned), a .idx, or a folder with <prefix>.rec or shards"
    )
    prefix: facekit.FileName = Field(
        "train", description="file stem inside a folder: <prefix>.rec or <prefix>-IIIII-of-NNNNN.rec"
    )
    layout: Literal["auto", "insightface", "plain"] = Field(
        "auto", description="auto: insightface when key 0 is a header record (flag>0, no image), else plain"
    )
    names: Literal["auto", "lst", "keys"] = Field(
        "auto",
        description="how sinks that write files (folders) name each image: auto: as the .lst beside the rec says "
        "(<stem>.lst, <prefix>.lst beside shards; identity folder and file from its path column; lines found by "
        "record id, or in file order where the ids are not its line numbers) when it matches the rec, its folder "
        "names sort like the labels and each identity's file names are in natural order, else by label and record "
        "key after a one-line warning; lst: from the .lst, an error when there is none that matches; keys: by "
        "label and record key",
    )
    order: Literal["file", "label"] = Field(
        "file",
        description="file: idx order; label: by label then IRHeader id (regroups shuffled plain files, restoring the unshuffled order)",
    )
    labels: Literal["keep", "renumber"] = Field(
        "keep", description="keep: the records' class ids (start_id ignored); renumber: consecutive from start_id"
    )
    min_images: int = Field(1, ge=1, description="identities with fewer images are left out (1: keep all, lossless)")


class MxrecSource(facekit.Source):
    """Images of a face RecordIO dataset (any layout, shards, no mxnet); bytes untouched."""

    name = "mxrec"
    Params = MxrecSourceParams

    def count(self):
        """Number of image records (one sample or reject each), from the idx; None when a
        file has no idx (counting would mean scanning it) or the dataset cannot be opened
        (``__iter__`` reports why)."""
        p = self.params
        try:
            files, _ = find_parts(p.path, p.prefix)
            if any(f.idx is None for f in files):
                return None
            with FaceRec(p.path, p.layout, p.prefix, stream=True) as rec:
                return len(rec)
        except (RecordIOError, OSError, ValueError):
            return None

    def __iter__(self):
        p = self.params
        try:
            # in file order the idx is read in blocks as the records are (not 16 B a record)
            rec = FaceRec(p.path, p.layout, p.prefix, stream=p.order == "file")
        except RecordIOError as e:
            raise facekit.FacekitError(f"mxrec source: {e}") from None
        names, by_position = None, False
        try:
            if p.names != "keys":
                names, by_position = self._lst_names(rec)
            yield from self._samples(rec, names, by_position)
        except RecordIOError as e:  # the idx changed while it was read
            raise facekit.FacekitError(f"mxrec source: {e}") from None
        finally:
            rec.close()
            if names is not None:
                names.close()

    def _lst_names(self, rec: FaceRec) -> tuple[Optional[LstNames], bool]:
        """The names the ``.lst`` beside the rec gives its images (``<stem>.lst`` beside a
        single ``.rec``, ``<prefix>.lst`` beside a shard set) and whether its lines go with
        the records by position (the records' header ids are not those the ``.lst``
        numbers: :func:`_lst_mapping`), or ``(None, False)``: no such file, or (``names:
        auto``) one that does not fit the dataset, whose lines match the records neither by
        id nor by position, or whose names would not pack again in the same order
        (:func:`_order_problem`): a one-line warning says why, images are then named by
        label and record key. ``names: lst`` makes each but the last an error."""
        p = self.params
        first = Path(rec.parts[0].rec_path)
        lst = first.with_suffix(".lst") if len(rec.parts) == 1 else first.parent / f"{p.prefix}.lst"
        if not os.path.lexists(lst):
            if p.names == "lst":
                raise facekit.FacekitError(f"mxrec source: names: lst, but there is no {lst}")
            return None, False
        layout = rec.layout
        by_position = False
        if layout == "mixed":
            names, why = None, "the shards mix the insightface and plain layouts"
        else:
            names, why = LstNames.load(str(lst), len(rec), 1 if layout == "insightface" else 0)
        if names is not None:
            try:
                rows, ext = _probe(rec)
                by_position, why = _lst_mapping(names, rows)
                if not why and p.names == "auto":
                    why = _order_problem(names, by_position, ext)
            except LstMismatch as e:  # the .lst changed while it was read
                why = str(e)
            if why:
                names.close()
                names = None
        if names is None:
            if p.names == "lst":
                raise facekit.FacekitError(
                    f"mxrec source: {lst} does not name the images of {p.path}: {why}; names: keys numbers them"
                )
            log.warning(
                "mxrec source: %s does not name the images of %s (%s): folders and files are named by label and "
                "record key (names: keys says so without this warning)", lst, p.path, why,
            )
        elif by_position:
            log.info("mxrec source: %s: the records' header ids are not its line numbers; its lines name the "
                     "image records in file order", lst)
        return names, by_position

    def _order(self, rec: FaceRec):
        """``(i, part_index, index_in_part, key, offset)`` of the images in the order
        asked for; rejects (an unreadable header in ``order: label``) as they are found."""
        if self.params.order == "file":
            yield from rec.entries()
            return
        labels, ids, bad = rec.labels(with_ids=True, errors="collect")
        for i, (reason, msg) in bad.items():  # rejected here, each with its reason; the rest sorted
            j, k = rec.locate(i)
            part = rec.parts[j]
            yield facekit.Reject(f"{part.rec_path}:{int(part.image_keys[k])}", reason, msg)
        order = np.lexsort((ids, labels)).tolist()  # by label, then id (the unshuffled position)
        del labels, ids
        for i in order:
            if i in bad:
                continue
            j, k = rec.locate(i)
            part = rec.parts[j]
            yield i, j, k, int(part.image_keys[k]), int(part.image_offsets[k])

    def _samples(self, rec: FaceRec, names: Optional[LstNames] = None, by_position: bool = False):
        p = self.params
        multi = len(rec.parts) > 1
        # the widest key (no temporary array of the whole idx; none read when streamed)
        top = max((max(-lo, hi) for lo, hi in (part.key_bounds() for part in rec.parts if len(part))), default=0)
        width = max(8, len(str(top)))
        keep = p.labels == "keep"
        seen = SeenLabels()
        current = None
        for entry in self._order(rec):
            if isinstance(entry, facekit.Reject):
                yield entry
                continue
            i, j, k, key, offset = entry
            part = rec.parts[j]
            path = f"{part.rec_path}:{key}"
            if part.first_of is not None and part.first_of[k] != k:
                f = int(part.first_of[k])
                yield facekit.Reject(
                    path, "duplicate_record",
                    f"idx offset {offset} is also listed as key {int(part.image_keys[f])}: the record is read once",
                )
                continue
            try:
                header, img = part.read_record(key, offset)
                lab = label_of(header)
            except RecordIOError as e:
                yield facekit.Reject(path, "bad_record", str(e))
                continue
            try:
                lab = class_id(lab)
            except ValueError as e:
                where = f"{part.rec_path}: key {key}, record at offset {offset}"
                yield facekit.Reject(path, "bad_label", f"{where}: {e}")
                continue
            if not img:
                yield facekit.Reject(path, "empty_record", "record has no image bytes", str(lab))
                continue
            if lab != current:
                if lab in seen:
                    raise facekit.FacekitError(
                        f"mxrec source: {path}: label {lab} appears again after other labels (a shuffled file?); "
                        "set order: label to group images by label"
                    )
                seen.add(lab)
                current = lab
            if names is not None:
                try:
                    if by_position:
                        folder, file_stem = names.name_at(i, lab, f"image record {i + 1} of the rec (file order)")
                    else:
                        folder, file_stem = names.name(int(header.id), lab)
                except LstMismatch as e:
                    raise facekit.FacekitError(
                        f"mxrec source: {e} ({path}): the .lst does not match the rec; fix it or set names: keys"
                    ) from None
                stem = f"{folder}/{file_stem}"
            else:
                stem = f"{j:05d}-{key:0{width}d}" if multi else f"{key:0{width}d}"
            yield facekit.Sample(
                key=i,
                path=path,
                identity=str(lab),
                data=img,
                label=lab if keep else -1,
                stem=stem,
                record_key=key,
            )


#: image records of each file whose headers :func:`_probe` reads (the first ones)
PROBE = 64


def _probe(rec: FaceRec) -> tuple[list[tuple[int, str, int, int]], str]:
    """``[(i, where, header id, label)]`` of the first :data:`PROBE` image records of each
    file (``i``: position in the dataset's file order; ``where``: ``<rec>:<key>``; records
    that cannot be read or hold no class id are left out: the source rejects them), and the
    extension the ``folders`` sink gives the first one's bytes (``.jpg`` when none)."""
    rows: list[tuple[int, str, int, int]] = []
    ext, start = "", 0
    for part in rec.parts:
        for k, key, off in islice(part.entries(), PROBE):
            try:
                if ext:
                    header, _ = part.reader.read_header(off, key)
                else:
                    header, img = part.read_record(key, off)
                    ext = _extension(img) if img else ""
                rows.append((start + k, f"{part.rec_path}:{key}", int(header.id), class_id(label_of(header))))
            except (RecordIOError, ValueError):
                continue
        start += len(part)
    return rows, ext or ".jpg"


def _misfit(names: LstNames, rows: list[tuple[int, str, int, int]], by_id: bool) -> tuple[int, int, str]:
    """Why the probed records ``rows`` (:func:`_probe`) do not find lines of their labels
    by header id (``by_id``) or by position: ``(line, record position, why)`` (-1 where
    none is meant), or ``(-1, -1, "")`` when they all do."""
    if by_id:
        ids: dict[int, str] = {}
        for i, where, rid, _ in rows:
            if rid in ids:
                if not any(r[2] for r in rows):
                    return -1, -1, "the records' header ids are all 0 (not recorded)"
                return -1, i, f"header id {rid} is on two records ({ids[rid]}, {where})"
            ids[rid] = where
    for i, where, rid, lab in rows:
        try:
            n = names.line_of(rid) if by_id else i
        except LstMismatch:
            return -1, i, f"no line for header id {rid} ({where})"
        line_label, _ = names.read(n)
        if line_label != lab:
            return n, i, (
                f"line {n + 1} has label {line_label:g} where image record {i + 1} in file order ({where}, "
                f"header id {rid}) has label {lab}"
            )
    return -1, -1, ""


def _lst_mapping(names: LstNames, rows: list[tuple[int, str, int, int]]) -> tuple[bool, str]:
    """How the ``.lst``'s lines go with the records, decided on the probed records ``rows``
    (:func:`_probe`) before any image is named: ``(False, "")`` by header id (line ``n`` is
    the record with id ``first_id + n``, or the im2rec id), where every probed record's id
    finds a line of its label (ids all 0 are not recorded); else ``(True, "")`` by position
    (line ``n`` is the ``n``-th image record in file order, as packers write the lines),
    where that finds them; else ``(False, why)``. Raises LstMismatch (the file changed)."""
    id_line, id_record, by_id = _misfit(names, rows, by_id=True)
    if not by_id:
        return False, ""
    line, record, by_position = _misfit(names, rows, by_id=False)
    if not by_position:
        return True, ""
    if (line, record) == (id_line, id_record):  # the record's id and position give one line
        return False, by_id
    return False, f"its lines match the records neither by header id ({by_id}) nor in file order ({by_position})"


def _order_problem(names: LstNames, by_position: bool, ext: str) -> str:
    """Why the folders and files the ``.lst`` ``names`` names would not come back in the
    rec's order from the ``folders`` source (identities numbered in natural order of their
    folder names, files read in natural order of their names), or "" when they would: the
    folder names must sort like the labels, and each label's file names (``<stem><ext>``,
    as the ``folders`` sink writes them) in natural order in record order (by header id,
    or ``by_position``: in file order). Raises LstMismatch (the file changed)."""
    folders = names.folders
    labels = sorted(folders)
    keys = [natural_key(nfc(folders[lab])) for lab in labels]
    for i in range(1, len(keys)):
        if keys[i] <= keys[i - 1]:
            a, b = labels[i - 1], labels[i]
            return (
                f"its folder names do not sort like the labels: {folders[b]!r} (label {b}) sorts before "
                f"{folders[a]!r} (label {a}), so folders named so would be packed again with other labels; "
                "names: lst uses them anyway"
            )
    last: dict[int, tuple[tuple, str]] = {}  # label -> natural key and name of its last file so far
    for n, lab, folder, stem in names.lines(by_id=not by_position):
        name = fit_name(stem, ext)
        key = natural_key(name)
        prev = last.get(lab)
        if prev is not None and key <= prev[0]:
            return (
                f"line {n + 1}: the files of {folder!r} (label {lab}) are not in natural order: {name!r} comes "
                f"after {prev[1]!r} in the rec, so files named so would be packed again in another order; "
                "names: lst uses them anyway"
            )
        last[lab] = (key, name)
    return ""


class SeenLabels:
    """The class ids met so far, compact: one bit a class id below :attr:`BITMAP` (the dense
    ids of real datasets: 2.5 kB for 20,000 identities, where a set of ints took ~2 MiB),
    a set for larger ones. The bitmap grows with the largest id, to 8 MiB at most.

    Labels are class ids as :func:`facekit.formats.facerec.class_id` returns them (int,
    ``0 <= label < 2**31``); the source checks every label with it first."""

    BITMAP = 1 << 26

    def __init__(self):
        self.bits = bytearray()
        self.large: set[int] = set()

    def add(self, label: int) -> None:
        """Note class id ``label`` (int, ``0 <= label < 2**31``)."""
        if label >= self.BITMAP:
            self.large.add(label)
            return
        i = label >> 3
        if i >= len(self.bits):
            want = min(max(i + 1, 2 * len(self.bits), 64), self.BITMAP >> 3)
            self.bits.extend(bytes(want - len(self.bits)))
        self.bits[i] |= 1 << (label & 7)

    def __contains__(self, label: int) -> bool:
        """Whether class id ``label`` was noted."""
        if label >= self.BITMAP:
            return label in self.large
        i = label >> 3
        return i < len(self.bits) and bool(self.bits[i] >> (label & 7) & 1)


# --------------------------------------------------------------------------- sink


class MxrecParams(facekit.Params):
    path: facekit.OutputPath = Field(description="output folder (replaced atomically at the end of the run)")
    layout: Literal["insightface", "plain"] = Field(
        "insightface", description="insightface: header + identity records; plain: images only, keys from 0 (DALI-safe)"
    )
    prefix: facekit.FileName = Field("train", description="file name stem: <prefix>.rec, <prefix>.idx, <prefix>.lst")
    shards: int = Field(1, ge=1, le=99999, description="number of files <prefix>-IIIII-of-NNNNN.rec, split on identity boundaries")
    shuffle: bool = Field(False, description="plain layout: shuffle the images (within each shard) with seed")
    seed: int = Field(0, description="seed of the shuffle (numpy default_rng): same seed, same file")

    @model_validator(mode="after")
    def _prefix_fits(self):
        """Every file this sink writes (``<prefix>.identities.tsv``, shards'
        ``<prefix>-IIIII-of-NNNNN.rec``) must fit the 255 bytes file systems allow a name."""
        tails = [".identities.tsv"] + ([f"-{0:05d}-of-{self.shards:05d}.rec"] if self.shards > 1 else [])
        tail = max(tails, key=len)
        size = len(os.fsencode(self.prefix))
        if size + len(tail) > NAME_MAX:
            raise ValueError(
                f"prefix is {size} bytes: '<prefix>{tail}' would pass the {NAME_MAX} bytes file systems allow a name "
                f"(at most {NAME_MAX - len(tail)})"
            )
        return self

    @field_validator("shuffle")
    @classmethod
    def _shuffle_needs_plain(cls, v, info):
        if v and info.data.get("layout") == "insightface":
            raise ValueError("shuffle needs layout: plain (the insightface layout keeps identities contiguous)")
        return v


def _header(first_id_key: int, end_key: int) -> bytes:
    return pack(IRHeader(0, [float(first_id_key), float(end_key)], 0, 0), b"")


class IdentityRanges:
    """The ``[label, start, end)`` record ranges of consecutive identities, in order: what
    the identity records, ``property`` and ``identities.tsv`` are written from at the end.
    Kept as one int64 array (24 B an identity; a list of lists took ~150 B: 54 MB for
    Glint360K's 360k identities, twice)."""

    __slots__ = ("a",)

    def __init__(self):
        self.a = array("q")

    def note(self, label: int, start: int, end: int) -> bool:
        """Extend the last range to ``end`` when it is ``label``'s, else append
        ``[label, start, end)``; returns whether a range was appended."""
        a = self.a
        if a and a[-3] == label:
            a[-1] = end
            return False
        a.extend((label, start, end))
        return True

    def __len__(self) -> int:
        return len(self.a) // 3

    def __iter__(self):
        return self.slice(0, len(self))

    def slice(self, i: int, j: int):
        """``(label, start, end)`` of ranges ``i`` to ``j - 1``."""
        a = self.a
        return ((a[k], a[k + 1], a[k + 2]) for k in range(3 * i, 3 * j, 3))


class _Out:
    """One ``.rec``/``.idx`` being written: a whole dataset or one shard."""

    def __init__(self, root, stem: str, insightface: bool, ranges: Optional[IdentityRanges] = None):
        """``ranges``: the sink's own ranges when this file is the whole dataset (its keys
        are the record ids the sink numbers): kept once, noted by the sink, not here."""
        self.stem = stem
        self.w = IndexedRecordIOWriter(root / f"{stem}.idx", root / f"{stem}.rec")
        self.insightface = insightface
        self.key = 1 if insightface else 0
        self.shared_ranges = ranges is not None
        self.ranges = ranges if ranges is not None else IdentityRanges()  # in this file's keys
        if insightface:
            # Placeholder header, rewritten in place at finish (same length: see finish()).
            self.header_bytes = _header(0, 0)
            self.w.write_idx(0, self.header_bytes)

    def _limit(self, n: int = 1) -> None:
        if self.insightface and self.key + n > FLOAT32_EXACT:
            raise facekit.FacekitError(
                f"mxrec: record key {self.key + n - 1} cannot be stored exactly in the float32 labels of the "
                "insightface layout (limit 2**24 images per file); use layout: plain or shards"
            )

    def _note(self, label: int, n: int = 1) -> None:
        if not self.shared_ranges:
            self.ranges.note(label, self.key, self.key + n)

    def images(self, payloads: list, runs: list[list[int]]) -> None:
        """Append image records (payloads as :func:`encode_records` takes them) with one
        write; ``runs`` are ``[label, count]`` of consecutive records, in order."""
        n = len(payloads)
        self._limit(n)
        self.w.write_many_idx(range(self.key, self.key + n), payloads)
        for label, count in runs:
            self._note(label, count)
            self.key += count

    def encoded(self, framed: bytes, label: int) -> None:
        """Append one framed record (a shuffled file: its identities are not contiguous,
        so no ranges are kept; shuffling needs the plain layout, which has no identity
        records)."""
        self._limit()
        self.w.write_encoded_idx(self.key, framed)
        self.key += 1

    def copy_identities(self, src_fd: int, rec_offsets: array, src_end: int, idents: list) -> None:
        """Copy the records of consecutive identities ``[(label, first, count)]`` (record
        numbers in the staging file) in one byte range."""
        if not idents:
            return
        first = idents[0][1]
        last = idents[-1][1] + idents[-1][2]
        self._limit(last - first)
        start = rec_offsets[first]
        end = rec_offsets[last] if last < len(rec_offsets) else src_end
        base = self.w.append_copy(src_fd, start, end - start)
        offs = np.frombuffer(rec_offsets, np.int64)[first:last] - start + base
        self.w.add_index(range(self.key, self.key + last - first), offs.tolist())
        for label, _, count in idents:
            self._note(label, count)
            self.key += count

    def finish(self) -> tuple[int, int]:
        """Write identity records and the header (insightface); returns (images, records)."""
        images = self.key - (1 if self.insightface else 0)
        if self.insightface:
            first = self.key
            for _, start, end in self.ranges:
                self.w.write_idx(self.key, pack(IRHeader(0, [float(start), float(end)], 0, 0), b""))
                self.key += 1
            header = _header(first, self.key)
            # Counts are positive floats, never the magic's bytes: same framing length.
            if len(encode_record(header)) != len(encode_record(self.header_bytes)):
                raise facekit.FacekitError("mxrec: header record changed length")
            self.w.overwrite(0, header)
        self.w.close()
        return images, self.key

    def close(self) -> None:
        self.w.close()


def plan_shards(counts: list[int], n: int) -> list[int]:
    """Identity-boundary cut points for ``n`` shards: returns ``n + 1`` indices into the
    identity list (0 first, ``len(counts)`` last), each cut at the identity boundary nearest
    to an equal share of the images. Shards may be empty when ``n`` exceeds the identities."""
    cum = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).tolist()
    total = cum[-1]
    cuts = [0]
    for s in range(1, n):
        target = s * total / n
        b = bisect.bisect_left(cum, target)
        if b > 0 and (b >= len(cum) or target - cum[b - 1] <= cum[b] - target):
            b -= 1
        cuts.append(max(cuts[-1], min(b, len(counts))))
    cuts.append(len(counts))
    return cuts


def write_combined_index(rec_files: list, out) -> int:
    """Write one ``.idx`` covering several ``.rec`` files (each with its ``.idx`` beside it)
    as if they were concatenated in the given order: line ``i`` is
    ``f"{i}\\t{offset}\\n"`` with ``offset`` = the record's offset in its file plus the byte
    sizes of the files before it; records keep their order within each file. This is the
    single ``index_path`` NVIDIA DALI's ``readers.mxnet`` takes for ``path=rec_files``
    (DALI maps offsets onto the files through their cumulative sizes). Memory: one file's
    index at a time. Returns the number of records.

    Raises:
        RecordIOError: an unreadable or malformed ``.idx`` (names the file and line).
    """
    base = n = 0
    with open(out, "wb") as f:
        for rec in rec_files:
            rec = os.fspath(rec)
            _, offs = load_idx(rec[: -len(".rec")] + ".idx")
            f.write(format_idx(range(n, n + len(offs)), (offs + base).tolist()))
            n += len(offs)
            base += os.path.getsize(rec)
    return n


class MxrecSink(facekit.Sink):
    """Pack kept faces into indexed MXNet RecordIO (one file or shards) with property and .lst."""

    name = "mxrec"
    Params = MxrecParams
    #: one image size per dataset (``property`` holds one height and width): validation
    #: refuses a detector without an aligner, and ``write_many`` checks every image
    uniform_size = True

    def open(self, publication):
        """Start the dataset in the staging folder ``publication`` gives for ``path``: the
        ``.lst`` and, for one file, the ``.rec``/``.idx`` (a shuffled or sharded dataset is
        staged in one temporary ``.rec`` first and split at :meth:`close`)."""
        p = self.params
        self.dir = publication.dir(p.path)
        root = self.dir.staging
        self.insightface = p.layout == "insightface"
        self.staged = p.shards > 1 or p.shuffle
        self.lst = open(root / f"{p.prefix}.lst", "w", encoding="utf-8", newline="\n")
        self.first_id = 1 if self.insightface else 0
        self.n = 0
        self.ranges = IdentityRanges()  # [label, first_id, end_id)
        self.size = None
        self.max_label = -1
        self.pending: list = []  # image records not yet framed: (header, image bytes)
        self.pending_runs: list[list[int]] = []  # [label, count] of the pending records
        self.pending_bytes = 0
        if self.staged:
            self.tmp_path = root / ".images.rec.partial"
            self.tmp = open(self.tmp_path, "wb")
            self.tmp_off = 0
            self.rec_offsets = array("q")
        else:
            self.out = _Out(root, p.prefix, self.insightface, self.ranges)  # one file: same keys, one copy

    #: image records framed and written together, at most BATCH records or BATCH_BYTES
    #: image bytes (one framing pass, one magic scan, one write per batch; bounded memory)
    BATCH = 256
    BATCH_BYTES = 2 << 20

    def write(self, s: facekit.Sample):
        """:meth:`write_many` of one sample: its record id, as text."""
        return self.write_many([s])[0]

    def write_many(self, samples: list[facekit.Sample]):
        """Queue image records for ``samples`` (label set, identities contiguous); they are
        framed and written in batches (:func:`facekit.formats.recordio.encode_records`).
        Returns each sample's record id (its key in the ``.idx``), as text."""
        if not samples:
            return []
        size = self.size
        for s in samples:  # header only (image_hw): the pass-through packing rate holds
            try:
                hw = image_hw(s.data)
            except ValueError as e:
                raise facekit.FacekitError(f"mxrec: {s.path}: {e}") from None
            if hw != size:
                if size is not None:
                    raise facekit.FacekitError(
                        f"mxrec: {s.path}: image is {hw[1]}x{hw[0]} (WxH) but the dataset's images are "
                        f"{size[1]}x{size[0]} (from {self.size_from}); a RecordIO dataset holds one size: "
                        "align the faces (an aligner) or resize them"
                    )
                self.size, self.size_from, size = hw, s.path, hw
        rid = first = self.first_id + self.n
        pending = self.pending
        ranges = self.ranges
        runs = self.pending_runs
        lines = []
        for s in samples:
            label = s.label
            data = s.data
            pending.append((pack_header((0, label, rid, 0)), data))
            self.pending_bytes += len(data)
            if not ranges.note(label, rid, rid + 1):
                if runs:
                    runs[-1][1] += 1
                else:  # the identity began before the last flush: a new run of it
                    runs.append([label, 1])
            else:
                runs.append([label, 1])
                if label > self.max_label:
                    self.max_label = label
            lines.append(lst_line(s))
            rid += 1
        self.n = rid - self.first_id
        self.lst.write("".join(lines))
        if len(pending) >= self.BATCH or self.pending_bytes >= self.BATCH_BYTES:
            self._flush()
        return [str(r) for r in range(first, rid)]

    def _flush(self) -> None:
        payloads, runs = self.pending, self.pending_runs
        if not payloads:
            return
        self.pending, self.pending_runs, self.pending_bytes = [], [], 0
        if self.staged:
            data, starts = encode_records(payloads)
            base = self.tmp_off
            self.rec_offsets.extend([base + o for o in starts])
            self.tmp.write(data)
            self.tmp_off += len(data)
        else:
            self.out.images(payloads, runs)

    def _write_shards(self) -> list[tuple[str, int, list]]:
        """Copy the staged image records into the shard files; returns per file
        ``(stem, images, ranges)``: its :class:`IdentityRanges`, or ``[(label, None, None)]``
        when shuffled."""
        p = self.params
        root = self.dir.staging
        self.tmp.close()
        counts = [end - start for _, start, end in self.ranges]
        cuts = plan_shards(counts, p.shards)
        rng = np.random.default_rng(p.seed)
        offs = np.frombuffer(self.rec_offsets, np.int64) if self.n else np.zeros(0, np.int64)
        ends = np.append(offs[1:], self.tmp_off) if self.n else offs
        files = []
        fd = os.open(self.tmp_path, os.O_RDONLY)
        try:
            for si in range(p.shards):
                stem = shard_stem(p.prefix, si, p.shards) if p.shards > 1 else p.prefix
                out = _Out(root, stem, self.insightface)
                try:
                    idents = [
                        (label, start - self.first_id, end - start)
                        for label, start, end in self.ranges.slice(cuts[si], cuts[si + 1])
                    ]
                    if not p.shuffle:
                        out.copy_identities(fd, self.rec_offsets, self.tmp_off, idents)
                        ranges = out.ranges
                    else:
                        recs = np.array(
                            [r for _, first, count in idents for r in range(first, first + count)], np.int64
                        )
                        labels = np.array([lab for lab, _, count in idents for _ in range(count)], np.int64)
                        perm = rng.permutation(len(recs))
                        for j in perm.tolist():
                            r = int(recs[j])
                            framed = os.pread(fd, int(ends[r] - offs[r]), int(offs[r]))
                            out.encoded(framed, int(labels[j]))
                        ranges = [(lab, None, None) for lab, _, _ in idents]
                    images, _ = out.finish()
                except BaseException:
                    out.close()
                    raise
                files.append((stem, images, ranges))
        finally:
            os.close(fd)
            os.unlink(self.tmp_path)
        return files

    def close(self):
        """Write the pending records, the identity records (insightface layout), the
        ``property``, ``<prefix>.identities.tsv`` and, for several plain files, the DALI
        index; returns the summary entry (images, identities, records, files, ...). An
        ``OSError`` while writing propagates: the run fails and publishes nothing."""
        p = self.params
        self._flush()
        if self.staged:
            files = self._write_shards()
        else:
            images, _ = self.out.finish()
            files = [(p.prefix, images, self.out.ranges)]
        self.lst.close()
        root = self.dir.staging
        h, w = self.size or (112, 112)
        (root / "property").write_text(f"{self.max_label + 1},{h},{w}\n")
        ident_iter = iter(self.ranges)
        with open(root / f"{p.prefix}.identities.tsv", "w", encoding="utf-8", newline="\n") as f:
            f.write("label\tfile\tstart\tend\tcount\tfirst_id\tend_id\n")
            for stem, _, ranges in files:
                for label, start, end in ranges:
                    _, first_id, end_id = next(ident_iter)
                    s_, e_ = ("-", "-") if start is None else (start, end)
                    f.write(f"{label}\t{stem}.rec\t{s_}\t{e_}\t{end_id - first_id}\t{first_id}\t{end_id}\n")
        dali = None
        if not self.insightface and len(files) > 1:
            dali = f"{p.prefix}.dali.idx"
            write_combined_index([root / f"{stem}.rec" for stem, _, _ in files], root / dali)
        n_files = len(files)
        return {
            "path": str(p.path),
            "layout": p.layout,
            "images": self.n,
            "identities": len(self.ranges),
            "records": self.n + n_files * (1 if self.insightface else 0) + (len(self.ranges) if self.insightface else 0),
            "files": [f"{stem}.rec" for stem, _, _ in files],
            "images_per_file": [n for _, n, _ in files],
            "shuffled": p.shuffle,
            "dali_index": dali,
        }

    def abort(self):
        """Close what is open after a failed run; the staging folder is the publication's
        to remove."""
        if hasattr(self, "dir"):
            if hasattr(self, "out"):
                self.out.close()
            if hasattr(self, "tmp"):
                self.tmp.close()
            self.lst.close()


@facekit.hookimpl
def register_stages(register):
    """The ``mxrec`` source and sink."""
    register(MxrecSource)
    register(MxrecSink)
