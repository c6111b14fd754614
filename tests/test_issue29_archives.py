"""Issue 29 part 2: the ``archives`` source. Zip and tar(.gz) archives of identity folders,
read in place member by member (never extracted), several parts by glob, identities at
``inside``, an identity split across consecutive parts, encrypted zips (AES) with the
password from an environment variable or a file, hostile members refused.

The archives are made here from the shared identities; each run's RecordIO (``.rec`` /
``.idx``) must equal the folders source's bytes on the same files (SCRFD-500m + arcface).
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import pyzipper
from conftest import link_identities, write_config
from facekit_plugins.folders import natural_key

from facekit.errors import FacekitError
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run

PASSWORD = "s3cret-Pa55"


def _members(ids: Path) -> list[tuple[str, Path]]:
    """``(WebFace260M/<identity>/<file>, file)`` in the folders source's natural order."""
    out = []
    for d in sorted(ids.iterdir(), key=lambda p: natural_key(p.name)):
        for f in sorted(d.iterdir(), key=lambda p: natural_key(p.name)):
            out.append((f"WebFace260M/{d.name}/{f.name}", f))
    return out


def _zip(path: Path, members, password: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if password:
        z = pyzipper.AESZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, encryption=pyzipper.WZ_AES)
        z.setpassword(password.encode())
    else:
        z = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
    with z:
        for name, f in reversed(members):  # written out of order: the central directory is sorted
            z.writestr(name, f.read_bytes())
    return path


def _rec(out: Path) -> dict[str, bytes]:
    """The mxrec sink's .rec and .idx bytes."""
    files = {p.name: p.read_bytes() for p in sorted((out / "rec").iterdir()) if p.suffix in (".rec", ".idx")}
    assert any(n.endswith(".rec") for n in files)
    return files


def _run(tmp: Path, name: str, source: str, det: str = "", sinks: str = "[{plugin: mxrec, path: rec}]") -> Path:
    aligner = "aligner: {plugin: arcface}" if det else ""
    cfg = write_config(tmp, f"""
        output: out_{name}
        source: {source}
        {det}
        {aligner}
        sinks: {sinks}
        workers: 0
        """, f"{name}.yaml")
    run(load_config(cfg), progress=False)
    return tmp / f"out_{name}"


@pytest.fixture(scope="module")
def ref(tmp_path_factory, data_dir, scrfd_model):
    """The folders run's RecordIO on the shared identities: ``(tmp, detector line, members, rec)``."""
    tmp = tmp_path_factory.mktemp("archives")
    link_identities(data_dir, tmp / "ids")
    det = f"detector: {{plugin: retinaface, model: {scrfd_model}}}"
    out = _run(tmp, "folders", "{plugin: folders, root: ids}", det)
    return tmp, det, _members(tmp / "ids"), _rec(out)


def test_zip_parts_equal_folders(ref):
    """issue 29 part 2: two zip parts by glob, an identity split across them, inside:
    WebFace260M/ give the folders run's RecordIO bytes; rows name archive:member."""
    tmp, det, members, rec = ref
    # the cut falls inside an identity of several images: it continues in the second part
    split = next(m for m in members[len(members) // 2:] if sum(x[0].rsplit("/", 1)[0] == m[0].rsplit("/", 1)[0]
                                                                for x in members) > 1)
    cut = members.index(split) + 1
    assert members[cut][0].rsplit("/", 1)[0] == split[0].rsplit("/", 1)[0]
    _zip(tmp / "parts/0/0_0.zip", members[:cut])
    _zip(tmp / "parts/0/0_1.zip", members[cut:])
    out = _run(tmp, "zip", '{plugin: archives, parts: "parts/*/*.zip", inside: WebFace260M/}', det)
    assert _rec(out) == rec
    rows = pq.read_table(out / "results.parquet").to_pylist()
    assert len(rows) >= len(members)
    assert all(":WebFace260M/" in r["path"] and ".zip:" in r["path"] for r in rows)


def test_tar_gz_and_tar_equal_folders(ref):
    """issue 29 part 2: a tar.gz and a plain tar (streamed, archive order) give the folders
    run's RecordIO bytes."""
    tmp, det, members, rec = ref
    for name, mode in (("all.tar.gz", "w:gz"), ("all.tar", "w")):
        with tarfile.open(tmp / name, mode) as t:
            for member, f in members:
                t.add(f.resolve(), arcname=member)
        out = _run(tmp, name.replace(".", "_"), f"{{plugin: archives, parts: {name}, inside: WebFace260M}}", det)
        assert _rec(out) == rec, name


