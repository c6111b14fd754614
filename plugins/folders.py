"""Identity folders: the ``folders`` source (``ROOT/<identity>/<image>``) and the
``folders`` sink (aligned JPEGs in ``<prefix><id>/`` plus ``landmarks.txt``, as the
dataset-building guide's ``dir2lmk``, and ``label.txt``, the ``.lst`` of the crops, as
``dir2lst`` writes for that folder)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import unicodedata

from pydantic import Field, model_validator

import facekit
from facekit.formats import MARKER, aligned_lst_line, landmark_line
from facekit.vision import (
    EMPTY_FILE,
    MAX_FILE_BYTES,
    NOT_AN_IMAGE,
    SNIFF_BYTES,
    TOO_LARGE,
    UNREADABLE,
    file_kind,
    image_format,
    os_error_detail,
    read_head,
)

#: extensions of the formats the decoder reads (JPEG, PNG, GIF, BMP, WebP, TIFF, netpbm,
#: JPEG 2000): such a file is admitted without opening it (the decoder judges its bytes),
#: any other is admitted when its first bytes are one of them (:func:`image_format`);
#: and such an extension is what the folders sink drops from a source name to make a stem
IMAGE_EXTENSIONS = (
    "jpg", "jpeg", "jpe", "jfif", "png", "gif", "bmp", "dib", "webp", "tif", "tiff",
    "pbm", "pgm", "ppm", "pnm", "jp2", "j2k", "j2c", "jpc", "jpf", "jpx",
)
IMAGE_SUFFIXES = frozenset("." + e for e in IMAGE_EXTENSIONS)
BAD_NAME = "bad_name"
UNSUPPORTED_FILE = "unsupported_file"
#: what the formats are called in a reject's detail
_FORMATS = "JPEG, PNG, GIF, BMP, WebP, TIFF, PBM/PGM/PPM, JPEG 2000"
log = logging.getLogger("facekit.folders")
#: the most bytes of a file or folder name where the file system cannot say (ext4, XFS,
#: btrfs, tmpfs: NAME_MAX)
NAME_MAX = 255


class FoldersSourceParams(facekit.SourceParams):
    root: facekit.InputPath = Field(description="folder with one sub-folder of images per identity")
    extensions: list[str] | None = Field(
        None,
        min_length=1,
        description="admit only files with these extensions (case-insensitive), by their name; default: any file "
        f"whose first bytes are an image ({_FORMATS}), whatever its name",
    )
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


def nfc(name: str) -> str:
    """``name`` in Unicode normalisation form C (``José`` typed on macOS arrives as ``e`` +
    a combining accent, NFD; most other systems write the single character, NFC)."""
    return name if name.isascii() or unicodedata.is_normalized("NFC", name) else unicodedata.normalize("NFC", name)


def _top_names(root: str) -> tuple[list[str], bytearray, list[str]]:
    """The names in folder ``root``, their types (``_DIR``, ``_FILE``, ``_OTHER``) and their
    identities (the NFC form of each name, :func:`nfc`), in natural order of the identity.
    Names that differ only in normalisation (``José`` as NFC and as NFD) are one identity:
    they come together, the name already in NFC first, then the others in code point order.
    Names, not ``os.DirEntry`` objects: the top level of a dataset has one entry per
    identity (~60 B a name instead of ~210 B an entry: 85k identities of MS1M, 360k of
    Glint360K). Raises OSError."""
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
    idents = [nfc(n) for n in names]
    if idents == names:  # the common case: every name already NFC
        _natural_sort(names)
        return names, bytearray(types[n] for n in names), names
    pairs = sorted(zip(idents, names), key=lambda p: (p[1] != p[0], p[1]))
    _natural_sort(pairs, lambda p: p[0])  # stable: names of one identity keep the order above
    return [n for _, n in pairs], bytearray(types[n] for _, n in pairs), [i for i, _ in pairs]


def merged_names(names: list[str], idents: list[str]) -> dict[str, list[str]]:
    """``{identity: [folder names]}`` for each identity that several of ``names`` (in
    :func:`_top_names` order, so those of one identity are adjacent) normalise to."""
    out: dict[str, list[str]] = {}
    for k in range(1, len(names)):
        if idents[k] == idents[k - 1]:
            out.setdefault(idents[k], [names[k - 1]]).append(names[k])
    return out


def merge_warning(merged: dict[str, list[str]], root) -> str:
    """The one-line warning naming the identities merged from several folders."""
    shown = "; ".join(f"{i!r} <- {', '.join(ascii(n) for n in ns)}" for i, ns in list(merged.items())[:5])
    more = f"; and {len(merged) - 5} more" if len(merged) > 5 else ""
    return (
        f"folders source: {root}: {len(merged)} identit{'y' if len(merged) == 1 else 'ies'} named by several folders "
        f"whose names differ only in Unicode normalisation, each merged into one identity under its NFC name "
        f"(the NFC-named folder's images first, then the others' in code point order of the names): {shown}{more}"
    )


class FoldersSource(facekit.Source):
    """Images in ``ROOT/<identity>/<image>``; identities and files in natural order
    (``id_2`` before ``id_10``, so the folders sink's ``<prefix><label>`` folders are read
    back in label order).

    Content decides, not the name: regular files (after following symbolic links) are
    yielded when their name ends in an image extension (:data:`IMAGE_EXTENSIONS`: the
    decoder then judges the bytes, so a PNG saved as ``.jpg`` is read as the PNG it is) or,
    whatever their name (``subject01.glasses``, ``00000007.jpg?w=1200&h=0``, no extension),
    when their first :data:`~facekit.vision.SNIFF_BYTES` bytes are an image signature the
    decoder reads (:func:`~facekit.vision.image_format`: JPEG, PNG, GIF, BMP, WebP, TIFF,
    PBM/PGM/PPM, JPEG 2000): one bounded read of that file's start, never the whole file.
    ``extensions``, when given, admits by name instead, as a filter: only those extensions,
    nothing opened.

    Every other entry is a reject: ``bad_name`` (a control character such as tab, newline
    or CR, or bytes that are not UTF-8, in the identity or file name: such a name would
    break every text output), ``not_an_image`` (a file whose first bytes are no image:
    ``Thumbs.db``, ``.DS_Store``, ``*.info``, logs), ``empty_file``, ``unsupported_file``
    (sub-folder; with ``extensions``, another extension), ``unreadable`` (FIFO, device,
    socket, symbolic link loop or dangling link, folder that cannot be listed),
    ``too_large`` (a linked or sniffed file above ``max_file_mb``; other files are checked
    when read: the limit travels in ``Sample.max_bytes`` when it is not the default),
    ``not_in_identity_folder``. Listing opens nothing; a file whose name has an image
    extension is not opened before the worker reads it.

    When more than half of the items are ``unsupported_file`` or ``not_an_image`` rejects
    of the source, one warning line says so with the counts (a folder of the wrong files,
    or an ``extensions`` filter that refuses most of the data).
    """

    name = "folders"
    Params = FoldersSourceParams

    def __init__(self, params):
        super().__init__(params)
        root = params.root
        if not root.is_dir():
            raise facekit.ConfigError(f"folders source: root {root} is not a folder")
        #: the extensions admitted by name, None: admitted by content
        self.exts = None if params.extensions is None else {"." + e.lower().lstrip(".") for e in params.extensions}
        self.max_bytes = int(params.max_file_mb * (1 << 20))

    def _top(self, listed=None):
        """``(identity, path, kind, listing, error)`` for each top-level entry, in natural
        order of the identity (the entry's name in NFC, :func:`_top_names`).

        kind: "dir" (an identity folder; listing = its entries, or error = why it cannot
        be listed), "skip" (a side file of a folder facekit wrote), "file" (any other
        entry). Reads no file. ``listed``: what :func:`_top_names` returned (else listed
        here).
        """
        root = str(self.params.root)
        # A folder facekit wrote (the folders sink) has its side files at the top level:
        # landmarks, .lst and the marker. They are not images of an identity.
        own = os.path.exists(os.path.join(root, MARKER))
        names, types, idents = listed or _top_names(root)
        for name, t, identity in zip(names, types, idents):
            path = os.path.join(root, name)
            if t == _OTHER:  # a link (followed) or a special file
                try:
                    t = _DIR if stat.S_ISDIR(os.stat(path).st_mode) else _FILE
                except OSError as e:
                    yield identity, path, "dir", None, os_error_detail(e)  # a link loop: reported as a folder
                    continue
            if t != _DIR:
                yield identity, path, ("skip" if own else "file"), None, None
                continue
            try:
                listing, error = _listing(path), None
            except OSError as e:
                listing, error = None, os_error_detail(e)
            yield identity, path, "dir", listing, error

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
        """Samples and rejects in natural order of identity, then file. Folders whose names
        differ only in Unicode normalisation are one identity (its NFC name), their images
        one run, the NFC-named folder's first; a warning names them."""
        key = 0
        exts = IMAGE_SUFFIXES if self.exts is None else self.exts
        junk: dict[str, int] = {UNSUPPORTED_FILE: 0, NOT_AN_IMAGE: 0}
        n = 0  # items yielded (the warning's denominator)
        max_bytes = self.max_bytes
        Sample = facekit.Sample
        limit = max_bytes if max_bytes != MAX_FILE_BYTES else None
        listed = _top_names(str(self.params.root))
        if listed[2] is not listed[0]:
            merged = merged_names(listed[0], listed[2])
            if merged:
                log.warning("%s", merge_warning(merged, self.params.root))
        for identity, path, kind, files, error in self._top(listed):
            if kind == "skip":
                continue
            if kind == "file" or files is None:
                n += 1
                if kind == "file":
                    yield facekit.Reject(path, "not_in_identity_folder", "files must be in ROOT/<identity>/")
                else:
                    yield facekit.Reject(path, UNREADABLE, f"identity folder: {error}", identity)
                continue
            n += len(files)
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
                elif item.reason in junk:
                    junk[item.reason] += 1
                yield item
        if 2 * sum(junk.values()) > n:
            log.warning("%s", self._junk_warning(junk, n))

    def _junk_warning(self, junk: dict[str, int], n: int) -> str:
        """The one-line warning of a run whose items are mostly files that are not images."""
        total = sum(junk.values())
        hint = "see rejects.tsv"
        if junk[UNSUPPORTED_FILE] and self.exts is not None:
            hint = (
                f"extensions: {sorted(e[1:] for e in self.exts)} admits files by name: leave it out to admit "
                "every file whose bytes are an image, whatever its name; " + hint
            )
        return (
            f"folders source: {self.params.root}: {total} of {n} items ({100 * total // n}%) are not images: "
            f"unsupported_file {junk[UNSUPPORTED_FILE]}, not_an_image {junk[NOT_AN_IMAGE]} ({hint})"
        )

    def _file(self, f: os.DirEntry, identity: str, key: int, limit: int | None):
        """The one item (Sample or Reject) for entry ``f`` of an identity folder."""
        try:
            kind, st = _kind(f)
        except OSError as e:
            return facekit.Reject(f.path, UNREADABLE, os_error_detail(e), identity)
        if kind == "dir":
            return facekit.Reject(f.path, UNSUPPORTED_FILE, "sub-folder inside an identity folder", identity)
        ext = _ext(f.name)
        if self.exts is not None and ext not in self.exts:
            return facekit.Reject(f.path, UNSUPPORTED_FILE, f"extension not in {sorted(self.exts)}", identity)
        if kind == "other":
            return facekit.Reject(f.path, UNREADABLE, f"not a regular file: {file_kind(st.st_mode)}", identity)
        if st is not None and st.st_size > self.max_bytes:
            return facekit.Reject(f.path, TOO_LARGE, f"{st.st_size} bytes > limit {self.max_bytes}", identity)
        if self.exts is None and ext not in IMAGE_SUFFIXES:  # the name says nothing: the first bytes decide
            try:
                head = read_head(f.path, self.max_bytes)
            except facekit.SampleRejected as e:
                return facekit.Reject(f.path, e.reason, e.detail, identity)
            if not head:
                return facekit.Reject(f.path, EMPTY_FILE, "file has 0 bytes", identity)
            if image_format(head) is None:
                return facekit.Reject(
                    f.path, NOT_AN_IMAGE, f"no image format recognised in its first bytes ({_FORMATS})", identity
                )
        return facekit.Sample(key=key, path=f.path, identity=identity, max_bytes=limit)


_FORMAT_EXTENSIONS = {"PNG": ".png", "BMP": ".bmp", "GIF": ".gif", "WEBP": ".webp", "TIFF": ".tif"}


def _extension(data: bytes) -> str:
    """File extension for encoded image bytes, from their signature (:func:`image_format`;
    JPEG if unknown)."""
    if data[:3] == b"\xff\xd8\xff":  # aligned crops: JPEG
        return ".jpg"
    fmt = image_format(data[:SNIFF_BYTES])
    if fmt == "PPM":
        return (".pbm", ".pgm", ".ppm")[(data[1] - ord("1")) % 3]
    if fmt == "JPEG2000":
        return ".jp2" if data[:1] == b"\x00" else ".j2k"
    return _FORMAT_EXTENSIONS.get(fmt, ".jpg")


def image_stem(path: str) -> str:
    """The name of the file at ``path`` without its extension when that is an image
    extension (:data:`IMAGE_EXTENSIONS`: ``a.jpg`` -> ``a``), else the whole name
    (``subject01.glasses``, ``00000007.jpg?w=1200&h=0``): the part of a name the folders
    sink keeps."""
    name = os.path.basename(path)
    ext = _ext(name)
    return name[: -len(ext)] if ext in IMAGE_SUFFIXES else name


def fit_name(stem: str, tail: str = "", limit: int = NAME_MAX) -> str:
    """``stem + tail`` if it fits in ``limit`` bytes (a file system's NAME_MAX: names are
    counted in bytes, UTF-8 on Linux), else the first characters of ``stem`` that fit, ``~``,
    12 hex digits of the SHA-256 of the whole ``stem``, then ``tail``: deterministic, unique
    for different stems (within the hash), readable, and never cut inside a multi-byte
    character. ``tail`` (``_0.jpg``, ``_v1.jpg``) is kept whole."""
    name = stem + tail
    if len(os.fsencode(name)) <= limit:
        return name
    raw = os.fsencode(stem)
    mark = "~" + hashlib.sha256(raw).hexdigest()[:12]
    room = limit - len(os.fsencode(mark + tail))
    if room < 0:
        raise ValueError(f"no file name of {limit} bytes can end with {tail!r}")
    # cut at a character boundary: the bytes of a character cut in two are dropped
    # (and undecodable bytes of a name that is not UTF-8): the head never grows
    head = raw[:room].decode("utf-8", "ignore")
    return head + mark + tail


def _name_max(folder: str) -> int:
    """The longest file name, in bytes, the file system of ``folder`` allows."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


#: digits of the largest class id (2**31 - 1)
_LABEL_DIGITS = 10


class FoldersSinkParams(facekit.Params):
    path: facekit.OutputPath = Field(description="output folder (replaced atomically at the end of the run)")
    prefix: str = Field(
        "", pattern=r"^[^/\\\x00-\x1f\x7f]*$", description="prefix of each identity folder name (dir2lmk --dir_prefix)"
    )
    landmarks_file: facekit.FileName = Field("landmarks.txt", description="dir2lmk landmark file: path face_id x1 y1 ... x5 y5")
    lst_file: facekit.FileName = Field(
        "label.txt", description="insightface .lst of the written crops (dir2lst): 1 <folder>/<file> label, paths relative to path"
    )
    label_digits: int = Field(
        0, ge=0, le=12, description="zero-pad the label in folder names to this many digits (sorted by name = by label)"
    )

    @model_validator(mode="after")
    def _prefix_fits(self):
        longest = len(os.fsencode(self.prefix)) + max(self.label_digits, _LABEL_DIGITS)
        if longest > NAME_MAX:
            raise ValueError(
                f"prefix is {len(os.fsencode(self.prefix))} bytes: with a label of up to "
                f"{max(self.label_digits, _LABEL_DIGITS)} digits a folder name would pass the {NAME_MAX} bytes "
                "file systems allow"
            )
        return self


class FoldersSink(facekit.Sink):
    """Kept faces as ``<path>/<prefix><label>/<stem>_<face_id>.<ext>`` plus side files.

    ``<stem>`` is the source file's name less its extension when that is an image extension
    (:func:`image_stem`: ``a.jpg`` -> ``a``; ``subject01.glasses`` and
    ``00000007.jpg?w=1200&h=0`` stay whole); ``<ext>`` says what the bytes are (aligned
    crops: ``.jpg``; bytes passed through keep their format: ``.png``, ``.webp``, ``.tif``,
    ``.pgm``, ``.jp2``, ...).

    Every sample written is its own file: a name already used in the identity's folder
    (``a.jpg`` and ``a.png``; several variants of one face from an augmenter) gets
    ``_v1``, ``_v2``, ... in write order (names compared case-insensitively and in Unicode
    NFC, as case-insensitive or normalising file systems compare them), so names are
    deterministic and nothing is overwritten.

    A source that names the image's folder as well (``stem`` ``<folder>/<name>``: the
    ``mxrec`` source with a ``.lst`` beside the rec) gets ``<prefix><folder>/<name>.<ext>``;
    a folder name another label already took (compared as above) gets ``_<label>``.

    A name longer than the file system allows (NAME_MAX, 255 bytes on ext4: a legal
    255-byte source file plus ``_0``) is shortened by :func:`fit_name`: its first
    characters, ``~``, 12 hex digits of a hash of the whole name, the ``_<face>.<ext>``
    ending. The results table's ``outputs`` and ``label.txt`` name the file written.

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
        self.name_max = _name_max(os.fspath(root))
        if len(os.fsencode(p.prefix)) + max(p.label_digits, _LABEL_DIGITS) > self.name_max:
            raise facekit.FacekitError(
                f"folders sink: prefix {p.prefix!r} leaves no room for the label in a folder name of "
                f"{self.name_max} bytes (the most the file system of {p.path} allows)"
            )
        self.lmk = open(root / p.landmarks_file, "w", encoding="utf-8", newline="\n")
        self.lst = open(root / p.lst_file, "w", encoding="utf-8", newline="\n")
        self.count = 0
        self.identities = 0  # folders made: one per label (mkdir refuses a label seen before)
        # file paths as plain strings: pathlib interns every part of every path it parses
        # (the interpreter's intern table grew by ~2 MiB over a run of 1M files)
        self._root = os.fspath(root)
        self._names: set[str] = set()
        self._folders: set[str] = set()  # named folders (a source's folder names), compared
        self._label = None
        self._folder = ""

    @staticmethod
    def _same(name: str) -> str:
        """What a case-insensitive, normalising file system compares: NFC, lower case."""
        return nfc(name).lower()

    def _new_folder(self, s: facekit.Sample) -> str:
        """The folder of ``s``'s label: ``<prefix><label>``, or ``<prefix><folder>`` when
        the source names it (``stem`` ``<folder>/<name>``)."""
        p = self.params
        if s.stem and "/" in s.stem:
            named = fit_name(p.prefix + s.stem.partition("/")[0], "", self.name_max)
            if self._same(named) in self._folders:
                named = fit_name(p.prefix + s.stem.partition("/")[0], f"_{s.label}", self.name_max)
            self._folders.add(self._same(named))
            return named
        return f"{p.prefix}{s.label:0{p.label_digits}d}"

    def write(self, s: facekit.Sample):
        if s.label != self._label:
            self._label, self._names = s.label, set()
            self._folder = self._new_folder(s)
            os.mkdir(os.path.join(self._root, self._folder))
            self.identities += 1
        folder = self._folder
        ext = _extension(s.data)  # aligned crops are JPEG; pass-through bytes keep their own format
        if s.stem:  # a source naming its images (mxrec: the record key or the .lst's name)
            stem = s.stem.rpartition("/")[2]
            face = "" if s.face_id == 0 else f"_{s.face_id}"
        else:
            stem, face = image_stem(s.path), f"_{s.face_id}"
        limit = self.name_max
        name = fit_name(stem, face + ext, limit)
        n = 1
        while self._same(name) in self._names:  # same stem twice in one identity (a.jpg + a.png, augmented variants)
            name = fit_name(stem, f"{face}_v{n}{ext}", limit)
            n += 1
        self._names.add(self._same(name))
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
