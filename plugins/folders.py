"""Identity folders: the ``folders`` source (``ROOT/<identity>/<image>``) and the
``folders`` sink (aligned JPEGs in ``<prefix><id>/`` plus ``landmarks.txt``, as the
dataset-building guide's ``dir2lmk``, and ``label.txt``, the ``.lst`` of the crops, as
``dir2lst`` writes for that folder)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from pydantic import Field

import facekit
from facekit.formats import MARKER, aligned_lst_line, landmark_line
from facekit.vision import MAX_FILE_BYTES, TOO_LARGE, UNREADABLE, file_kind, os_error_detail

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp")
BAD_NAME = "bad_name"


class FoldersSourceParams(facekit.SourceParams):
    root: facekit.InputPath = Field(description="folder with one sub-folder of images per identity")
    extensions: list[str] = Field(list(IMAGE_EXTENSIONS), description="image file extensions (case-insensitive)")
    max_file_mb: float = Field(
        MAX_FILE_BYTES / (1 << 20), gt=0, description="files larger than this many MiB are rejected (too_large)"
    )


def _ext(name: str) -> str:
    """Lower-cased extension with its dot, as ``os.path.splitext(name)[1].lower()`` (a
    leading dot does not start an extension), without its per-call cost."""
    dot = name.rfind(".")
    if dot <= 0 or (name[0] == "." and not name[:dot].strip(".")):
        return ""
    return name[dot:].lower()


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key putting ``face2019_2`` before ``face2019_10`` (runs of digits compare as
    numbers, the rest as text); ties (``a01``, ``a1``) are broken by the name itself."""
    parts: list = _DIGITS.split(name)
    parts[1::2] = map(int, parts[1::2])
    return parts, name


# characters that end or split a line or field of a text output (C0 controls, DEL, the
# Unicode line separators str.splitlines honours) and lone surrogates: the bytes of a
# name that is not UTF-8 (Python decodes them with surrogateescape)
_BAD_NAME_CHARS = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]")


def name_problem(name: str) -> str | None:
    """Why ``name`` (a file or folder name) cannot appear in facekit's text outputs
    (``.lst``, ``label.txt``, ``landmarks.txt``, ``rejects.tsv``), or None if it can."""
    m = _BAD_NAME_CHARS.search(name)
    if m is None:
        return None
    c = m.group()
    if "\ud800" <= c <= "\udfff":
        return "the name is not valid UTF-8"
    return f"the name contains the control character {c!r}"


def _bad_names(names: list[str]) -> bool:
    """Whether any of ``names`` has a :func:`name_problem` (one regex pass per folder)."""
    return _BAD_NAME_CHARS.search("/".join(names)) is not None


def _kind(entry: os.DirEntry) -> tuple[str, os.stat_result | None]:
    """What ``entry`` is once symbolic links are followed: ``("dir", None)``,
    ``("file", st)`` (a regular file; ``st`` is None unless a link had to be followed),
    ``("other", st)`` (FIFO, device, socket). Raises OSError (link loop, dangling link)."""
    if not entry.is_symlink():  # the folder listing's file type: no system call
        if entry.is_dir(follow_symlinks=False):
            return "dir", None
        if entry.is_file(follow_symlinks=False):
            return "file", None
        return "other", entry.stat(follow_symlinks=False)
    st = entry.stat()  # follows the link: ELOOP, ENOENT raise
    if stat.S_ISDIR(st.st_mode):
        return "dir", st
    return ("file" if stat.S_ISREG(st.st_mode) else "other"), st


_DIGIT_TO_0 = str.maketrans("123456789", "000000000")


def _natural_sort(items: list, name=lambda x: x) -> None:
    """Sort ``items`` in place in natural order of their ``name`` (:func:`natural_key`)."""
    # Names of one shape (digits at the same places, e.g. 0000001.jpg, 0000002.jpg, or no
    # digits at all) sort the same by text and by number: the plain sort, 300x cheaper.
    if len(set("/".join([name(x) for x in items]).translate(_DIGIT_TO_0).split("/"))) <= 1:
        items.sort(key=name)
    else:
        items.sort(key=lambda x: natural_key(name(x)))


def _listing(path: str) -> list[os.DirEntry]:
    """The entries of folder ``path`` in natural order (:func:`natural_key`). Raises OSError."""
    with os.scandir(path) as it:
        entries = list(it)
    _natural_sort(entries, lambda e: e.name)
    return entries


#: top-level entry types from the folder listing (no system call): an identity folder, a
#: regular file, anything else (a link to follow, a FIFO, ...)
_DIR, _FILE, _OTHER = 0, 1, 2