def test_aes_zip_equal_folders_and_passwords(ref, monkeypatch):
    """issue 29 part 2: an AES-encrypted zip with password_env (and password_file) gives the
    folders run's bytes; a missing or wrong password is one line naming the archive, the
    password never shown."""
    tmp, det, members, rec = ref
    z = _zip(tmp / "aes.zip", members, PASSWORD)
    monkeypatch.setenv("FK_ZIP_PW", PASSWORD)
    out = _run(tmp, "aes", "{plugin: archives, parts: aes.zip, inside: WebFace260M/, password_env: FK_ZIP_PW}", det)
    assert _rec(out) == rec
    (tmp / "pw.txt").write_text(PASSWORD + "\n")
    few = "[{plugin: folders, path: crops}]"
    _run(tmp, "aes_file", "{plugin: archives, parts: aes.zip, inside: WebFace260M/, password_file: pw.txt}", sinks=few)
    for name, extra, env in (("nopw", "", None), ("badpw", ", password_env: FK_ZIP_PW", "wrong")):
        if env:
            monkeypatch.setenv("FK_ZIP_PW", env)
        with pytest.raises(FacekitError) as e:
            _run(tmp, name, f"{{plugin: archives, parts: aes.zip, inside: WebFace260M/{extra}}}", sinks=few)
        msg = str(e.value)
        assert "\n" not in msg and str(z) in msg and "password" in msg and PASSWORD not in msg, msg


def test_identity_back_in_later_part_is_one_line(ref):
    """issue 29 part 2: an identity split across parts that are not consecutive is one line
    naming the archive and member."""
    tmp, _, members, _ = ref
    ids = sorted({m[0].split("/")[1] for m in members}, key=natural_key)
    a = [m for m in members if m[0].split("/")[1] == ids[0]]
    b = [m for m in members if m[0].split("/")[1] == ids[1]]
    assert len(a) >= 1 and b
    _zip(tmp / "split/p1.zip", a[:1])
    _zip(tmp / "split/p2.zip", b)
    _zip(tmp / "split/p3.zip", a[:1] if len(a) == 1 else a[1:])
    with pytest.raises(FacekitError) as e:
        _run(tmp, "split", '{plugin: archives, parts: "split/*.zip", inside: WebFace260M/}',
             sinks="[{plugin: folders, path: crops}]")
    msg = str(e.value)
    assert "\n" not in msg and "p3.zip:WebFace260M/" in msg and "comes back" in msg, msg


def _jpeg(data_dir: Path) -> bytes:
    return next((data_dir / "images" / "identities").glob("*/*.jpg")).read_bytes()


def _rows(out: Path) -> dict[str, str]:
    return {r["path"].rsplit(":", 1)[1]: r["reason"] for r in pq.read_table(out / "results.parquet").to_pylist()}


def _nothing_outside(tmp: Path) -> None:
    """No member was written where a hostile name points (beside the test folder, at /)."""
    for d in (tmp, tmp.parent, tmp.parent.parent, Path("/"), Path.cwd()):
        for name in ("x.jpg", "y.jpg", "abs.jpg"):
            assert not (d / name).exists(), d / name


def test_hostile_zip(tmp_path, data_dir):
    """issue 29 part 2: zip slip, absolute path, duplicate names, a bomb (ratio and size):
    rejects naming the member; nothing is written outside the output folder."""
    jpg = _jpeg(data_dir)
    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as w:
        w.writestr("a/1.jpg", jpg)
        w.writestr("a/2.jpg", jpg)
        w.writestr("../x.jpg", jpg)
        w.writestr("/abs.jpg", jpg)
        w.writestr("a/../../y.jpg", jpg)
        w.writestr("a/bomb.jpg", jpg[:4] + bytes(8 << 20))  # 8 MiB of zeros: ratio ~1000
        with pytest.warns(UserWarning):
            w.writestr("a/2.jpg", jpg)
        info = zipfile.ZipInfo("a/link.jpg")
        info.create_system, info.external_attr = 3, (0o120777 << 16)
        w.writestr(info, "/etc/passwd")
    out = _run(tmp_path, "evil", "{plugin: archives, parts: evil.zip}", sinks="[{plugin: folders, path: crops}]")
    rows = _rows(out)
    assert rows["a/1.jpg"] is None
    assert rows["../x.jpg"] == rows["/abs.jpg"] == rows["a/../../y.jpg"] == "unsafe_member"
    assert rows["a/link.jpg"] == "unsafe_member"
    assert rows["a/bomb.jpg"] == "too_large"
    dup = [r for r in pq.read_table(out / "results.parquet").to_pylist() if r["path"].endswith(":a/2.jpg")]
    assert sorted(r["reason"] or "" for r in dup) == ["", "unsafe_member"]
    _nothing_outside(tmp_path)
    crops = sorted(p.name for p in (out / "crops").rglob("*") if p.is_file() and p.suffix == ".jpg")
    assert crops == ["1_0.jpg", "2_0.jpg"]
    # the size limit without a ratio: max_file_mb
    out = _run(tmp_path, "evil_mb", "{plugin: archives, parts: evil.zip, max_file_mb: 1, max_ratio: 1e9}",
               sinks="[{plugin: folders, path: crops}]")
    assert _rows(out)["a/bomb.jpg"] == "too_large"


