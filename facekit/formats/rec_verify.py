"""``facekit verify``: check every record of a face RecordIO dataset, without mxnet.

Per ``.rec`` file: framing of every record (magic, lengths, part flags, truncation; after
a bad record the walk resynchronises on the next plausible record), the ``.idx`` (parsable,
every offset the start of a record, every record listed, no repeated key), every payload an
IRHeader, the layout (insightface header and identity records consistent with the image
records; plain: no empty records; insightface: no record found under another key whose own
record is not there either, by the header ids where the file records them: ``id = key + d``,
see :meth:`_PartCheck._ids`), labels class ids (:func:`facekit.formats.facerec.class_id`:
finite integers in 0..2**31-1) and contiguous per identity, and, unless ``decode=False``, every image decodable
(Pillow, as :func:`facekit.vision.images.decode_image`) with the size ``property`` gives. For a
shard set, no label in two shards. Counts read from the files (the header's keys) are
bounded by what the idx holds; an offset listed under several keys, an empty idx beside
a non-empty ``.rec`` and a dataset with no images are problems. Every problem names the
file, the key (when the idx lists the record) and the byte offset.
"""

from __future__ import annotations

import os
from array import array
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np

from facekit.errors import RecordIOError, SampleRejected
from facekit.formats.facerec import PartFiles, class_id, find_parts, read_property
from facekit.formats.idx import load_idx
from facekit.formats.recordio import RecordIOReader, unpack

CAP = 1000  # problems listed per check and file before they are only counted


@dataclass
class Problem:
    file: str
    key: Optional[int]
    offset: Optional[int]
    message: str

    def __str__(self) -> str:
        where = []
        if self.key is not None:
            where.append(f"key {self.key}")
        if self.offset is not None:
            where.append(f"offset {self.offset}")
        return f"{self.file}: {', '.join(where) + ': ' if where else ''}{self.message}"


class _Problems:
    def __init__(self):
        self.items: list[Problem] = []
        self.counts: dict[tuple, int] = {}

    def add(self, check: str, file: str, key, offset, message: str) -> None:
        c = self.counts.get((file, check), 0) + 1
        self.counts[(file, check)] = c
        if c <= CAP:
            self.items.append(Problem(file, None if key is None else int(key), None if offset is None else int(offset), message))

    def overflow(self) -> list[Problem]:
        return [
            Problem(f, None, None, f"... and {c - CAP} more '{check}' problems not listed")
            for (f, check), c in self.counts.items()
            if c > CAP
        ]


def _decode_chunk(args) -> list[tuple[int, int, str, Optional[tuple[int, int]]]]:
    """Worker: decode the images at ``offsets`` of one .rec; returns (key, offset, error, (h, w))."""
    from facekit.vision.images import decode_image

    rec_path, items = args
    out = []
    with RecordIOReader(rec_path) as r:
        for key, off in items:
            try:
                _, img = unpack(r.read_at(off, key)[0])
                hw = decode_image(img).shape[:2]
                out.append((key, off, "", hw))
            except SampleRejected as e:
                out.append((key, off, f"image not decodable: {e.reason}: {e.detail}", None))
            except RecordIOError as e:
                out.append((key, off, str(e), None))
    return out


def _id_offset(ks: np.ndarray, ids: np.ndarray, delta: np.ndarray, d0: int) -> Optional[int]:
    """The ``d`` of ``id = key + d`` that keys ``ks`` and their records' ``ids`` (int64,
    modulo 2**64) follow, ``delta = ids - ks``; None when they follow none (see
    :meth:`_PartCheck._ids`)."""
    if len(np.unique(ids)) == len(ids) and np.array_equal(np.sort(ids - d0), np.sort(ks)):
        return d0  # the keys' own ids + d0, some under other keys: offsets moved among the keys
    vals, counts = np.unique(delta, return_counts=True)
    top = int(counts.max())
    tied = vals[counts == top].tolist()
    for d in (d0, 0):
        if d in tied:
            return d
    if len(tied) == 1 and 2 * top >= len(ks):
        return int(tied[0])
    return None


