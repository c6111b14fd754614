"""Identity folders: the ``folders`` source (``ROOT/<identity>/<image>``) and the
``folders`` sink (aligned JPEGs in ``<prefix><id>/`` plus ``landmarks.txt`` and
``label.txt``, as the dataset-building guide's ``dir2lmk`` + ``glint2lst``)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

import facekit
from facekit.atomic import MARKER
from facekit.lst import landmark_line, lst_line

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp")


class FoldersSourceParams(facekit.SourceParams):
    root: facekit.InputPath = Field(description="folder with one sub-folder of images per identity")
    extensions: list[str] = Field(list(IMAGE_EXTENSIONS), description="image file extensions (case-insensitive)")


def _ext(name: str) -> str:
    """Lower-cased extension with its dot, as ``os.path.splitext(name)[1].lower()`` (a
    leading dot does not start an extension), without its per-call cost."""
    dot = name.rfind(".")
    if dot <= 0 or (name[0] == "." and not name[:dot].strip(".")):
        return ""
    return name[dot:].lower()


class FoldersSource(facekit.Source):
    """Images in ``ROOT/<identity>/<image>``, identities and files in sorted order."""

    name = "folders"
    Params = FoldersSourceParams

    def __init__(self, params):
        super().__init__(params)
        root = params.root
        if not root.is_dir():
            raise facekit.ConfigError(f"folders source: root {root} is not a folder")
        self.exts = {"." + e.lower().lstrip(".") for e in params.extensions}

    def __iter__(self):
        root = self.params.root
        key = 0
        with os.scandir(root) as it:
            entries = sorted(it, key=lambda e: e.name)
        # A folder facekit wrote (the folders sink) has its side files at the top level:
        # landmarks, .lst and the marker. They are not images of an identity.
        own = os.path.exists(os.path.join(root, MARKER))
        exts = self.exts
        for entry in entries:
            if own and not entry.is_dir():
                continue
            if not entry.is_dir():
                yield facekit.Reject(entry.path, "not_in_identity_folder", "files must be in ROOT/<identity>/")
                continue
            identity = entry.name
            with os.scandir(entry.path) as it:
                files = sorted(it, key=lambda e: e.name)
            for f in files:
                if f.is_dir():
                    yield facekit.Reject(f.path, "unsupported_file", "sub-folder inside an identity folder", identity)
                elif _ext(f.name) not in exts:
                    yield facekit.Reject(
                        f.path, "unsupported_file", f"extension not in {sorted(self.exts)}", identity
                    )
                else:
                    yield facekit.Sample(key=key, path=f.path, identity=identity)
                    key += 1


def _extension(data: bytes) -> str:
    """File extension for encoded image bytes, from their signature (JPEG if unknown)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:2] == b"BM":
        return ".bmp"
    return ".jpg"


class FoldersSinkParams(facekit.Params):
    path: facekit.OutputPath = Field(description="output folder (replaced atomically at the end of the run)")
    prefix: str = Field("", description="prefix of each identity folder name (dir2lmk --dir_prefix)")
    landmarks_file: str = Field("landmarks.txt", description="dir2lmk landmark file: path face_id x1 y1 ... x5 y5")
    lst_file: str = Field("label.txt", description="glint2lst list: 0 path label 0 0 0 0 <5 x> <5 y>")
    label_digits: int = Field(
        0, ge=0, le=12, description="zero-pad the label in folder names to this many digits (sorted by name = by label)"
    )


class FoldersSink(facekit.Sink):
    """Kept faces as ``<path>/<prefix><label>/<stem>_<face_id>.jpg`` plus side files."""

    name = "folders"
    Params = FoldersSinkParams

    def open(self, publication):
        p = self.params
        self.dir = publication.dir(p.path)
        root = self.dir.staging
        self.lmk = open(root / p.landmarks_file, "w", encoding="utf-8", newline="\n")
        self.lst = open(root / p.lst_file, "w", encoding="utf-8", newline="\n")
        self.count = 0
        self.labels = set()
        self._names: set[str] = set()
        self._label = None

    def write(self, s: facekit.Sample):
        folder = f"{self.params.prefix}{s.label:0{self.params.label_digits}d}"
        if s.label != self._label:
            self._label, self._names = s.label, set()
            (self.dir.staging / folder).mkdir()
            self.labels.add(s.label)
        if s.meta.get("stem"):  # a source naming its images (mxrec: the record key): keep the bytes' format
            stem, ext = s.meta["stem"], _extension(s.data)
            name = f"{stem}{ext}" if s.face_id == 0 else f"{stem}_{s.face_id}{ext}"
        else:  # aligned crops are JPEG; pass-through bytes keep their own format
            stem, ext = Path(s.path).stem, _extension(s.data)
            name = f"{stem}_{s.face_id}{ext}"
        if name in self._names:  # same stem twice in one identity (a.jpg + a.png)
            name = f"{stem}_{s.face_id}_{s.key}{ext}"
        self._names.add(name)
        with open(self.dir.staging / folder / name, "wb") as f:
            f.write(s.data)
        line = landmark_line(s)
        if line:
            self.lmk.write(line)
        self.lst.write(lst_line(s))
        self.count += 1

    def close(self):
        self.lmk.close()
        self.lst.close()
        return {"path": str(self.params.path), "images": self.count, "identities": len(self.labels)}

    def abort(self):
        for f in (getattr(self, "lmk", None), getattr(self, "lst", None)):
            if f is not None:
                f.close()


@facekit.hookimpl
def register_stages(register):
    register(FoldersSource)
    register(FoldersSink)