def _top_names(root: str) -> tuple[list[str], bytearray]:
    """The names in folder ``root`` in natural order and their types (``_DIR``, ``_FILE``,
    ``_OTHER``). Names, not ``os.DirEntry`` objects: the top level of a dataset has one
    entry per identity (~60 B a name instead of ~210 B an entry: 85k identities of MS1M,
    360k of Glint360K). Raises OSError."""
    types: dict[str, int] = {}
    with os.scandir(root) as it:
        for e in it:
            try:  # no system call where the listing gives the type
                link = e.is_symlink()
                types[e.name] = (
                    _DIR if not link and e.is_dir(follow_symlinks=False)
                    else _FILE if not link and e.is_file(follow_symlinks=False)
                    else _OTHER
                )
            except OSError:  # looked at again (and reported) when iterated
                types[e.name] = _OTHER
    names = list(types)
    _natural_sort(names)
    return names, bytearray(types[n] for n in names)


class FoldersSource(facekit.Source):
    """Images in ``ROOT/<identity>/<image>``; identities and files in natural order
    (``id_2`` before ``id_10``, so the folders sink's ``<prefix><label>`` folders are read
    back in label order).

    Only regular files (after following symbolic links) with one of ``extensions`` are
    yielded; every other entry is a reject: ``bad_name`` (a control character such as tab,
    newline or CR, or bytes that are not UTF-8, in the identity or file name: such a name
    would break every text output), ``unsupported_file`` (other extension, sub-folder),
    ``unreadable`` (FIFO, device, socket, symbolic link loop or dangling link, folder that
    cannot be listed), ``too_large`` (a linked file above ``max_file_mb``; other files are
    checked when read: the limit travels in ``Sample.max_bytes`` when it is not the
    default), ``not_in_identity_folder``. Nothing is opened while listing.
    """

    name = "folders"
    Params = FoldersSourceParams

    def __init__(self, params):
        super().__init__(params)
        root = params.root
        if not root.is_dir():
            raise facekit.ConfigError(f"folders source: root {root} is not a folder")
        self.exts = {"." + e.lower().lstrip(".") for e in params.extensions}
        self.max_bytes = int(params.max_file_mb * (1 << 20))

    def _top(self):
        """``(name, path, kind, listing, error)`` for each top-level entry, in natural order.

        kind: "dir" (an identity folder; listing = its entries, or error = why it cannot
        be listed), "skip" (a side file of a folder facekit wrote), "file" (any other
        entry). Reads no file.
        """
        root = str(self.params.root)
        # A folder facekit wrote (the folders sink) has its side files at the top level:
        # landmarks, .lst and the marker. They are not images of an identity.
        own = os.path.exists(os.path.join(root, MARKER))
        names, types = _top_names(root)
        for name, t in zip(names, types):
            path = os.path.join(root, name)
            if t == _OTHER:  # a link (followed) or a special file
                try:
                    t = _DIR if stat.S_ISDIR(os.stat(path).st_mode) else _FILE
                except OSError as e:
                    yield name, path, "dir", None, os_error_detail(e)  # a link loop: reported as a folder
                    continue
            if t != _DIR:
                yield name, path, ("skip" if own else "file"), None, None
                continue
            try:
                listing, error = _listing(path), None
            except OSError as e:
                listing, error = None, os_error_detail(e)
            yield name, path, "dir", listing, error

    def count(self) -> int:
        """Items :meth:`__iter__` yields (one per file of each identity folder, one per
        unusable top-level entry), from a directory walk: no file is opened."""
        n = 0
        for _, _, kind, listing, _ in self._top():
            if kind == "dir":
                n += 1 if listing is None else len(listing)
            elif kind == "file":
                n += 1
        return n

    def __iter__(self):
        key = 0
        exts = self.exts
        max_bytes = self.max_bytes
        Sample = facekit.Sample
        limit = max_bytes if max_bytes != MAX_FILE_BYTES else None
        for identity, path, kind, files, error in self._top():
            if kind == "skip":
                continue
            if kind == "file":
                yield facekit.Reject(path, "not_in_identity_folder", "files must be in ROOT/<identity>/")
                continue
            if files is None:
                yield facekit.Reject(path, UNREADABLE, f"identity folder: {error}", identity)
                continue
            bad_identity = name_problem(identity)
            check_names = bad_identity is not None or _bad_names([f.name for f in files])
            for f in files:
                if check_names:
                    problem = f"identity folder: {bad_identity}" if bad_identity else name_problem(f.name)
                    if problem:
                        yield facekit.Reject(f.path, BAD_NAME, problem, identity)
                        continue
                # the common case (a regular file, not a link, with an image extension)
                # costs no system call: the folder listing gives the file type
                if limit is None and f.is_file(follow_symlinks=False) and _ext(f.name) in exts:
                    item = Sample(key=key, path=f.path, identity=identity)
                else:
                    item = self._file(f, identity, key, limit)
                if type(item) is Sample:
                    key += 1
                yield item

    def _file(self, f: os.DirEntry, identity: str, key: int, limit: int | None):
        """The one item (Sample or Reject) for entry ``f`` of an identity folder."""
        try:
            kind, st = _kind(f)
        except OSError as e:
            return facekit.Reject(f.path, UNREADABLE, os_error_detail(e), identity)
        if kind == "dir":
            return facekit.Reject(f.path, "unsupported_file", "sub-folder inside an identity folder", identity)
        if _ext(f.name) not in self.exts:
            return facekit.Reject(f.path, "unsupported_file", f"extension not in {sorted(self.exts)}", identity)
        if kind == "other":
            return facekit.Reject(f.path, UNREADABLE, f"not a regular file: {file_kind(st.st_mode)}", identity)
        if st is not None and st.st_size > self.max_bytes:
            return facekit.Reject(f.path, TOO_LARGE, f"{st.st_size} bytes > limit {self.max_bytes}", identity)
        return facekit.Sample(key=key, path=f.path, identity=identity, max_bytes=limit)