class _PartCheck:
    """Checks one .rec (+ .idx); fills ``problems``; keeps labels in image order."""

    def __init__(self, files: PartFiles, layout: str, problems: _Problems, images_before: int = 0):
        """``images_before``: image records of the shards before this one (a facekit
        shard's image ids are its keys + that)."""
        self.images_before = images_before
        self.rec = str(files.rec)
        self.idx = str(files.idx) if files.idx else None
        self.layout_req = layout
        self.p = problems
        self.labels = np.zeros(0, np.int64)
        self.image_items: list[tuple[int, int]] = []  # (key, offset) of image records
        self.layout = "?"
        self.notes: list[str] = []

    def add(self, check, key, offset, msg, file=None):
        self.p.add(check, file or self.rec, key, offset, msg)

    def run(self) -> None:
        self._load_idx()
        self._scan()
        self._index()
        self._layout()

    # -- framing and payload headers, in file order
    def _scan(self) -> None:
        offs, flags, imglen, ids = array("q"), array("l"), array("q"), array("Q")
        lab0, lab1 = array("d"), array("d")
        self.bad_offsets: list[int] = []
        with RecordIOReader(self.rec) as r:
            self.size = r.size
            for off, _, payload, err in r.scan(resync=True):
                if err is not None:
                    self.bad_offsets.append(off)
                    msg = str(err)
                    head = f"{self.rec}: record at offset {off}: "
                    self.add("framing", self._key_at(off), off, msg[len(head):] if msg.startswith(head) else msg)
                    continue
                try:
                    h, img = unpack(payload)
                except RecordIOError as e:
                    self.bad_offsets.append(off)
                    self.add("header", self._key_at(off), off, f"payload is not an image record: {e}")
                    continue
                offs.append(off)
                flags.append(h.flag)
                imglen.append(len(img))
                ids.append(h.id)
                if h.flag == 0:
                    lab0.append(float(h.label))
                    lab1.append(np.nan)
                else:
                    lab0.append(float(h.label[0]))
                    lab1.append(float(h.label[1]) if h.flag > 1 else np.nan)
        self.offs = np.frombuffer(offs, np.int64) if len(offs) else np.zeros(0, np.int64)
        self.flags = np.array(flags, np.int64)
        self.imglen = np.frombuffer(imglen, np.int64) if len(imglen) else np.zeros(0, np.int64)
        self.ids = np.frombuffer(ids, np.uint64) if len(ids) else np.zeros(0, np.uint64)
        self.lab0 = np.array(lab0, np.float64)
        self.lab1 = np.array(lab1, np.float64)

    def _ordinal(self, offsets: np.ndarray) -> np.ndarray:
        """Record number of each offset, -1 where no good record starts there."""
        if not len(self.offs):
            return np.full(len(offsets), -1, np.int64)
        pos = np.minimum(np.searchsorted(self.offs, offsets), len(self.offs) - 1)
        return np.where(self.offs[pos] == offsets, pos, -1)

    def _load_idx(self) -> None:
        self.keys = self.key_off = None
        if self.idx is None:
            self.add("idx", None, None, "no .idx beside the .rec (facekit reindex rebuilds it)")
            return
        try:
            self.keys, self.key_off = load_idx(self.idx)
            size = os.path.getsize(self.rec)
            if not len(self.keys) and size:
                self.add("idx", None, None, f"empty idx beside a {size}-byte .rec (facekit reindex --force rebuilds it)", file=self.idx)
        except RecordIOError as e:
            self.add("idx", None, None, str(e), file=self.idx)
            self.keys = np.zeros(0, np.int64)
            self.key_off = np.zeros(0, np.int64)

    def _key_at(self, off: int):
        if self.key_off is None:
            return None
        hit = np.flatnonzero(self.key_off == off)
        return int(self.keys[hit[-1]]) if len(hit) else None

    # -- idx against the records found
    def _index(self) -> None:
        bad = np.array(self.bad_offsets, np.int64)
        if self.keys is None:  # no idx: records keyed by their number, as facekit reads them
            self.keys = np.arange(len(self.offs), dtype=np.int64)
            self.key_off = self.offs.copy()
        self.key_ord = self._ordinal(self.key_off)
        for i in np.flatnonzero(self.key_ord < 0):
            k, o = int(self.keys[i]), int(self.key_off[i])
            if o >= self.size:
                why = f"idx offset past the end of the file ({self.size} bytes)"
            elif np.isin(o, bad):
                why = "idx offset points at a bad record (see above)"
            else:
                why = "idx offset is not the start of a record (inside another record?)"
            self.add("idx", k, o, why, file=self.idx)
        listed = np.zeros(len(self.offs), bool)
        listed[self.key_ord[self.key_ord >= 0]] = True
        for i in np.flatnonzero(~listed):
            self.add("unlisted", None, int(self.offs[i]), "record not listed in the idx")
        uniq, counts = np.unique(self.keys, return_counts=True)
        for k in uniq[counts > 1]:
            self.add("idx", int(k), None, f"key listed {int(counts[uniq == k][0])} times in the idx", file=self.idx)
        # one record listed under several keys (readers would return it once per key)
        pairs = np.unique(np.stack([self.key_off, self.keys], axis=1), axis=0) if len(self.keys) else np.zeros((0, 2), np.int64)
        offs, first, n_keys = np.unique(pairs[:, 0], return_index=True, return_counts=True)
        for j in np.flatnonzero(n_keys > 1):
            ks = pairs[first[j] : first[j] + n_keys[j], 1].tolist()
            shown = ", ".join(map(str, ks[:5])) + (", ..." if len(ks) > 5 else "")
            self.add(
                "duplicates", ks[0], int(offs[j]),
                f"idx lists this offset under {len(ks)} keys ({shown}): one record read {len(ks)} times",
                file=self.idx,
            )
        # key -> record number (last row wins, as mxnet)
        self._kmap = {}
        for k, o in zip(self.keys.tolist(), self.key_ord.tolist()):
            self._kmap[k] = o

    def _rec(self, key: int) -> int:
        """Record number of ``key`` (-1: not in the idx or a bad record)."""
        return self._kmap.get(key, -2)

    # -- layout: header, identity records, image records, labels
    def _layout(self) -> None:
        r0 = self._rec(0)
        auto = "plain"
        if r0 >= 0 and self.flags[r0] > 0 and self.imglen[r0] == 0 and self.lab0[r0] >= 1 and float(self.lab0[r0]).is_integer():
            auto = "insightface"
        layout = auto if self.layout_req == "auto" else self.layout_req
        self.layout = layout
        if layout == "insightface":
            if auto != "insightface":
                self.add("layout", 0, None, "layout insightface, but key 0 is not a header record (flag > 0, empty image)")
                return
            first = int(self.lab0[r0])
            end = int(self.lab1[r0]) if self.flags[r0] > 1 and float(self.lab1[r0]).is_integer() else first
            if end < first:
                self.add("layout", 0, int(self.offs[r0]), f"header label [{first}, {end}]: end before first identity key")
                end = first
            # the header's counts are data, not trusted: bound them by the keys the idx holds
            limit = max(self._kmap) + 1 if self._kmap else 1
            if end > limit:
                self.add(
                    "layout", 0, int(self.offs[r0]),
                    f"header label [{first}, {end}] needs keys up to {end - 1}, but the idx's keys end at {limit - 1}",
                )
                first, end = min(first, limit), min(end, limit)
            image_keys = list(range(1, first))
            accounted = set(range(0, end))
            extra = [k for k in self._kmap if k not in accounted]
            if extra:
                self.add(
                    "layout", None, None,
                    f"idx has {len(extra)} key(s) the header does not account for "
                    f"(header [{first}, {end}], e.g. key {min(extra)})",
                )
            self._images(image_keys)
            self._identities(first, end)
            self._ids("image", image_keys, self.images_before)
            self._ids("identity", list(range(first, end)))
        else:
            seen = set()
            image_keys = [k for k in self.keys.tolist() if not (k in seen or seen.add(k))]
            self._images(image_keys)

    def _images(self, image_keys: list[int]) -> None:
        self.image_count = len(image_keys)
        labels = []
        lab_keys = []
        done: set[int] = set()
        for k in image_keys:
            r = self._rec(k)
            if r == -2:
                self.add("images", k, None, "image key missing from the idx")
                continue
            if r < 0 or r in done:
                continue  # already reported (bad record / bad offset / offset listed twice)
            done.add(r)
            off = int(self.offs[r])
            if self.imglen[r] == 0:
                self.add("images", k, off, "image record has no image bytes")
                continue
            try:
                lab = class_id(float(self.lab0[r]))
            except ValueError as e:
                self.add("labels", k, off, str(e))
                continue
            labels.append(lab)
            lab_keys.append((k, off))
            self.image_items.append((k, off))
        self.labels = np.array(labels, np.int64)
        self.label_keys = lab_keys
        # labels contiguous per identity: a label must not come back after another one.
        # A plain file may be shuffled on purpose (DALI, shuffle_rec.py): a note there.
        self.scattered = 0
        if len(self.labels):
            starts = np.concatenate([[0], np.flatnonzero(np.diff(self.labels)) + 1])
            seen: set[int] = set()
            for s in starts.tolist():
                lab = int(self.labels[s])
                if lab in seen:
                    self.scattered += 1
                    if self.layout != "plain":
                        k, off = lab_keys[s]
                        self.add("labels", k, off, f"label {lab} appears again after other labels (identity not contiguous)")
                seen.add(lab)

    def _ids(self, what: str, keys: list[int], d0: int = 0) -> None:
        """insightface layout: the header ``id`` of each ``what`` record against its key.

        Writers that record ids give every record ``id = key + d``, one ``d`` per file: 0,
        or for a facekit shard ``d0``, the images of the shards before it (ids run on over
        the set). A file whose ids are all 0 records none (nothing to check). ``d`` is
        ``d0`` when the ids are the keys + ``d0`` in another order (offsets moved among the
        keys), else the offset shared by the most records: ``d0`` or 0 where they are among
        the most shared, else one shared by at least half of the records and more than any
        other; without one the file numbers its records its own way (a note). A record whose
        id is another key's, where that key's record is not its own either and its own id is
        found under another key (offsets swapped, rows misplaced), is a problem: readers
        would return it for the wrong key. Other ids off the rule (a merged file whose ids
        were not renumbered) are a note: readers ignore ids.
        """
        rows, done = [], set()
        for k in keys:
            r = self._rec(k)
            if r >= 0 and r not in done:  # missing / bad / repeated records: reported already
                done.add(r)
                rows.append((k, r))
        if not rows:
            return
        ks = np.array([k for k, _ in rows], np.int64)
        ids = self.ids[np.array([r for _, r in rows], np.int64)]
        if not ids.any():
            return
        delta = ids.view(np.int64) - ks  # modulo 2**64, as the uint64 ids
        d = _id_offset(ks, ids.view(np.int64), delta, d0)
        if d is None:
            self.notes.append(
                f"{self.rec}: {what} record header ids do not follow the keys (no id - key offset shared by "
                "at least half of them and more than any other): ids not checked"
            )
            return
        rule = "id = key" if d == 0 else f"id = key {'+' if d > 0 else '-'} {abs(d)}"
        off = np.flatnonzero(delta != d).tolist()
        misplaced = set(ks[off].tolist())  # keys whose record is not their own
        found = set(ids[off].tolist())  # the ids found under them
        others = []
        for i in off:
            k, r, got = int(ks[i]), rows[i][1], int(ids[i])
            other, want = (got - d) % (1 << 64), (k + d) % (1 << 64)
            # swapped: another key's record is here, and this key's own record is under another key
            if other not in misplaced or want not in found:
                others.append((k, got))
                continue
            self.add(
                "ids", k, int(self.offs[r]),
                f"{what} record has header id {got}, expected {want} ({rule}, as the file's "
                f"other {what} records): it is the record of key {other} (idx offsets swapped?)",
            )
        if others:
            k, got = others[0]
            self.notes.append(
                f"{self.rec}: {len(others)} {what} record(s) have header ids off {rule} (e.g. key {k}: id {got}), "
                "none of them another key's record found under this key: ids numbered their own way (merged "
                "files?), which readers ignore"
            )

    def _identities(self, first: int, end: int) -> None:
        key_pos = {k: i for i, (k, _) in enumerate(self.label_keys)}
        expect = 1
        seen_labels: dict[int, int] = {}
        for k in range(first, end):
            r = self._rec(k)
            if r == -2:
                self.add("identities", k, None, "identity record key missing from the idx")
                continue
            if r < 0:
                continue
            off = int(self.offs[r])
            if self.flags[r] < 2 or self.imglen[r] != 0:
                self.add("identities", k, off, f"identity record must have flag >= 2 and no image (flag {self.flags[r]}, {self.imglen[r]} image bytes)")
                continue
            s, e = float(self.lab0[r]), float(self.lab1[r])
            if not (s.is_integer() and e.is_integer() and 1 <= s < e <= first):
                self.add("identities", k, off, f"identity range [{s}, {e}) outside the image keys [1, {first})")
                continue
            s, e = int(s), int(e)
            if s != expect:
                self.add("identities", k, off, f"identity range [{s}, {e}) does not start where the previous ended ({expect})")
            expect = e
            pos = [key_pos[x] for x in range(s, e) if x in key_pos]
            labs = set(self.labels[pos].tolist()) if pos else set()
            if len(labs) > 1:
                self.add("identities", k, off, f"identity range [{s}, {e}) holds several labels {sorted(labs)[:5]}")
            elif labs:
                lab = labs.pop()
                if lab in seen_labels:
                    self.add("identities", k, off, f"label {lab} also has identity record {seen_labels[lab]}")
                seen_labels[lab] = k
        if end > first and expect != first:
            self.add("identities", None, None, f"identity ranges end at key {expect}, images end at {first}")


