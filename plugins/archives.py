"""Archives of identity folders: the ``archives`` source (issue 29 part 2). Zip and tar
(plain or gzip) files, read in place, member by member: nothing is extracted to disk and
no archive is held in memory, only the member being read (at most ``max_file_mb``).

``parts`` names one archive or several (glob patterns, e.g. ``parts/*/*.zip``, or a list
of them; relative to the config's folder): they are read in the order given, each
pattern's matches in natural order (``9_6.zip`` before ``10_0.zip``). Identities are the
folders at ``inside`` in each archive (``inside: WebFace260M/`` for WebFace4M/12M/42M;
default: the archive's top level): ``<inside><identity>/<image>``.

Order: a zip's central directory is sorted as the folders source sorts a folder
(identities, then files, in natural order); a tar is read in archive order (it is one
stream). Identities must be contiguous: one that comes back after another (in a tar, or
in a later part) is a one-line error naming the archive and the member. An identity split
across two consecutive parts (the last identity of one part is the first of the next) is
one identity.

Files are admitted by content as in the ``folders`` source (an image extension, or first
bytes that are an image; ``extensions`` filters by name instead). Rejects (the path is
``<archive>:<member>``): ``bad_name``, ``not_an_image``, ``empty_file``,
``unsupported_file`` (a file in a sub-folder of an identity; another extension),
``not_in_identity_folder`` (a file at ``inside`` itself or outside it), ``unsafe_member``
(a ``..`` component, an absolute path, a symbolic or hard link, a device, FIFO or other
special member, a name already seen in the identity), ``too_large`` (declared or read
size over ``max_file_mb``; a zip member whose declared or read size is over
``max_ratio`` times its compressed size: a zip bomb; reading stops at the limit). A tar
member declaring more than ``max_ratio`` times the whole archive's size (a gzip bomb) is
a one-line error, refused before it is decompressed.

A truncated or unreadable archive is a one-line error naming it. Encrypted zips
(ZipCrypto and AES, through pyzipper) take their password from ``password_env`` (an
environment variable's name) or ``password_file`` (a file holding it; one trailing
newline dropped), never from the config text; it is never printed. A missing or wrong
password is a one-line error naming the archive. ZipCrypto is decrypted fast (C) only with
the ``zipcrypto`` extra: ``pip install 'facekit[zipcrypto]'`` (fastzipfile).
"""

from __future__ import annotations

import glob
import logging
import os
import stat
import tarfile
import zipfile
from pathlib import Path
from zlib import error as zlib_error

from facekit_plugins.folders import (
    _FORMATS,
    BAD_NAME,
    IMAGE_SUFFIXES,
    UNSUPPORTED_FILE,
    _ext,
    name_problem,
    natural_key,
    nfc,
)
from pydantic import Field, ValidationInfo, field_validator, model_validator

import facekit
from facekit.vision import (
    EMPTY_FILE,
    MAX_FILE_BYTES,
    NOT_AN_IMAGE,
    SNIFF_BYTES,
    TOO_LARGE,
    image_format,
)

log = logging.getLogger("facekit.archives")
UNSAFE_MEMBER = "unsafe_member"
NOT_IN_IDENTITY_FOLDER = "not_in_identity_folder"
#: bytes read from a member at a time (the read is counted and stopped at the limit)
_CHUNK = 1 << 20


class ArchivesSourceParams(facekit.SourceParams):
    parts: list[str] = Field(
        min_length=1,
        description="archive paths or glob patterns (zip, tar, tar.gz), relative to the config's folder; "
        "read in this order, each pattern's matches in natural order",
    )
    inside: str = Field("", description="folder inside each archive holding the identity folders (e.g. WebFace260M/)")
    extensions: list[str] | None = Field(
        None, min_length=1, description="admit only members with these extensions; default: by content"
    )
    max_file_mb: float = Field(MAX_FILE_BYTES / (1 << 20), gt=0, description="members larger than this are too_large")
    max_ratio: float = Field(
        200.0, gt=1, description="a zip member expanding more than this many times its compressed size is too_large"
    )
    password_env: str | None = Field(None, description="environment variable holding the zip password")
    password_file: facekit.InputPath | None = Field(None, description="file holding the zip password")

    @field_validator("parts", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, str) else v

    @field_validator("parts")
    @classmethod
    def _expand(cls, v: list[str], info: ValidationInfo) -> list[str]:
        base = (info.context or {}).get("config_dir")
        out: list[str] = []
        for pattern in v:
            p = os.path.expanduser(pattern)
            if not os.path.isabs(p) and base is not None:
                p = os.path.join(base, p)
            found = sorted(glob.glob(p), key=natural_key) if glob.has_magic(p) else [p] if os.path.exists(p) else []
            files = [f for f in found if os.path.isfile(f)]
            if not files:
                raise ValueError(f"{pattern!r} names no archive file")
            out += [os.path.normpath(f) for f in files if os.path.normpath(f) not in out]
        return out

    @field_validator("inside")
    @classmethod
    def _inside(cls, v: str) -> str:
        v = v.strip("/")
        if ".." in v.split("/") or "\\" in v:
            raise ValueError(f"inside {v!r}: a folder inside the archive, without '..'")
        return v + "/" if v else ""

    @model_validator(mode="after")
    def _one_password(self):
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        return self


