"""MXNet RecordIO sink ``mxrec``: ``train.rec``, ``train.idx``, ``property``, ``train.lst``.

Layouts (``shared/docs/FORMATS.md`` section 2):

- ``insightface``: key 0 = header ``flag=2, label=[N+1, N+1+K]``; keys 1..N = images
  (``IRHeader(0, class_id, key, 0)`` + JPEG); keys N+1..N+K = one record per identity with
  ``label=[start, end)``. What arcface_torch's ``MXFaceDataset`` and mxnet trainers read.
- ``plain``: images only, keys from 0, scalar labels (``im2rec`` style; NVIDIA DALI's
  ``readers.mxnet`` reads every record as a sample, so it needs this layout).

Written with facekit's own RecordIO writer (no mxnet), into a staging folder that replaces
``path`` only when the run succeeds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import facekit
from facekit.atomic import AtomicDir
from facekit.lst import image_size, lst_line
from facekit.recordio import IndexedRecordIOWriter, IRHeader, encode_record, pack

FLOAT32_EXACT = 1 << 24


class MxrecParams(facekit.Params):
    path: facekit.OutputPath = Field(description="output folder (replaced atomically at the end of the run)")
    layout: Literal["insightface", "plain"] = Field(
        "insightface", description="insightface: header + identity records; plain: images only, keys from 0 (DALI-safe)"
    )
    prefix: str = Field("train", description="file name stem: <prefix>.rec, <prefix>.idx, <prefix>.lst")


class MxrecSink(facekit.Sink):
    """Pack kept faces into an indexed MXNet RecordIO file with property and .lst."""

    name = "mxrec"
    Params = MxrecParams

    def open(self):
        p = self.params
        self.dir = AtomicDir(p.path)
        root = self.dir.staging
        self.writer = IndexedRecordIOWriter(root / f"{p.prefix}.idx", root / f"{p.prefix}.rec")
        self.lst = open(root / f"{p.prefix}.lst", "w", encoding="utf-8", newline="\n")
        self.insightface = p.layout == "insightface"
        self.key = 1 if self.insightface else 0
        if self.insightface:
            # Placeholder header, rewritten in place at close (same length: see close()).
            self.header_bytes = self._header(0, 0)
            self.writer.write_idx(0, self.header_bytes)
        self.ranges: list[list[int]] = []  # [label, start, end)
        self.size = None
        self.max_label = -1

    @staticmethod
    def _header(first_id_key: int, end_key: int) -> bytes:
        return pack(IRHeader(0, [float(first_id_key), float(end_key)], 0, 0), b"")

    def write(self, s: facekit.Sample):
        if self.size is None:
            self.size = image_size(s.data)
        if self.insightface and self.key >= FLOAT32_EXACT:
            raise facekit.FacekitError(
                f"mxrec: record key {self.key} cannot be stored exactly in the float32 labels of the "
                "insightface layout (limit 2**24 images); use layout: plain or shards"
            )
        payload = pack(IRHeader(0, float(s.label), self.key, 0), s.data)
        self.writer.write_idx(self.key, payload)
        if self.ranges and self.ranges[-1][0] == s.label:
            self.ranges[-1][2] = self.key + 1
        else:
            self.ranges.append([s.label, self.key, self.key + 1])
        self.max_label = max(self.max_label, s.label)
        self.lst.write(lst_line(s))
        self.key += 1

    def close(self):
        images = self.key - (1 if self.insightface else 0)
        if self.insightface:
            first = self.key
            for _, start, end in self.ranges:
                self.writer.write_idx(self.key, pack(IRHeader(0, [float(start), float(end)], 0, 0), b""))
                self.key += 1
            header = self._header(first, self.key)
            # Counts are positive floats, never the magic's bytes: same framing length.
            if len(encode_record(header)) != len(encode_record(self.header_bytes)):
                raise facekit.FacekitError("mxrec: header record changed length")
            self.writer.overwrite(0, header)
        self.writer.close()
        self.lst.close()
        h, w = self.size or (112, 112)
        (self.dir.staging / "property").write_text(f"{self.max_label + 1},{h},{w}\n")
        self.dir.commit()
        return {
            "path": str(self.params.path),
            "layout": self.params.layout,
            "images": images,
            "identities": len(self.ranges),
            "records": self.key,
        }

    def abort(self):
        if hasattr(self, "writer"):
            self.writer.close()
            self.lst.close()
            self.dir.abort()


@facekit.hookimpl
def register_stages(register):
    register(MxrecSink)