def verify(
    path: str | os.PathLike,
    prefix: str = "train",
    layout: str = "auto",
    decode: bool = True,
    jobs: int = 1,
) -> dict:
    """Check every record of a face RecordIO dataset (file, folder or shard set).

    Args:
        decode: also decode every image (Pillow) and compare its size to ``property``.
        jobs: processes used to decode (each opens its own file handle).
    Returns:
        ``{"path", "ok", "problems": [str, ...], "files": [...], "images", "identities"}``.
    Raises:
        RecordIOError: nothing to check (no .rec, incomplete shard set).
    """
    files, prop_path = find_parts(path, prefix)
    problems = _Problems()
    prop = None
    if prop_path:
        try:
            prop = read_property(prop_path)
        except (RecordIOError, OSError) as e:
            problems.add("property", str(prop_path), None, None, str(e).split(": ", 1)[-1])
    checks = []
    before = 0
    for f in files:
        c = _PartCheck(f, layout, problems, before)
        c.run()
        checks.append(c)
        before += getattr(c, "image_count", len(c.labels))
    # set level: a label in two files
    owner: dict[int, str] = {}
    for c in checks:
        for lab in np.unique(c.labels).tolist():
            if lab in owner and owner[lab] != c.rec:
                problems.add("shards", c.rec, None, None, f"label {lab} also in {owner[lab]} (identity split across shards)")
            owner.setdefault(lab, c.rec)
    if not any(getattr(c, "image_count", 0) for c in checks):
        where = checks[0].rec if len(checks) == 1 else str(path)
        problems.add("images", where, None, None, "no images (an empty dataset)")
    max_label = max((int(c.labels.max()) for c in checks if len(c.labels)), default=-1)
    sizes: dict[tuple, int] = {}
    if decode:
        for c in checks:
            items = c.image_items
            chunks = [(c.rec, items[i : i + 512]) for i in range(0, len(items), 512)]
            if jobs > 1 and len(chunks) > 1:
                with ProcessPoolExecutor(jobs) as ex:
                    results = list(ex.map(_decode_chunk, chunks))
            else:
                results = [_decode_chunk(ch) for ch in chunks]
            for res in results:
                for key, off, err, hw in res:
                    if err:
                        problems.add("decode", c.rec, key, off, err)
                        continue
                    sizes[hw] = sizes.get(hw, 0) + 1
                    if prop and tuple(hw) != (prop[1], prop[2]):
                        problems.add(
                            "size", c.rec, key, off,
                            f"image is {hw[1]}x{hw[0]} (WxH) but property says {prop[2]}x{prop[1]}",
                        )
    if prop:
        n = prop[0]
        whole = len(files) > 1 or os.path.isdir(path)
        if max_label >= n:
            problems.add("property", str(prop_path), None, None, f"num_classes {n} but labels go up to {max_label}")
        elif whole and n != max_label + 1:
            problems.add("property", str(prop_path), None, None, f"num_classes {n} but the data has labels 0..{max_label}")
    items = problems.items + problems.overflow()
    notes = [n for c in checks for n in c.notes] + [
        f"{c.rec}: plain layout with identities not contiguous ({c.scattered} label runs come back): shuffled"
        for c in checks
        if getattr(c, "scattered", 0) and c.layout == "plain"
    ]
    return {
        "notes": notes,
        "path": str(path),
        "ok": not problems.counts,
        "problems": [str(p) for p in items],
        "problem_count": sum(problems.counts.values()),
        "files": [{"rec": c.rec, "idx": c.idx, "layout": c.layout, "images": len(c.labels)} for c in checks],
        "images": sum(len(c.labels) for c in checks),
        "identities": len(owner),
        "decoded_sizes": {f"{w}x{h}": n for (h, w), n in sizes.items()},
    }
