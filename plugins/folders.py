"""Identity folders: the ``folders`` source (``ROOT/<identity>/<image>``) and the
``folders`` sink (aligned JPEGs in ``<prefix><id>/`` plus ``landmarks.txt`` and
``label.txt``, as the dataset-building guide's ``dir2lmk`` + ``glint2lst``)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

import facekit
from facekit.atomic import AtomicDir
from facekit.lst import landmark_line, lst_line

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp")


class FoldersSourceParams(facekit.SourceParams):
    root: facekit.InputPath = Field(description="folder with one sub-folder of images per identity")
    extensions: list[str] = Field(list(IMAGE_EXTENSIONS), description="image file extensions (case-insensitive)")


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
        for entry in entries:
            if not entry.is_dir():
                yield facekit.Reject(entry.path, "not_in_identity_folder", "files must be in ROOT/<identity>/")
                continue
            identity = entry.name
            with os.scandir(entry.path) as it:
                files = sorted(it, key=lambda e: e.name)
            for f in files:
                if f.is_dir():
                    yield facekit.Reject(f.path, "unsupported_file", "sub-folder inside an identity folder", identity)
                elif os.path.splitext(f.name)[1].lower() not in self.exts:
                    yield facekit.Reject(
                        f.path, "unsupported_file", f"extension not in {sorted(self.exts)}", identity
                    )
                else:
                    yield facekit.Sample(key=key, path=f.path, identity=identity)
                    key += 1


class FoldersSinkParams(facekit.Params):
    path: facekit.OutputPath = Field(description="output folder (replaced atomically at the end of the run)")
    prefix: str = Field("", description="prefix of each identity folder name (dir2lmk --dir_prefix)")
    landmarks_file: str = Field("landmarks.txt", description="dir2lmk landmark file: path face_id x1 y1 ... x5 y5")
    lst_file: str = Field("label.txt", description="glint2lst list: 0 path label 0 0 0 0 <5 x> <5 y>")


class FoldersSink(facekit.Sink):
    """Kept faces as ``<path>/<prefix><label>/<stem>_<face_id>.jpg`` plus side files."""

    name = "folders"
    Params = FoldersSinkParams

    def open(self):
        p = self.params
        self.dir = AtomicDir(p.path)
        root = self.dir.staging
        self.lmk = open(root / p.landmarks_file, "w", encoding="utf-8", newline="\n")
        self.lst = open(root / p.lst_file, "w", encoding="utf-8", newline="\n")
        self.count = 0
        self.labels = set()
        self._names: set[str] = set()
        self._label = None

    def write(self, s: facekit.Sample):
        if s.label != self._label:
            self._label, self._names = s.label, set()
            (self.dir.staging / f"{self.params.prefix}{s.label}").mkdir()
            self.labels.add(s.label)
        stem = Path(s.path).stem
        name = f"{stem}_{s.face_id}.jpg"
        if name in self._names:  # same stem twice in one identity (a.jpg + a.png)
            name = f"{stem}_{s.face_id}_{s.key}.jpg"
        self._names.add(name)
        with open(self.dir.staging / f"{self.params.prefix}{s.label}" / name, "wb") as f:
            f.write(s.data)
        line = landmark_line(s)
        if line:
            self.lmk.write(line)
        self.lst.write(lst_line(s))
        self.count += 1

    def close(self):
        self.lmk.close()
        self.lst.close()
        self.dir.commit()
        return {"path": str(self.params.path), "images": self.count, "identities": len(self.labels)}

    def abort(self):
        for f in (getattr(self, "lmk", None), getattr(self, "lst", None)):
            if f is not None:
                f.close()
        if hasattr(self, "dir"):
            self.dir.abort()


@facekit.hookimpl
def register_stages(register):
    register(FoldersSource)
    register(FoldersSink)
