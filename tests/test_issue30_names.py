"""Names facekit reads and writes (issue 30 items 2, 9, 13, 15): file and folder names
past the file system's NAME_MAX are shortened (never a failed run), identity folders that
differ only in Unicode normalisation are one identity, ``mxrec`` -> ``folders`` names
folders and files as the ``.lst`` beside the rec does, printed paths are normalised."""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import config_error, facekit_cli, write_config
from facekit.errors import FacekitError
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run

KZ = "aligned_identities/kz_celebs_112"


def _link(data_dir, root: Path, identities: dict[str, list[str]]) -> Path:
    """``root/<name>/<file>``: symbolic links to real 112x112 crops; ``identities`` maps
    each folder name to its file names, the crops taken in turn from the shared set."""
    src = sorted((data_dir / KZ).glob("*/*.png"))
    i = 0
    for name, files in identities.items():
        (root / name).mkdir(parents=True)
        for f in files:
            os.symlink(src[i], root / name / f)
            i += 1
    return root


def _results(out: Path) -> list[dict]:
    return pq.read_table(out / "results.parquet").to_pylist()


def _written(folder: Path) -> list[str]:
    """``<folder>/<file>`` of every image the folders sink wrote, sorted."""
    return sorted(f"{p.parent.name}/{p.name}" for p in folder.glob("*/*") if p.is_file())


# ---------------------------------------------------------------- item 2: NAME_MAX


def _nbytes(name: str) -> int:
    return len(os.fsencode(name))


def test_fit_name_keeps_a_prefix_and_never_cuts_a_character():
    """issue 30 item 2: a name past NAME_MAX becomes a readable prefix + ``~`` + a hash of
    the whole stem + the tail, within the limit in bytes, cut between characters (2-, 3-
    and 4-byte UTF-8), the same every time, different for different stems."""
    from facekit_plugins.folders import fit_name

    assert fit_name("face", "_0.jpg") == "face_0.jpg"  # short names unchanged
    for ch in ("x", "é", "€", "😀"):
        for n in range(200, 260):
            stem = ch * n
            for tail in ("_0.jpg", "_12_v3.png", ""):
                name = fit_name(stem, tail)
                assert _nbytes(name) <= 255 and name.endswith(tail)
                if _nbytes(stem + tail) <= 255:
                    assert name == stem + tail
                    continue
                head, _, rest = name.rpartition("~")
                assert stem.startswith(head) and _nbytes(head) >= 255 - 13 - _nbytes(tail) - 3, (ch, n, tail)
                assert len(rest) == 12 + len(tail)
                assert fit_name(stem, tail) == name
                assert fit_name(stem + "y", tail) != name  # another stem, another hash
    assert _nbytes(fit_name("é" * 300, "_0.jpg", limit=143)) <= 143  # eCryptfs' NAME_MAX


def test_255_byte_names_do_not_fail_the_run(tmp_path, data_dir):
    """issue 30 item 2: a legal 255-byte file name ended the run (rc 1, nothing published:
    ``writing ..._0.jpg: File name too long``) because the sink appends ``_0``. Now the
    name is shortened; the results' ``outputs`` and ``label.txt`` name the file written.
    Identity folders of 255 bytes (ASCII and 2-byte UTF-8) are read and written too."""
    long_ascii = "a" * 251 + ".png"  # 255 bytes
    long_utf8 = "é" * 125 + ".png"  # 254 bytes, 2-byte characters
    twin1, twin2 = "t" * 240 + "_one.png", "t" * 240 + "_two.png"  # same first 240 bytes
    ident_ascii, ident_utf8 = "I" * 255, "Ж" * 127 + "x"  # 255 bytes each
    root = _link(data_dir, tmp_path / "faces", {
        ident_ascii: [long_ascii, long_utf8, "short.png"],
        ident_utf8: [twin1, twin2],
    })
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: faces, min_images: 1}
        sinks:
          - {plugin: folders, path: f}
          - {plugin: folders, path: g, prefix: "id_", label_digits: 12}
        """)
    r = facekit_cli("run", "-q", cfg, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    for sink in ("f", "g"):
        files = _written(out / sink)
        assert len(files) == 5 and len(set(files)) == 5
        for f in files:
            name = f.split("/")[1]
            assert _nbytes(name) <= 255 and name.endswith("_0.png")
            os.fsencode(name).decode("utf-8")  # whole characters only
        lst = [ln.split("\t")[1] for ln in (out / sink / "label.txt").read_text(encoding="utf-8").splitlines()]
        assert sorted(lst) == files
    rows = _results(out)
    assert len(rows) == 5
    for row in rows:  # outputs: one place per sink, the file written there
        src = Path(row["path"])
        for sink, rel in zip(("f", "g"), row["outputs"]):
            written = out / sink / rel
            assert written.is_file() and written.read_bytes() == src.read_bytes(), rel
            assert written.name.startswith(src.stem[:40])
    assert (root / ident_ascii / long_ascii).exists()


def test_folders_sink_prefix_too_long_is_refused(tmp_path):
    """issue 30 item 2 (the prefix option): a prefix that leaves no room for the label in
    a 255-byte folder name is refused by validate, naming the line; before, the run failed
    at its first folder."""
    (tmp_path / "faces" / "a").mkdir(parents=True)
    msg = config_error(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        sinks:
          - {plugin: folders, path: f, prefix: "%s"}
        """ % ("p" * 250))
    assert "pipeline.yaml:5: sinks[0] (folders):" in msg and "prefix is 250 bytes" in msg, msg


