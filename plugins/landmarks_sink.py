"""Sink ``landmarks``: the five-landmark files trainers read beside the rec (issue 29 part 5).

Two layouts, each what its reader parses (checked against the sources named here):

- ``cvlface``: CVLface's ``ldmk_5points.csv`` (github.com/mk-minchul/CVLface at commit
  d3d09c93e53c5d5db9ec5c5fa96e5d77fe7a78d8: written by
  ``cvlface/data_utils/recognition/training_data/predict_landmark.py``, read by
  ``cvlface/research/recognition/code/run_v1/dataset/repeated_dataset_with_ldmk_theta.py``
  for KP-RPE training). A header line ``idx,ldmk_0,...,ldmk_9``, then one comma-separated
  row per image of the rec: ``idx`` is the image's position in the training set (0, 1, ...
  in the rec's image order: ``MXFaceDataset`` index ``i`` is the record with key ``i + 1``
  in the insightface layout, the ``i``-th key of a plain file), then the five points
  *interleaved* (x0, y0, x1, y1, ..., x4, y4) in the coordinates of the image the rec
  holds (the aligned crop), *normalised* by its width and height (0..1: CVLface multiplies
  them by the image size before estimating its alignment). The reader loads the file with
  pandas (``read_csv(sep=',', index_col=0)``), looks a row up by its ``idx`` and reshapes
  its ten values to ``(5, 2)``. CVLface joins the config's ``ldmk_path`` to the rec's
  folder; an absolute ``ldmk_path`` (or a copy beside ``train.rec``) names this file.
- ``face2rec2``: the ``.lst`` of insightface's ``face2rec2`` (github.com/deepinsight/insightface
  ``recognition/tools/face2rec2.py`` at commit d0112ed6a224abe8d5984ca9afbc6680752c3de3,
  ``parse_lst_line``/``read_list``/``image_encode``), tab-separated:
  ``aligned  path  label  x1  y1  x2  y2  x0 .. x4  y0 .. y4``. ``aligned`` is 0 (the
  image is a source photo to align); the box is read with ``int()``, so it is written in
  whole pixels (nearest, halves up); the ten landmark values are read with ``float()`` and
  reshaped ``(2, 5)`` then transposed: *planar*, the five x then the five y, in
  source-image pixels. face2rec2 opens the path as written (relative to its working
  folder), aligns with ``face_align.norm_crop`` and packs each line as one image record,
  the identity records following the runs of equal labels.

One line per kept face, in the order every sink receives them (identities contiguous,
labels as the identity gate assigns them): a photo with several kept faces (``select:
all``, per-face identities) gives one line per face, the same path with each face's own box,
landmarks and label. Landmarks are written with the shortest decimal that reads back as
the exact value facekit aligned with (``repr`` of the float32 value as float64): the
``.lst`` re-aligned gives the rec's crops bit for bit. ``idx`` and the ``.lst`` line
number of a face are its position among the faces written: the rec's order when the
``mxrec`` sink of the same run writes one file unshuffled (``shuffle`` or ``shards``
reorder the rec, not these files).

Paths in the ``.lst`` are relative to ``root`` (the source's root: run face2rec2 from
there) or, without ``root``, as the source gives them. A face without landmarks, or (for
``cvlface``) without its landmarks in the crop (an aligner that cannot give its transform),
or a path outside ``root`` stops the run with one line naming the image. Validation refuses
the sink in a pipeline that has no landmarks (no detector giving them, no source listing
them): ``needs_landmarks``.
"""

from __future__ import annotations

import math
import os
from typing import Literal, Optional

import numpy as np
from pydantic import Field, TypeAdapter, ValidationInfo, field_validator

import facekit
from facekit.formats import image_hw, text_field

#: the header line of CVLface's ldmk_5points.csv
CVLFACE_HEADER = "idx," + ",".join(f"ldmk_{i}" for i in range(10)) + "\n"
_INPUT = TypeAdapter(facekit.InputPath)


