"""The ``masked_rec`` sink: MSML's offline mask-augmented dataset.

Writes, in one folder, an insightface-layout ``train.rec`` with the key-aligned
``mask_out.rec``/``mask_out.idx`` (the masked faces) and ``mask.rec``/``mask.idx`` (the
occlusion masks) that MSML's ``FaceByRandOccMask`` reads (``shared/docs/MASKS.md``
section 1): for every image key ``k`` of ``train.rec`` (``1..N``) both files hold a record
``IRHeader(0, label, k, 0)`` + image at key ``k``, no header record. ``mask_out``: the
masked face as JPEG (BGR in, as ``pack_img``); ``mask``: single-channel PNG (lossless),
255 = clean, 0 = occluded. A side file ``mask.tsv`` lists ``key, label, kind, covered``
(occluded pixel count, as the renderer reported it).

The masked face and mask come from ``sample.occlusion`` (the ``facemask`` augmenter).

- ``train: write`` (default; photos -> detect -> align -> facemask): the sink writes
  ``train.rec``/``.idx``/``property``/``train.lst`` itself (the ``mxrec`` sink's writer,
  insightface layout), so the three files get the same keys 1..N in the same order.
- ``train: link`` (an existing dataset read by the ``mxrec`` source, ``labels: keep``):
  the two mask recs are written at each sample's own record key (``Sample.record_key``)
  with its label; at the end every image key of the source's ``train.rec`` must have a
  masked record with the same label (else the run fails, naming the first key missing or
  different), and ``train.rec``, ``train.idx`` and ``property`` are hard-linked (symlinked
  across file systems) into the folder, never copied or modified.

Everything goes to a staging folder published with the run's other outputs (all or
nothing): MSML's own writer overwrites the old files in place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

import facekit
from facekit.formats import FaceRec, IndexedRecordIOWriter, RecordIOError, pack_header
from facekit_plugins.mxrec import FLOAT32_EXACT, MxrecParams, MxrecSink


class MaskedRecParams(facekit.Params):
    path: facekit.OutputPath = Field(description="output folder: train.rec (write or link), mask_out.rec/.idx, mask.rec/.idx")
    train: Literal["write", "link"] = Field(
        "write",
        description="write: the sink writes train.rec too; link: beside the mxrec source's train.rec (hard links, checked key by key)",
    )


def _link(src: Path, dst: Path) -> str:
    """Hard-link ``src`` as ``dst``; a symlink to its absolute path where hard links cannot
    be made (another file system). Returns ``"hardlink"`` or ``"symlink"``."""
    try:
        os.link(src, dst)
        return "hardlink"
    except OSError:
        os.symlink(src.resolve(), dst)
        return "symlink"


class MaskedRecSink(facekit.Sink):
    """train.rec + key-aligned mask_out.rec and mask.rec (MSML's masked-face dataset)."""

    name = "masked_rec"
    description = "MSML's masked dataset: train.rec + key-aligned mask_out.rec/.idx and mask.rec/.idx"
    Params = MaskedRecParams
    uniform_size = True

    BATCH = 256

    def open(self, publication):
        p = self.params
        self.train = None
        if p.train == "write":
            self.train = MxrecSink(MxrecParams(path=p.path, layout="insightface", prefix="train"))
            self.train.open(publication)
            self.dir = self.train.dir
        else:
            self.dir = publication.dir(p.path)
        root = self.dir.staging
        self.out = IndexedRecordIOWriter(root / "mask_out.idx", root / "mask_out.rec")
        self.mask = IndexedRecordIOWriter(root / "mask.idx", root / "mask.rec")
        self.tsv = open(root / "mask.tsv", "w", encoding="utf-8", newline="\n")
        self.tsv.write("key\tlabel\tkind\tcovered\n")
        self.next_key = 1
        self.keys: list[int] = []
        self.labels: list[int] = []
        self.source_rec: str | None = None
        self.covered = 0

    def write(self, s):
        self.write_many([s])

    def write_many(self, samples):
        """Write the masked face and mask of ``samples`` (one identity, label set).

        Raises:
            FacekitError: a sample without ``occlusion`` (no ``facemask`` augmenter), or in
                ``link`` mode one that did not come from a single ``mxrec`` source file.
        """
        if not samples:
            return
        keys = []
        for s in samples:
            if s.occlusion is None:
                raise facekit.FacekitError(
                    f"masked_rec: {s.path}: sample has no masked copy (add the facemask augmenter with output: attach)"
                )
            if self.train is None:
                key = s.record_key
                rec = s.path.rpartition(":")[0]
                if key is None or not rec:
                    raise facekit.FacekitError(
                        f"masked_rec: {s.path}: train: link needs samples read by the mxrec source (no record key)"
                    )
                if self.source_rec is None:
                    self.source_rec = rec
                elif rec != self.source_rec:
                    raise facekit.FacekitError(
                        f"masked_rec: {s.path}: train: link needs one train.rec, but samples come from {self.source_rec} and {rec}"
                    )
                keys.append(int(key))
            else:
                keys.append(self.next_key)
                self.next_key += 1
        if max(keys) >= FLOAT32_EXACT:
            raise facekit.FacekitError(f"masked_rec: record key {max(keys)} exceeds the insightface layout's limit (2**24)")
        if self.train is not None:
            self.train.write_many(samples)
        out_payloads, mask_payloads, lines = [], [], []
        for k, s in zip(keys, samples):
            head = pack_header((0, float(s.label), k, 0))
            out_payloads.append((head, s.occlusion.data))
            mask_payloads.append((head, s.occlusion.mask))
            lines.append(f"{k}\t{s.label}\t{s.occlusion.kind}\t{s.occlusion.covered}\n")
            self.labels.append(s.label)
            self.covered += s.occlusion.covered
        self.keys.extend(keys)
        self.out.write_many_idx(keys, out_payloads)
        self.mask.write_many_idx(keys, mask_payloads)
        self.tsv.write("".join(lines))

    def _check_source(self) -> tuple[Path, FaceRec]:
        rec = FaceRec(self.source_rec)
        try:
            if len(rec.parts) != 1 or rec.layout != "insightface":
                raise facekit.FacekitError(
                    f"masked_rec: {self.source_rec}: train: link needs one insightface-layout train.rec "
                    f"(header record, keys 1..N), not layout {rec.layout} in {len(rec.parts)} file(s)"
                )
            part = rec.parts[0]
            want_keys = part.image_keys
            want_labels = rec.labels()
            got = dict(zip(self.keys, self.labels))
            if len(got) != len(self.keys):
                raise facekit.FacekitError(f"masked_rec: {self.source_rec}: a record key came twice")
            for k, lab in zip(want_keys.tolist(), want_labels.tolist()):
                g = got.pop(k, None)
                if g is None:
                    raise facekit.FacekitError(
                        f"masked_rec: {self.source_rec}: key {k} (label {lab}) has no masked face "
                        f"({len(want_keys) - len(self.keys)} missing; see rejects.tsv; identities left out by min_images? "
                        "use min_images: 1); MSML reads every key"
                    )
                if g != lab:
                    raise facekit.FacekitError(
                        f"masked_rec: {self.source_rec}: key {k}: label {g} written, train.rec has {lab} (use labels: keep)"
                    )
            if got:
                raise facekit.FacekitError(f"masked_rec: {self.source_rec}: key {next(iter(got))} is not an image key of train.rec")
            return Path(part.rec_path), rec
        except RecordIOError as e:
            raise facekit.FacekitError(f"masked_rec: {e}") from None
        finally:
            rec.close()

    def close(self):
        stats = {"path": str(self.params.path), "train": self.params.train, "masked": len(self.keys)}
        train_stats = self.train.close() if self.train is not None else None
        self.out.close()
        self.mask.close()
        self.tsv.close()
        root = self.dir.staging
        if self.train is None:
            rec_path, rec = self._check_source()
            idx = Path(rec.parts[0].idx_path) if rec.parts[0].idx_path else None
            if idx is None:
                raise facekit.FacekitError(f"masked_rec: {rec_path}: no train.idx beside it (facekit reindex makes one)")
            links = {"train.rec": rec_path, "train.idx": idx}
            if rec.property_path:
                links["property"] = Path(rec.property_path)
            stats["linked"] = {name: _link(src, root / name) for name, src in links.items()}
            stats["source"] = str(rec_path)
        else:
            stats["identities"] = train_stats["identities"]
        stats["mean_covered"] = round(self.covered / max(1, len(self.keys)), 1)
        return stats

    def abort(self):
        if hasattr(self, "out"):
            self.out.close()
            self.mask.close()
            self.tsv.close()
        if getattr(self, "train", None) is not None:
            self.train.abort()


@facekit.hookimpl
def register_stages(register):
    register(MaskedRecSink)