# ---------------------------------------------------------------- item 9: NFC / NFD


def test_identity_names_equal_under_nfc_are_one_identity(tmp_path, data_dir, caplog):
    """issue 30 item 9: ``José`` as NFC and as NFD were two identities. Now one, under the
    NFC name, in one shard (shard_size 1); the NFC-named folder's images first, then the
    NFD folder's; a warning names the merged folders; results and summary show the NFC
    name."""
    nfc, nfd = unicodedata.normalize("NFC", "José"), unicodedata.normalize("NFD", "José")
    assert nfc != nfd
    _link(data_dir, tmp_path / "faces", {
        nfd: ["d1.png", "d2.png"],
        "Josf": ["f1.png"],
        nfc: ["c1.png", "c2.png"],
        "Jose": ["e1.png"],
    })
    cfg = write_config(tmp_path, """
        output: out
        shard_size: 1
        source: {plugin: folders, root: faces, min_images: 1}
        sinks: [{plugin: folders, path: f}]
        """)
    caplog.set_level(logging.WARNING)
    s = run(load_config(cfg), progress=False)
    assert s.identities_written == 3 and s.faces_kept == 6
    rows = _results(tmp_path / "out")
    assert [(r["identity"], Path(r["path"]).name, r["label"]) for r in rows] == [
        ("Jose", "e1.png", 0), ("Josf", "f1.png", 1),
        (nfc, "c1.png", 2), (nfc, "c2.png", 2), (nfc, "d1.png", 2), (nfc, "d2.png", 2),
    ]
    assert Path(rows[2]["path"]).parent.name == nfc and Path(rows[4]["path"]).parent.name == nfd
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["identities"][nfc]["kept"] == 4 and nfd not in summary["identities"]
    warned = [r.getMessage() for r in caplog.records if "Unicode normalisation" in r.getMessage()]
    assert len(warned) == 1 and ascii(nfd) in warned[0] and repr(nfc) in warned[0], warned
    assert _written(tmp_path / "out" / "f")[2:] == ["2/c1_0.png", "2/c2_0.png", "2/d1_0.png", "2/d2_0.png"]


# ---------------------------------------------------------------- item 13: names from the .lst


IDENTS = {
    "Zhanar": ["z_0001.png", "z_0002.png", "z_0010.png"],
    "Asel": ["asel_1.png", "asel_2.png"],
    "Ærin_Ó": ["a.png", "b.png", "c.png"],
    "Denis_Ten": ["Denis_Ten_0001.png"],
}


def _pack(tmp_path, data_dir, sink: str, name="pack.yaml", out="packed") -> Path:
    _link(data_dir, tmp_path / "faces", IDENTS)
    cfg = write_config(tmp_path, f"""
        output: {out}
        source: {{plugin: folders, root: faces, min_images: 1}}
        sinks: [{sink}]
        """, name)
    run(load_config(cfg), progress=False)
    return tmp_path / out / "rec"


def _unpack(tmp_path, source: str, out: str) -> Path:
    cfg = write_config(tmp_path, f"""
        output: {out}
        source: {source}
        sinks: [{{plugin: folders, path: f}}]
        """, f"{out}.yaml")
    run(load_config(cfg), progress=False)
    return tmp_path / out / "f"