def test_hostile_tar(tmp_path, data_dir):
    """issue 29 part 2: a tar with a symlink, a hard link, a device, ``../`` and absolute
    members, a duplicate name and a member over max_file_mb: rejects; nothing written
    outside the output folder."""
    jpg = _jpeg(data_dir)
    t = tmp_path / "evil.tar"
    with tarfile.open(t, "w", format=tarfile.GNU_FORMAT) as w:
        def add(name, data=jpg, **kw):
            info = tarfile.TarInfo(name)
            for k, v in kw.items():
                setattr(info, k, v)
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            w.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
        add("a/1.jpg")
        add("a/2.jpg")
        add("a/sym.jpg", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add("a/hard.jpg", type=tarfile.LNKTYPE, linkname="a/1.jpg")
        add("a/dev.jpg", type=tarfile.CHRTYPE, devmajor=1, devminor=5)
        add("a/../../x.jpg")
        add("/abs.jpg")
        add("a/1.jpg")
        add("a/big.jpg", jpg + bytes(3 << 20))
    out = _run(tmp_path, "evil", "{plugin: archives, parts: evil.tar, max_file_mb: 1}",
               sinks="[{plugin: folders, path: crops}]")
    rows = pq.read_table(out / "results.parquet").to_pylist()
    got = [(r["path"].rsplit(":", 1)[1], r["reason"]) for r in rows]
    assert got == [("a/1.jpg", None), ("a/2.jpg", None), ("a/sym.jpg", "unsafe_member"), ("a/hard.jpg", "unsafe_member"),
                   ("a/dev.jpg", "unsafe_member"), ("a/../../x.jpg", "unsafe_member"), ("/abs.jpg", "unsafe_member"),
                   ("a/1.jpg", "unsafe_member"), ("a/big.jpg", "too_large")], got
    _nothing_outside(tmp_path)
    assert sorted(p.name for p in (out / "crops").rglob("*.jpg")) == ["1_0.jpg", "2_0.jpg"]


def test_truncated_archives_one_line(tmp_path, data_dir):
    """issue 29 part 2: a truncated zip, tar.gz and tar: one line naming the archive."""
    jpg = _jpeg(data_dir)
    with zipfile.ZipFile(tmp_path / "whole.zip", "w") as w:
        for i in range(4):
            w.writestr(f"a/{i}.jpg", jpg)
    for n, mode in (("whole.tar.gz", "w:gz"), ("whole.tar", "w")):
        with tarfile.open(tmp_path / n, mode) as w:
            for i in range(4):
                info = tarfile.TarInfo(f"a/{i}.jpg")
                info.size = len(jpg)
                w.addfile(info, io.BytesIO(jpg))
    for n in ("whole.zip", "whole.tar.gz", "whole.tar"):
        data = (tmp_path / n).read_bytes()
        cut = tmp_path / ("cut_" + n)
        cut.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(FacekitError) as e:
            _run(tmp_path, "cut" + n.replace(".", "_"), f"{{plugin: archives, parts: {cut.name}}}",
                 sinks="[{plugin: folders, path: crops}]")
        msg = str(e.value)
        assert "\n" not in msg and str(cut) in msg, msg


def _zipcrypto(path: Path, members, password: bytes) -> Path:
    """A stored (uncompressed) zip whose members are ZipCrypto-encrypted (PKWARE APPNOTE
    6.1; what ``zip -P`` and WebFace's parts use), written here in pure Python: neither
    zipfile nor pyzipper writes ZipCrypto."""
    import struct
    import zlib

    def crc(k: int, b: int) -> int:
        return zlib.crc32(bytes([b]), k ^ 0xFFFFFFFF) ^ 0xFFFFFFFF

    def encrypt(data: bytes) -> bytes:
        k = [0x12345678, 0x23456789, 0x34567890]

        def update(c: int) -> None:
            k[0] = crc(k[0], c)
            k[1] = ((k[1] + (k[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
            k[2] = crc(k[2], k[1] >> 24)

        for c in password:
            update(c)
        out = bytearray()
        for c in data:
            t = (k[2] | 2) & 0xFFFF
            out.append(c ^ (((t * (t ^ 1)) >> 8) & 0xFF))
            update(c)
        return bytes(out)

    local, central = bytearray(), bytearray()
    for name, f in members:
        data, raw = f.read_bytes(), name.encode()
        c = zlib.crc32(data)
        body = encrypt(bytes(range(11)) + bytes([c >> 24]) + data)
        offset = len(local)
        local += struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 1, 0, 0, 0x21, c, len(body), len(data), len(raw), 0)
        local += raw + body
        central += struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 0, 20, 0, 1, 0, 0, 0x21, c, len(body), len(data),
                               len(raw), 0, 0, 0, 0, 0, offset) + raw
    n = len(members)
    path.write_bytes(bytes(local) + bytes(central)
                     + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, n, n, len(central), len(local), 0))
    return path


def test_zipcrypto_zip_same_samples(tmp_path, data_dir, monkeypatch):
    """issue 29 part 2: a ZipCrypto zip (password_file) yields the folders source's samples
    (same bytes, identities, order); a wrong password is one line naming the archive."""
    from facekit_plugins.archives import ArchivesSource, ArchivesSourceParams
    from facekit_plugins.folders import FoldersSource, FoldersSourceParams

    ids = link_identities(data_dir, tmp_path / "ids", ["Amy_Adams", "Alex_Lacamoire", "Anthony_Hopkins"])
    z = _zipcrypto(tmp_path / "zc.zip", _members(ids), PASSWORD.encode())
    (tmp_path / "pw").write_text(PASSWORD)

    def source(pw_file: Path):
        p = ArchivesSourceParams.model_validate(
            {"parts": "zc.zip", "inside": "WebFace260M", "password_file": pw_file.name},
            context={"config_dir": tmp_path})
        return list(ArchivesSource(p))

    got = source(tmp_path / "pw")
    want = list(FoldersSource(FoldersSourceParams.model_validate({"root": ids})))
    assert [(s.key, s.identity, s.data) for s in got] == [(s.key, s.identity, Path(s.path).read_bytes()) for s in want]
    assert got[0].path == f"{z}:WebFace260M/Alex_Lacamoire/Alex_Lacamoire_0001.jpg"
    (tmp_path / "bad").write_text("not-it")
    with pytest.raises(FacekitError) as e:
        source(tmp_path / "bad")
    msg = str(e.value)
    assert "\n" not in msg and str(z) in msg and "password" in msg and "not-it" not in msg, msg


def test_shard_digests_stable_and_follow_member_bytes(tmp_path, data_dir):
    """issue 29 part 2: resume: the shards cut from an archive have the same digests on a
    second read (a rewritten archive with the same members too: the digest hashes the
    member's bytes, not the archive's file stamp), and a changed member changes its
    shard's digest only."""
    from facekit_plugins.archives import ArchivesSource, ArchivesSourceParams

    from facekit.pipeline.shards import cut_shards

    members = _members(link_identities(data_dir, tmp_path / "ids"))

    def digests():
        p = ArchivesSourceParams.model_validate({"parts": str(tmp_path / "a.zip"), "inside": "WebFace260M"})
        return [s.digest() for s in cut_shards(ArchivesSource(p), 20)]

    _zip(tmp_path / "a.zip", members)
    first = digests()
    assert len(first) >= 3 and first == digests()
    _zip(tmp_path / "a.zip", members)  # rewritten: new file stamp, same members
    assert digests() == first
    (tmp_path / "changed.jpg").write_bytes(members[-1][1].read_bytes() + b"\0")
    _zip(tmp_path / "a.zip", members[:-1] + [(members[-1][0], tmp_path / "changed.jpg")])
    again = digests()
    assert again[:-1] == first[:-1] and again[-1] != first[-1]


def test_tar_gz_bomb_is_one_line(tmp_path, data_dir):
    """issue 29 part 2: a tar.gz member of 32 MiB of zeros (about 32 KiB compressed) is
    refused in one line naming the archive and member, before it is decompressed."""
    jpg = _jpeg(data_dir)
    with tarfile.open(tmp_path / "bomb.tar.gz", "w:gz") as w:
        for name, data in (("a/1.jpg", jpg), ("a/bomb.jpg", jpg[:4] + bytes(32 << 20))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            w.addfile(info, io.BytesIO(data))
    assert (tmp_path / "bomb.tar.gz").stat().st_size < (1 << 20)
    with pytest.raises(FacekitError) as e:
        _run(tmp_path, "bomb", "{plugin: archives, parts: bomb.tar.gz, max_ratio: 20}",
             sinks="[{plugin: folders, path: crops}]")
    msg = str(e.value)
    assert "\n" not in msg and "bomb.tar.gz:a/bomb.jpg" in msg and "max_ratio" in msg, msg