_warned_slow = False


def _zipcrypto_reader(part: str, password: bytes | None) -> tuple[zipfile.ZipFile, dict]:
    """``(reader, {header offset: its member})``: a stdlib zip reader of ``part`` for its
    ZipCrypto members, with fastzipfile's C
    decrypter when it is installed (~60 MB/s; Python's own and pyzipper's are pure Python,
    ~0.6 MB/s measured); else one warning line, once."""
    global _warned_slow
    try:
        import fastzipfile  # noqa: F401  (replaces zipfile's ZipCrypto decrypter on import)
    except ImportError:
        if not _warned_slow:
            _warned_slow = True
            log.warning("archives source: %s: ZipCrypto members are decrypted in pure Python (about 1 MB/s); "
                        "pip install 'facekit[zipcrypto]' for the C decrypter (about 60 MB/s)", part)
    z = zipfile.ZipFile(part)
    if password is not None:
        z.setpassword(password)
    return z, {i.header_offset: i for i in z.infolist()}


def _unsafe(name: str) -> str | None:
    """Why member ``name`` is a hostile path (absolute, a ``..`` component), or None."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path in the archive"
    if ".." in name.replace("\\", "/").split("/"):
        return "'..' in the member's path (would leave the folder it is unpacked in)"
    return None


class ArchivesSource(facekit.Source):
    """Images of ``<inside><identity>/<image>`` members of zip and tar archives, streamed;
    see the module's docstring."""

    name = "archives"
    Params = ArchivesSourceParams

    def __init__(self, params):
        super().__init__(params)
        self.exts = None if params.extensions is None else {"." + e.lower().lstrip(".") for e in params.extensions}
        self.max_bytes = int(params.max_file_mb * (1 << 20))
        self._password = self._read_password()

    def _read_password(self) -> bytes | None:
        p = self.params
        if p.password_env:
            value = os.environ.get(p.password_env)
            if value is None:
                raise facekit.ConfigError(f"archives source: password_env: the variable {p.password_env} is not set")
            return value.encode()
        if p.password_file:
            try:
                raw = Path(p.password_file).read_bytes()
            except OSError as e:
                raise facekit.ConfigError(f"archives source: password_file {p.password_file}: {e.strerror}") from None
            return raw[:-1] if raw.endswith(b"\n") else raw
        return None

    def count(self) -> int | None:
        """Members of the zip parts (their central directories); None when a part is a tar
        (only reading it through could say)."""
        n = 0
        for part in self.params.parts:
            if not zipfile.is_zipfile(part):
                return None
            try:
                with zipfile.ZipFile(part) as z:
                    n += sum(1 for i in z.infolist() if not i.is_dir())
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise facekit.FacekitError(f"archives source: {part}: unreadable zip: {facekit.one_line(e)}") from None
        return n

    # ---- one member -> (identity, name problem) --------------------------------------

    def _place(self, name: str):
        """``(identity, file, reason, detail)`` of member ``name``: reason None for a file
        of an identity folder."""
        inside = self.params.inside
        if not name.startswith(inside):
            return "", "", NOT_IN_IDENTITY_FOLDER, f"outside {inside!r}: images must be in {inside}<identity>/"
        rel = name[len(inside):]
        ident, sep, file = rel.partition("/")
        if not sep:
            return "", "", NOT_IN_IDENTITY_FOLDER, f"files must be in {inside}<identity>/"
        ident = nfc(ident)
        if "/" in file:
            return ident, file, UNSUPPORTED_FILE, "sub-folder inside an identity folder"
        return ident, file, None, None

    def _admit(self, where: str, ident: str, file: str, data: bytes, key: int):
        """The Sample or Reject for a member's bytes (content decides, as folders)."""
        problem = name_problem(ident) or name_problem(file)
        if problem:
            return facekit.Reject(where, BAD_NAME, problem, ident)
        ext = _ext(file)
        if self.exts is not None and ext not in self.exts:
            return facekit.Reject(where, UNSUPPORTED_FILE, f"extension not in {sorted(self.exts)}", ident)
        if not data:
            return facekit.Reject(where, EMPTY_FILE, "member has 0 bytes", ident)
        if self.exts is None and ext not in IMAGE_SUFFIXES and image_format(data[:SNIFF_BYTES]) is None:
            return facekit.Reject(where, NOT_AN_IMAGE, f"no image format recognised in its first bytes ({_FORMATS})", ident)
        return facekit.Sample(key=key, path=where, identity=ident, data=data)

    @staticmethod
    def _read(f, limit: int) -> bytes | None:
        """At most ``limit`` bytes of file object ``f``, read in chunks; None past it."""
        chunks, total = [], 0
        while True:
            chunk = f.read(min(_CHUNK, limit + 1 - total))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                return None

    # ---- the stream ------------------------------------------------------------------

    def __iter__(self):
        """Samples and rejects, part after part; identities contiguous (see the module)."""
        state = {"key": 0, "ident": None, "done": set()}
        junk = {UNSUPPORTED_FILE: 0, NOT_AN_IMAGE: 0}
        n = 0
        for part in self.params.parts:
            if zipfile.is_zipfile(part):
                members = self._zip(part)
            else:
                members = self._tar(part)
            for item in members:
                if item.identity:
                    self._order(part, item, state)
                n += 1
                if type(item) is facekit.Sample:
                    item.key = state["key"]
                    state["key"] += 1
                elif item.reason in junk:
                    junk[item.reason] += 1
                yield item
        if 2 * sum(junk.values()) > n:
            log.warning(
                "archives source: %s: %d of %d members are not images: unsupported_file %d, not_an_image %d "
                "(see rejects.tsv%s)", self.params.parts[0], sum(junk.values()), n, junk[UNSUPPORTED_FILE],
                junk[NOT_AN_IMAGE], "; extensions: admits by name only" if self.exts is not None else "")

    def _order(self, part: str, item, state: dict) -> None:
        """Check that ``item``'s identity does not come back after another one."""
        ident = item.identity
        if ident == state["ident"]:
            return
        if ident in state["done"]:
            raise facekit.FacekitError(
                f"archives source: {item.path}: identity {ident!r} comes back after other identities "
                f"(in this or an earlier part): each identity's members must be together, in one part "
                "or at the end of one part and the start of the next"
            )
        if state["ident"] is not None:
            state["done"].add(state["ident"])
        state["ident"] = ident

    def _zip(self, part: str):
        """The items of zip ``part``, sorted as folders sort (central directory)."""
        import pyzipper  # AES zips (40 ms to import: only when a zip is read)

        try:
            z = pyzipper.AESZipFile(part)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise facekit.FacekitError(f"archives source: {part}: unreadable zip (truncated?): {facekit.one_line(e)}") from None
        plain = None  # the stdlib reader of ZipCrypto members, opened at the first one
        with z:
            if self._password is not None:
                z.setpassword(self._password)
            infos, seen = [], set()
            for info in z.infolist():
                if info.is_dir() and not _unsafe(info.filename):
                    continue
                infos.append(info)
            placed = []
            for info in infos:
                ident, file, reason, detail = self._place(info.filename)
                placed.append((ident, file, reason, detail, info))
            placed.sort(key=lambda t: (natural_key(t[0]), natural_key(t[1])))
            for ident, file, reason, detail, info in placed:
                where = f"{part}:{info.filename}"
                unsafe = _unsafe(info.filename) or self._zip_kind(info)
                if unsafe:
                    yield facekit.Reject(where, UNSAFE_MEMBER, unsafe, "" if _unsafe(info.filename) else ident)
                    continue
                if info.filename in seen:
                    yield facekit.Reject(where, UNSAFE_MEMBER, "duplicate member name in the archive", ident)
                    continue
                seen.add(info.filename)
                if reason:
                    yield facekit.Reject(where, reason, detail, ident)
                    continue
                limit = self.max_bytes
                if info.file_size > limit:
                    yield facekit.Reject(where, TOO_LARGE, f"declared size {info.file_size} bytes > limit {limit}", ident)
                    continue
                bound = int(max(info.compress_size, 1) * self.params.max_ratio)
                if info.file_size > bound:
                    yield facekit.Reject(
                        where, TOO_LARGE, f"compression ratio {info.file_size / max(info.compress_size, 1):.0f} > "
                        f"max_ratio {self.params.max_ratio:g} (a zip bomb?)", ident)
                    continue
                if info.flag_bits & 1 and getattr(info, "wz_aes_version", None) is None:  # ZipCrypto: the fast decrypter
                    if plain is None:
                        plain = _zipcrypto_reader(part, self._password)
                    data = self._zip_read(plain[0], plain[1][info.header_offset], part, min(limit, bound))
                else:
                    data = self._zip_read(z, info, part, min(limit, bound))
                if data is None:
                    yield facekit.Reject(where, TOO_LARGE, f"expands past {min(limit, bound)} bytes while read "
                                         "(declared sizes lie: a zip bomb?)", ident)
                    continue
                yield self._admit(where, ident, file, data, 0)
        if plain is not None:
            plain[0].close()

    @staticmethod
    def _zip_kind(info) -> str | None:
        """Why a zip member is not a regular file (a symbolic link, a device...), or None."""
        mode = info.external_attr >> 16
        if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # made on Unix: a file type is stored
            kind = "symbolic link" if stat.S_ISLNK(mode) else "special file"
            return f"not a regular file: {kind}"
        return None

    def _zip_read(self, z, info, part: str, limit: int) -> bytes | None:
        """A zip member's bytes (bounded), None past ``limit``; a password or data error
        is one line naming the archive."""
        try:
            with z.open(info) as f:
                return self._read(f, limit)
        except RuntimeError as e:  # zipfile / pyzipper: "password required", "Bad password"
            text = str(e).lower()
            if "password" in text or "encrypt" in text:
                how = ("wrong password" if self._password is not None
                       else "encrypted: give the password with password_env or password_file")
                raise facekit.FacekitError(f"archives source: {part}: {how} (member {info.filename})") from None
            raise facekit.FacekitError(f"archives source: {part}:{info.filename}: {facekit.one_line(e)}") from None
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
            hint = " (wrong password?)" if info.flag_bits & 1 and self._password is not None else ""
            raise facekit.FacekitError(
                f"archives source: {part}:{info.filename}: damaged or truncated archive{hint}: {facekit.one_line(e)}"
            ) from None

    def _tar(self, part: str):
        """The items of tar ``part`` (plain or gzip), in archive order, streamed."""
        try:
            t = tarfile.open(part, mode="r|*")  # noqa: SIM115 (closed by the with below: its errors differ)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise facekit.FacekitError(f"archives source: {part}: not a zip or tar archive: {facekit.one_line(e)}") from None
        seen: set[str] = set()
        last = None
        # skipping a member decompresses it: one declaring more than max_ratio x the whole
        # archive's size (a gzip bomb) stops the run before it is read through
        bound = self.params.max_ratio * max(os.path.getsize(part), 1)
        try:
            with t:
                for m in t:
                    name = m.name
                    if m.size > bound:
                        raise facekit.FacekitError(
                            f"archives source: {part}:{name}: declares {m.size} bytes, more than max_ratio "
                            f"{self.params.max_ratio:g} x the archive's {os.path.getsize(part)} bytes (a bomb?): "
                            "refused without decompressing it")
                    if m.isdir() and not _unsafe(name):
                        continue
                    where = f"{part}:{name}"
                    ident, file, reason, detail = self._place(name)
                    if ident and ident != last:  # names are checked for duplicates within an identity (flat memory)
                        seen, last = set(), ident
                    unsafe = _unsafe(name)
                    if unsafe or not m.isreg():
                        kind = ("symbolic link" if m.issym() else "hard link" if m.islnk()
                                else "device" if m.isdev() else "special member")
                        yield facekit.Reject(where, UNSAFE_MEMBER, unsafe or f"not a regular file: {kind}",
                                             "" if unsafe else ident)
                        continue
                    if name in seen:
                        yield facekit.Reject(where, UNSAFE_MEMBER, "duplicate member name in the archive", ident)
                        continue
                    seen.add(name)
                    if reason:
                        yield facekit.Reject(where, reason, detail, ident)
                        continue
                    if m.size > self.max_bytes:
                        yield facekit.Reject(where, TOO_LARGE, f"declared size {m.size} bytes > limit {self.max_bytes}", ident)
                        continue
                    data = self._read(t.extractfile(m), self.max_bytes)
                    if data is not None and len(data) != m.size:
                        raise EOFError(f"member {name}: {len(data)} of {m.size} bytes")
                    if data is None:
                        yield facekit.Reject(where, TOO_LARGE, f"more than {self.max_bytes} bytes", ident)
                        continue
                    yield self._admit(where, ident, file, data, 0)
        except (tarfile.TarError, OSError, EOFError, zlib_error) as e:
            raise facekit.FacekitError(
                f"archives source: {part}: damaged or truncated archive: {facekit.one_line(e)}"
            ) from None


@facekit.hookimpl
def register_stages(register):
    register(ArchivesSource)