def _expected() -> list[str]:
    return sorted(f"{i}/{f}" for i, files in IDENTS.items() for f in files)


def test_rec_with_its_lst_converts_back_to_named_folders(tmp_path, data_dir):
    """issue 30 item 13: ``mxrec`` -> ``folders`` numbered folders and files although the
    ``train.lst`` facekit wrote beside the rec names them. Now the folders and files are
    named as the ``.lst`` says, the bytes untouched; and folders -> rec again gives the
    same ``train.rec``/``train.idx`` byte for byte (the names sort like the labels)."""
    rec = _pack(tmp_path, data_dir, "{plugin: mxrec, path: rec}")
    back = _unpack(tmp_path, "{plugin: mxrec, path: packed/rec}", "back")
    assert _written(back) == _expected()
    faces = tmp_path / "faces"
    for rel in _expected():
        assert (back / rel).read_bytes() == (faces / rel).read_bytes()
    lst = [ln.split("\t") for ln in (back / "label.txt").read_text(encoding="utf-8").splitlines()]
    assert sorted(p for _, p, _ in lst) == _expected()
    cfg = write_config(tmp_path, """
        output: again
        source: {plugin: folders, root: back/f, min_images: 1}
        sinks: [{plugin: mxrec, path: rec}]
        """, "again.yaml")
    run(load_config(cfg), progress=False)
    for f in ("train.rec", "train.idx"):
        assert (tmp_path / "again" / "rec" / f).read_bytes() == (rec / f).read_bytes(), f


def test_shuffled_plain_shards_with_lst_come_back_named(tmp_path, data_dir):
    """issue 30 item 13: a shuffled plain shard set (``<prefix>.lst`` beside the shards,
    records found by their ids) read with ``order: label`` gives the same named tree."""
    _pack(tmp_path, data_dir, "{plugin: mxrec, path: rec, layout: plain, shards: 2, shuffle: true, seed: 5}")
    back = _unpack(tmp_path, "{plugin: mxrec, path: packed/rec, order: label}", "back")
    assert _written(back) == _expected()


def test_im2rec_lst_names_the_folders(tmp_path, data_dir):
    """issue 30 item 13: an mxnet im2rec ``.lst`` (``idx<TAB>label<TAB>path``, lines in any
    order) beside a plain rec names its images by the record ids in the first column."""
    rec = _pack(tmp_path, data_dir, "{plugin: mxrec, path: rec, layout: plain}")
    lines = (rec / "train.lst").read_text(encoding="utf-8").splitlines()
    im2rec = [f"{i}\t{ln.split(chr(9))[2]}.000000\tdata/{ln.split(chr(9))[1].split('/')[-2]}/"
              f"{Path(ln.split(chr(9))[1]).stem}.jpg" for i, ln in enumerate(lines)]
    (rec / "train.lst").write_text("\n".join(reversed(im2rec)) + "\n", encoding="utf-8")
    back = _unpack(tmp_path, "{plugin: mxrec, path: packed/rec}", "back")
    assert _written(back) == _expected()  # the bytes are PNG: the extension follows them


def test_lst_that_does_not_match_falls_back_with_one_warning(tmp_path, data_dir, caplog):
    """issue 30 item 13: a ``.lst`` with another line count (or one that puts a label in
    two folders) is not used: one warning line names it and why; folders and files are
    numbered by label and record key as before."""
    rec = _pack(tmp_path, data_dir, "{plugin: mxrec, path: rec}")
    lines = (rec / "train.lst").read_text(encoding="utf-8").splitlines(True)
    (rec / "train.lst").write_text("".join(lines[:-1]), encoding="utf-8")
    caplog.set_level(logging.WARNING)
    back = _unpack(tmp_path, "{plugin: mxrec, path: packed/rec}", "back")
    assert _written(back)[0] == "0/00000001.png" and len(_written(back)) == 9
    warned = [r.getMessage() for r in caplog.records if "train.lst" in r.getMessage()]
    assert len(warned) == 1 and "8 lines for 9 image records" in warned[0], warned