class LandmarksSinkParams(facekit.Params):
    path: facekit.OutputPath = Field(description="output folder (replaced atomically at the end of the run)")
    format: Literal["cvlface", "face2rec2", "both"] = Field(
        "both", description="cvlface: ldmk_5points.csv; face2rec2: the .lst with boxes and landmarks; both"
    )
    # a str, not a Path: the run checks every Path of a sink as one of its outputs
    root: Optional[str] = Field(
        None,
        description="folder the .lst's paths are relative to (the source's root; run face2rec2 from there); "
        "default: the paths as the source gives them",
    )
    cvlface_file: facekit.FileName = Field("ldmk_5points.csv", description="name of the CVLface landmark file")
    lst_file: facekit.FileName = Field("train.lst", description="name of the face2rec2 .lst")

    @field_validator("root")
    @classmethod
    def _root(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        """An existing folder, resolved against the config's folder as every input path."""
        if v is None:
            return None
        p = _INPUT.validate_python(v, context=info.context)
        if not p.is_dir():
            raise ValueError(f"root {p} is not a folder")
        return str(p)  # resolved and normalised as the source's root is


def _box_field(v: float) -> str:
    """A box coordinate in whole pixels, nearest, halves up (face2rec2 reads it with ``int()``)."""
    return str(math.floor(float(v) + 0.5))


class LandmarksSink(facekit.Sink):
    """Five landmarks of the kept faces as CVLface's ``ldmk_5points.csv`` and/or a face2rec2 ``.lst``."""

    name = "landmarks"
    description = "five landmarks of the kept faces: CVLface ldmk_5points.csv, face2rec2 .lst with box and landmarks"
    Params = LandmarksSinkParams
    #: validation refuses a pipeline without five landmarks (no landmark detector, no source listing them)
    needs_landmarks = True

    def open(self, publication):
        p = self.params
        self.dir = publication.dir(p.path)
        self.csv = self.lst = None
        if p.format in ("cvlface", "both"):
            self.csv = open(self.dir.staging / p.cvlface_file, "w", encoding="utf-8", newline="\n")
            self.csv.write(CVLFACE_HEADER)
        if p.format in ("face2rec2", "both"):
            self.lst = open(self.dir.staging / p.lst_file, "w", encoding="utf-8", newline="\n")
        self._root = None if p.root is None else p.root.rstrip(os.sep) + os.sep
        self.n = 0

    def _rel(self, path: str) -> str:
        """``path`` relative to ``root`` (as given without one)."""
        if self._root is None:
            return path
        if not path.startswith(self._root):
            raise facekit.FacekitError(
                f"landmarks sink: {path}: not inside root {self.params.root}; set root to the source's root"
            )
        return path[len(self._root):]

    def _cvlface_row(self, s: facekit.Sample, idx: int) -> str:
        a = s.aligned_landmarks
        if a is None:
            raise facekit.FacekitError(
                f"landmarks sink: {s.path}: face {s.face_id} has no landmarks in its crop (format cvlface needs an "
                "aligner that gives its transform: arcface, boxcrop); use format: face2rec2"
            )
        try:
            h, w = image_hw(s.data)
        except ValueError as e:
            raise facekit.FacekitError(f"landmarks sink: {s.path}: {e}") from None
        a = np.asarray(a, np.float64).reshape(5, 2)
        vals = [repr(float(x) / w) + "," + repr(float(y) / h) for x, y in a.tolist()]
        return f"{idx},{','.join(vals)}\n"

    def _lst_line(self, s: facekit.Sample) -> str:
        box = [0.0] * 4 if s.box is None else np.asarray(s.box, np.float64).reshape(4).tolist()
        lmk = np.asarray(s.landmarks, np.float64).reshape(5, 2)
        fields = ["0", text_field(self._rel(s.path)), str(int(s.label))]
        fields += [_box_field(v) for v in box]
        fields += [repr(v) for v in lmk[:, 0].tolist()] + [repr(v) for v in lmk[:, 1].tolist()]
        return "\t".join(fields) + "\n"

    def write_many(self, samples: list[facekit.Sample]):
        """One CSV row and/or ``.lst`` line per face; returns each face's position among
        the faces written (the CSV's ``idx``, the ``.lst``'s 0-based line), as text."""
        rows, lines, out = [], [], []
        n = self.n
        for s in samples:
            if s.landmarks is None:
                raise facekit.FacekitError(
                    f"landmarks sink: {s.path}: face {s.face_id} has no landmarks (the detector or the source "
                    "gave none)"
                )
            if self.csv is not None:
                rows.append(self._cvlface_row(s, n))
            if self.lst is not None:
                lines.append(self._lst_line(s))
            out.append(str(n))
            n += 1
        if self.csv is not None:
            self.csv.write("".join(rows))
        if self.lst is not None:
            self.lst.write("".join(lines))
        self.n = n
        return out

    def write(self, sample):
        return self.write_many([sample])[0]

    def close(self):
        for f in (self.csv, self.lst):
            if f is not None:
                f.close()
        p = self.params
        files = [name for f, name in ((self.csv, p.cvlface_file), (self.lst, p.lst_file)) if f is not None]
        return {"path": str(p.path), "faces": self.n, "format": p.format, "files": files}

    def abort(self):
        for f in (getattr(self, "csv", None), getattr(self, "lst", None)):
            if f is not None:
                f.close()


@facekit.hookimpl
def register_stages(register):
    """The ``landmarks`` sink."""
    register(LandmarksSink)