def _extension(data: bytes) -> str:
    """File extension for encoded image bytes, from their signature (JPEG if unknown)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:2] == b"BM":
        return ".bmp"
    return ".jpg"


class FoldersSinkParams(facekit.Params):
    path: facekit.OutputPath = Field(description="output folder (replaced atomically at the end of the run)")
    prefix: str = Field(
        "", pattern=r"^[^/\\\x00-\x1f\x7f]*$", description="prefix of each identity folder name (dir2lmk --dir_prefix)"
    )
    landmarks_file: str = Field("landmarks.txt", description="dir2lmk landmark file: path face_id x1 y1 ... x5 y5")
    lst_file: str = Field(
        "label.txt", description="insightface .lst of the written crops (dir2lst): 1 <folder>/<file> label, paths relative to path"
    )
    label_digits: int = Field(
        0, ge=0, le=12, description="zero-pad the label in folder names to this many digits (sorted by name = by label)"
    )


class FoldersSink(facekit.Sink):
    """Kept faces as ``<path>/<prefix><label>/<stem>_<face_id>.<ext>`` plus side files.

    Every sample written is its own file: a name already used in the identity's folder
    (``a.jpg`` and ``a.png``; several variants of one face from an augmenter) gets
    ``_v1``, ``_v2``, ... in write order (names compared case-insensitively), so names are
    deterministic and nothing is overwritten.

    ``label.txt`` (``lst_file``) describes the crops in this folder in insightface's
    ``.lst`` format, one line per file, as ``dir2lst`` writes: ``1<TAB><prefix><label>/<file>
    <TAB><label>`` (aligned flag 1), paths relative to the output folder. ``face2rec2``
    opens the paths as written, so run it from the output folder (e.g. ``lst_file:
    train.lst`` plus a ``property`` file, then ``cd <path> && python face2rec2.py train``).
    ``landmarks.txt`` (``dir2lmk``) gives each crop's source image and its landmarks in
    that image.
    """

    name = "folders"
    Params = FoldersSinkParams

    def open(self, publication):
        p = self.params
        self.dir = publication.dir(p.path)
        root = self.dir.staging
        self.lmk = open(root / p.landmarks_file, "w", encoding="utf-8", newline="\n")
        self.lst = open(root / p.lst_file, "w", encoding="utf-8", newline="\n")
        self.count = 0
        self.identities = 0  # folders made: one per label (mkdir refuses a label seen before)
        # file paths as plain strings: pathlib interns every part of every path it parses
        # (the interpreter's intern table grew by ~2 MiB over a run of 1M files)
        self._root = os.fspath(root)
        self._names: set[str] = set()
        self._label = None

    def write(self, s: facekit.Sample):
        folder = f"{self.params.prefix}{s.label:0{self.params.label_digits}d}"
        if s.label != self._label:
            self._label, self._names = s.label, set()
            os.mkdir(os.path.join(self._root, folder))
            self.identities += 1
        if s.stem:  # a source naming its images (mxrec: the record key): keep the bytes' format
            stem, ext = s.stem, _extension(s.data)
            name = f"{stem}{ext}" if s.face_id == 0 else f"{stem}_{s.face_id}{ext}"
        else:  # aligned crops are JPEG; pass-through bytes keep their own format
            stem, ext = Path(s.path).stem, _extension(s.data)
            name = f"{stem}_{s.face_id}{ext}"
        if name.lower() in self._names:  # same stem twice in one identity (a.jpg + a.png, augmented variants)
            base, n = name[: -len(ext)], 1
            while name.lower() in self._names:
                name = f"{base}_v{n}{ext}"
                n += 1
        self._names.add(name.lower())
        with open(os.path.join(self._root, folder, name), "xb") as f:  # never overwrite a crop
            f.write(s.data)
        line = landmark_line(s)
        if line:
            self.lmk.write(line)
        self.lst.write(aligned_lst_line(f"{folder}/{name}", s.label))
        self.count += 1
        return f"{folder}/{name}"

    def close(self):
        self.lmk.close()
        self.lst.close()
        return {"path": str(self.params.path), "images": self.count, "identities": self.identities}

    def abort(self):
        for f in (getattr(self, "lmk", None), getattr(self, "lst", None)):
            if f is not None:
                f.close()


@facekit.hookimpl
def register_stages(register):
    register(FoldersSource)
    register(FoldersSink)