def test_lst_whose_labels_disagree_with_the_records(tmp_path, data_dir, caplog, monkeypatch):
    """issue 30 item 13: a ``.lst`` that fits in shape but gives two identities each
    other's labels. Its lines match the records neither by header id nor in file order
    (seen on the first records, before any image is named): ``names: auto`` warns once,
    saying which line and record, and numbers the folders; ``names: lst`` is one line
    saying the same, nothing published; ``names: keys`` numbers the folders without
    reading it. A mismatch past the records looked at first (here: the first 2) stops the
    run with one line naming the ``.lst`` line and the record."""
    rec = _pack(tmp_path, data_dir, "{plugin: mxrec, path: rec}")
    fields = [ln.split("\t") for ln in (rec / "train.lst").read_text(encoding="utf-8").splitlines()]

    def swap_labels(a: str, b: str) -> None:
        swap = {a: b, b: a}
        (rec / "train.lst").write_text(
            "".join("\t".join(f[:2] + [swap.get(f[2], f[2])] + f[3:]) + "\n" for f in fields), encoding="utf-8"
        )

    swap_labels("0", "1")
    caplog.set_level(logging.WARNING)
    auto = _unpack(tmp_path, "{plugin: mxrec, path: packed/rec}", "auto")
    assert len(_written(auto)) == 9 and _written(auto)[0] == "0/00000001.png"
    warned = [r.getMessage() for r in caplog.records if "train.lst" in r.getMessage()]
    assert len(warned) == 1 and "line 1 has label 1 where image record 1 in file order" in warned[0], warned
    with pytest.raises(FacekitError) as e:
        _unpack(tmp_path, "{plugin: mxrec, path: packed/rec, names: lst}", "back")
    msg = str(e.value)
    assert "\n" not in msg and "train.lst does not name the images" in msg, msg
    assert "line 1 has label 1 where image record 1" in msg and "names: keys" in msg, msg
    assert not (tmp_path / "back" / "f").exists()
    caplog.clear()
    keys = _unpack(tmp_path, "{plugin: mxrec, path: packed/rec, names: keys}", "keys")
    assert _written(keys) == _written(auto) and not caplog.records
    # labels 2 and 3 swapped: the first two records match; names: lst reads on and stops
    from facekit_plugins import mxrec

    monkeypatch.setattr(mxrec, "PROBE", 2)
    swap_labels("2", "3")
    with pytest.raises(FacekitError) as e:
        _unpack(tmp_path, "{plugin: mxrec, path: packed/rec, names: lst}", "late")
    msg = str(e.value)
    assert "\n" not in msg and "train.lst:4: label 3, but the record with id 4 has label 2" in msg, msg
    assert "names: keys" in msg and not (tmp_path / "late" / "f").exists()


def test_names_lst_without_a_usable_lst_is_an_error(tmp_path, data_dir):
    """issue 30 item 13: ``names: lst`` asks for the ``.lst`` names: no ``.lst``, or one
    that does not fit the rec, is a one-line error, not a silent numbering."""
    rec = _pack(tmp_path, data_dir, "{plugin: mxrec, path: rec}")
    lines = (rec / "train.lst").read_text(encoding="utf-8").splitlines(True)
    (rec / "train.lst").write_text("".join(lines[:-1]), encoding="utf-8")
    with pytest.raises(FacekitError, match="does not name the images .*8 lines for 9 image records"):
        _unpack(tmp_path, "{plugin: mxrec, path: packed/rec, names: lst}", "a")
    (rec / "train.lst").unlink()
    with pytest.raises(FacekitError, match="names: lst, but there is no .*train.lst"):
        _unpack(tmp_path, "{plugin: mxrec, path: packed/rec, names: lst}", "b")


def test_long_lst_names_are_shortened_with_the_prefix(tmp_path, data_dir):
    """issue 30 items 2 and 13: a 255-byte identity folder named by the ``.lst`` plus the
    sink's ``prefix`` is past NAME_MAX: shortened the same way, one folder per label."""
    long_ident = "Ж" * 127 + "x"
    _link(data_dir, tmp_path / "faces", {long_ident: ["a.png", "b.png"], "short": ["c.png"]})
    cfg = write_config(tmp_path, """
        output: packed
        source: {plugin: folders, root: faces, min_images: 1}
        sinks: [{plugin: mxrec, path: rec}]
        """, "pack.yaml")
    run(load_config(cfg), progress=False)
    cfg = write_config(tmp_path, """
        output: back
        source: {plugin: mxrec, path: packed/rec}
        sinks: [{plugin: folders, path: f, prefix: "id_"}]
        """, "back.yaml")
    run(load_config(cfg), progress=False)
    folders = sorted(p.name for p in (tmp_path / "back" / "f").iterdir() if p.is_dir())
    assert len(folders) == 2 and "id_short" in folders
    long = next(f for f in folders if f != "id_short")
    assert long.startswith("id_ЖЖЖ") and _nbytes(long) <= 255 and "~" in long
    assert sorted(p.name for p in (tmp_path / "back" / "f" / long).iterdir()) == ["a.png", "b.png"]


# ---------------------------------------------------------------- item 15: printed paths


def test_printed_paths_are_normalised(tmp_path, data_dir):
    """issue 30 item 15: ``validate`` printed ``configs/../quickstart-out``; the output,
    the sinks' paths and the files ``run`` names are printed normalised."""
    _link(data_dir, tmp_path / "faces", {"a": ["1.png"]})
    (tmp_path / "configs").mkdir()
    cfg = write_config(tmp_path / "configs", """
        output: ../out
        source: {plugin: folders, root: ./../faces/., min_images: 1}
        sinks: [{plugin: folders, path: ./f/../faces}]
        """)
    r = facekit_cli("validate", cfg, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"  output    {tmp_path / 'out'}\n" in r.stdout, r.stdout
    spec = load_config(cfg)
    assert spec.output == tmp_path / "out" and spec.source.params.root == tmp_path / "faces"
    assert spec.sinks[0].params.path == tmp_path / "out" / "faces"
    r = facekit_cli("run", "-q", cfg, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "/../" not in r.stdout and "/./" not in r.stdout, r.stdout
    assert f'"path": "{tmp_path / "out" / "faces"}"' in r.stdout
    assert f"rejects file       {tmp_path / 'out' / 'rejects.tsv'}" in r.stdout


def test_normalising_keeps_a_dotdot_after_a_symlink(tmp_path):
    """issue 30 item 15: ``link/../x`` where ``link`` is a symbolic link names the link
    target's sibling, not ``./x``: that spelling is kept (normalising must not change
    which folder is read or written)."""
    from facekit.params import normalized

    (tmp_path / "a" / "b").mkdir(parents=True)
    os.symlink(tmp_path / "a" / "b", tmp_path / "link")
    assert normalized(tmp_path / "link" / ".." / "x") == tmp_path / "link" / ".." / "x"
    assert normalized(tmp_path / "a" / "b" / ".." / "x") == tmp_path / "a" / "x"
    assert normalized(tmp_path / "." / "a") == tmp_path / "a"


# ------------------------------------- item 13: records whose ids the .lst does not number


def _rewrite_ids(rec: Path, new_id) -> None:
    """Rewrite ``rec/train.rec`` (and its idx) with image record ``key`` given header id
    ``new_id(key, id)``; header and identity records are copied as they are."""
    from facekit.formats.idx import read_idx
    from facekit.formats.recordio import IndexedRecordIOWriter, RecordIOReader, pack, unpack

    rows = read_idx(rec / "train.idx")
    with RecordIOReader(rec / "train.rec") as r:
        payloads = [(k, r.read_at(o, k)[0]) for k, o in rows]
    for f in ("train.rec", "train.idx"):
        (rec / f).unlink()
    with IndexedRecordIOWriter(rec / "train.idx", rec / "train.rec") as w:
        for k, payload in payloads:
            h, img = unpack(payload)
            w.write_idx(k, pack(h._replace(id=new_id(k, h.id)), img) if img else payload)


@pytest.mark.parametrize("layout", ["insightface", "plain"])
@pytest.mark.parametrize("ids", ["zero", "shifted"])
def test_lst_names_records_whose_ids_it_does_not_number(tmp_path, data_dir, caplog, layout, ids):
    """issue 30 item 13 (review): a rec whose image header ids are all 0 (``verify``: ids
    not recorded) or numbered another way (ids + 1000, a merged file) with its ``train.lst``
    beside it stopped ``names: auto`` (rc 1: ``train.lst:1: label 0, but the record with id
    0 has label 1``). Now its lines name the records in file order: named folders, the
    bytes untouched, no warning."""
    from facekit.formats.rec_verify import verify

    rec = _pack(tmp_path, data_dir, f"{{plugin: mxrec, path: rec, layout: {layout}}}")
    _rewrite_ids(rec, (lambda k, i: 0) if ids == "zero" else (lambda k, i: i + 1000))
    assert verify(rec)["ok"]
    caplog.set_level(logging.WARNING)
    back = _unpack(tmp_path, "{plugin: mxrec, path: packed/rec}", "back")
    assert _written(back) == _expected()
    for rel in _expected():
        assert (back / rel).read_bytes() == (tmp_path / "faces" / rel).read_bytes()
    assert not [r for r in caplog.records if "train.lst" in r.getMessage()]


def test_lst_matching_records_neither_by_id_nor_in_order(tmp_path, data_dir, caplog):
    """issue 30 item 13 (review): ids all 0 and the ``.lst``'s lines in another order
    than the records (its first line moved to the end). ``names: auto`` decides before
    naming any image: one warning saying why, folders and files numbered (rc 0);
    ``names: lst`` is one line saying why, nothing published."""
    rec = _pack(tmp_path, data_dir, "{plugin: mxrec, path: rec}")
    _rewrite_ids(rec, lambda k, i: 0)
    lines = (rec / "train.lst").read_text(encoding="utf-8").splitlines(True)
    (rec / "train.lst").write_text("".join(lines[1:] + lines[:1]), encoding="utf-8")
    caplog.set_level(logging.WARNING)
    auto = _unpack(tmp_path, "{plugin: mxrec, path: packed/rec}", "auto")
    assert len(_written(auto)) == 9 and _written(auto)[0] == "0/00000001.png"
    warned = [r.getMessage() for r in caplog.records if "train.lst" in r.getMessage()]
    assert len(warned) == 1 and "header ids are all 0" in warned[0], warned
    assert "line 2 has label 1 where image record 2 in file order" in warned[0], warned
    with pytest.raises(FacekitError) as e:
        _unpack(tmp_path, "{plugin: mxrec, path: packed/rec, names: lst}", "lst")
    msg = str(e.value)
    assert "\n" not in msg and "does not name the images" in msg and "header ids are all 0" in msg, msg
    assert not (tmp_path / "lst" / "f").exists()


@pytest.mark.parametrize("listing", ["natural", "text"])
def test_rec_to_folders_to_rec_is_byte_identical_under_auto(tmp_path, data_dir, caplog, listing):
    """issue 30 item 13 (review): a ``.lst`` naming an identity's records ``img_1, img_10,
    img_2`` (a listing in text order) was used, and packed again from folders (natural
    order: ``img_1, img_2, img_10``) the records came back in another order. Now the file
    names must be in natural order in the rec too, else one warning and numbered names; in
    both cases rec -> folders -> rec gives the same ``train.rec``/``train.idx``."""
    _link(data_dir, tmp_path / "faces", {"A": ["img_1.png", "img_2.png", "img_10.png"], "B": ["img_1.png", "img_2.png"]})
    cfg = write_config(tmp_path, """
        output: packed
        source: {plugin: folders, root: faces, min_images: 1}
        sinks: [{plugin: mxrec, path: rec}]
        """, "pack.yaml")
    run(load_config(cfg), progress=False)
    rec = tmp_path / "packed" / "rec"
    if listing == "text":
        text = (rec / "train.lst").read_text(encoding="utf-8")
        text = text.replace("/A/img_2.png", "/A/img_X.png").replace("/A/img_10.png", "/A/img_2.png")
        (rec / "train.lst").write_text(text.replace("/A/img_X.png", "/A/img_10.png"), encoding="utf-8")
    caplog.set_level(logging.WARNING)
    back = _unpack(tmp_path, "{plugin: mxrec, path: packed/rec}", "back")
    warned = [r.getMessage() for r in caplog.records if "train.lst" in r.getMessage()]
    if listing == "natural":
        assert _written(back) == ["A/img_1.png", "A/img_10.png", "A/img_2.png", "B/img_1.png", "B/img_2.png"]
        assert not warned
    else:
        assert _written(back)[0] == "0/00000001.png"
        assert len(warned) == 1 and "'img_2.png' comes after 'img_10.png'" in warned[0], warned
    cfg = write_config(tmp_path, """
        output: again
        source: {plugin: folders, root: back/f, min_images: 1}
        sinks: [{plugin: mxrec, path: rec}]
        """, "again.yaml")
    run(load_config(cfg), progress=False)
    for f in ("train.rec", "train.idx"):
        assert (tmp_path / "again" / "rec" / f).read_bytes() == (rec / f).read_bytes(), f
