"""The folders source and sink, the pass-through packer and the text side files against
hostile trees: bad bytes, special files, odd names, repeated names, label order."""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import link_aligned_112, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.errors import SampleRejected
from facekit.vision.images import check_image_header, read_file
from facekit.formats.lst import aligned_lst_line, landmark_line, lst_line, text_field
from facekit.stages import Reject, Sample

FACE = "images/identities/Anthony_Hopkins/Anthony_Hopkins_0001.jpg"


def _encoded(data_dir) -> dict[str, bytes]:
    """One real photo as baseline JPEG, PNG and BMP, plus a JPEG with an EXIF thumbnail."""
    im = Image.open(data_dir / FACE).convert("RGB")

    def save(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 1
    thumb = im.resize((40, 40))
    out = {
        "jpg": (data_dir / FACE).read_bytes(),
        "png": save(im, "PNG"),
        "bmp": save(im, "BMP"),
        "exif.jpg": save(im, "JPEG", quality=90, exif=exif.tobytes()),
    }
    # an APP1 segment holding a complete JPEG thumbnail (its own SOI, SOF, EOI)
    t = save(thumb, "JPEG")
    app1 = b"\xff\xe1" + (len(t) + 8).to_bytes(2, "big") + b"Exif\0\0" + t
    out["thumb.jpg"] = out["jpg"][:2] + app1 + out["jpg"][2:]
    return out


# ---------------------------------------------------------------- item 8: header checks


def test_check_image_header_accepts_whole_images(data_dir):
    for name, data in _encoded(data_dir).items():
        check_image_header(data)  # raises on refusal
        check_image_header(data + b"\0" * 7)  # bytes trailing the end marker are harmless


@pytest.mark.parametrize("fmt", ["jpg", "png", "bmp", "exif.jpg", "thumb.jpg"])
def test_check_image_header_refuses_every_truncation(data_dir, fmt):
    """Every strict prefix of a real image is refused (cut at 97 evenly spread places and
    in the first 64 bytes), with the reason a decoder would give."""
    data = _encoded(data_dir)[fmt]
    cuts = sorted(set(range(64)) | set(np.linspace(64, len(data) - 1, 97).astype(int).tolist()))
    for n in cuts:
        with pytest.raises(SampleRejected) as e:
            check_image_header(data[:n])
        assert e.value.reason in ("empty_file", "not_an_image", "truncated"), (n, e.value)
    assert e.value.reason == "truncated"


def test_check_image_header_never_raises_anything_else(data_dir):
    """Seeded mutations of real JPEG, PNG and BMP headers (bytes flipped, cut, repeated):
    accepted or a SampleRejected with a known reason, never another exception."""
    rng = np.random.default_rng(8)
    reasons = set()
    for data in _encoded(data_dir).values():
        for _ in range(400):
            b = bytearray(data[: int(rng.integers(0, 600))] if rng.random() < 0.3 else data)
            for _ in range(int(rng.integers(1, 6))):
                j = int(rng.integers(0, min(len(b), 400))) if b else 0
                if b:
                    b[j] = int(rng.integers(0, 256))
            try:
                check_image_header(bytes(b))
            except SampleRejected as e:
                reasons.add(e.reason)
    assert reasons <= {"empty_file", "not_an_image", "truncated", "corrupt"} and len(reasons) >= 3


def test_check_image_header_reasons():
    def reason(b):
        with pytest.raises(SampleRejected) as e:
            check_image_header(b)
        return e.value.reason

    assert reason(b"") == "empty_file"
    assert reason(b"this is not an image\n") == "not_an_image"
    assert reason(b"GIF89a" + b"\0" * 40) == "not_an_image"
    assert reason(b"\xff\xd8\xff\xdb\x00\x01") == "corrupt"  # segment length 1
    assert reason(b"\xff\xd8\xff\xda\x00\x08" + b"\0" * 20 + b"\xff\xd9") == "corrupt"  # scan, no frame
    # a frame header of 0x0 pixels
    assert reason(b"\xff\xd8\xff\xc0\x00\x0b\x08\x00\x00\x00\x00\x01\x01\x11\x00\xff\xd9") == "corrupt"
    assert reason(b"BM" + b"\0" * 12 + (7).to_bytes(4, "little") + b"\0" * 30) == "not_an_image"
    bmp_0x0 = b"BM" + b"\0" * 12 + (40).to_bytes(4, "little") + b"\0" * 8 + (1).to_bytes(2, "little") + (24).to_bytes(2, "little") + b"\0" * 30
    assert reason(bmp_0x0) == "corrupt"


def _bad_pack_root(tmp_path, data_dir):
    """Aligned crops (good) plus broken files of every kind, in two identities."""
    root = link_aligned_112(data_dir, tmp_path / "root")
    good = (data_dir / "aligned_112" / "adaface_man_man_1.jpg").read_bytes()
    png = _encoded(data_dir)["png"]
    bad = root / "adaface_man_man"
    (bad / "b_empty.jpg").write_bytes(b"")
    (bad / "b_text.jpg").write_text("this is not an image\n")
    (bad / "b_trunc.jpg").write_bytes(good[: len(good) // 2])
    (bad / "b_head.jpg").write_bytes(good[:300])  # ends inside the headers
    (bad / "b_trunc.png").write_bytes(png[: len(png) // 3])
    (bad / "b_html.png").write_bytes(b"<html><body>404 Not Found</body></html>\n")
    (bad / "b_zero.bmp").write_bytes(b"BM" + b"\0" * 60)
    sof = good.find(b"\xff\xc0")
    (bad / "b_0x0.jpg").write_bytes(good[: sof + 5] + b"\0\0\0\0" + good[sof + 9 :])  # a 0x0 frame
    bmp = _encoded(data_dir)["bmp"]
    (bad / "b_cut.bmp").write_bytes(bmp[:2] + b"\0\0\0\0" + bmp[6 : len(bmp) // 2])  # cut, file size field 0
    return root


def test_passthrough_pack_refuses_bad_files_and_mxnet_decodes_every_record(tmp_path, data_dir, run_mxnet):
    """No detector: file bytes are packed as they are, but only files that are whole
    images; the real mxnet decodes every record of the result."""
    _bad_pack_root(tmp_path, data_dir)
    cfg = write_config(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: root}
        sinks: [{plugin: mxrec, path: rec}, {plugin: folders, path: faces}]
        """,
    )
    s = run(load_config(cfg), progress=False)
    assert s.faces_kept == 8 and s.identities_written == 2
    assert s.rejects == {"empty_file": 1, "not_an_image": 3, "truncated": 4, "corrupt": 1}
    assert s.images_read == 17
    assert len(list((tmp_path / "out/faces").glob("*/*"))) == 8
    out = run_mxnet(
        """
        import sys, json, mxnet as mx
        d = sys.argv[1]
        r = mx.recordio.MXIndexedRecordIO(d + '/train.idx', d + '/train.rec', 'r')
        h0, _ = mx.recordio.unpack(r.read_idx(0))
        shapes = []
        for k in range(1, int(h0.label[0])):
            h, img = mx.recordio.unpack(r.read_idx(k))
            shapes.append(list(mx.image.imdecode(img).shape))
        print(json.dumps(shapes))
        """,
        tmp_path / "out" / "rec",
    )
    assert json.loads(out) == [[112, 112, 3]] * 8


# ---------------------------------------------------------------- item 9: repeated names


def test_folders_sink_writes_every_sample_to_its_own_file(tmp_path):
    """Three variants of one face (an augmenter's output: same path, key and face id),
    a.jpg/a.png, a name differing only in case, a source-given stem equal to a name
    already made: each sample is its own file, names are deterministic (write order),
    label.txt lists exactly the files on disk."""
    from facekit_plugins.folders import FoldersSink

    png = b"\x89PNG\r\n\x1a\n"

    def make():
        from facekit.pipeline.publish import Publication

        sink = FoldersSink(FoldersSink.Params(path=tmp_path / "faces"))
        pub = Publication(tmp_path)
        sink.open(pub)
        samples = [Sample(key=3, path="/src/id/a.jpg", identity="id", data=b"\xff\xd8v%d" % i, label=0) for i in range(3)]
        samples += [
            Sample(key=4, path="/src/id/a.png", identity="id", data=png + b"png", label=0),
            Sample(key=5, path="/src/id/A.jpg", identity="id", data=b"\xff\xd8upper", label=0),
            Sample(key=6, path="rec:6", identity="id", data=b"\xff\xd8stem", label=0, stem="a_0_v1"),
        ]
        for s in samples:
            sink.write(s)
        stats = sink.close()
        pub.commit()
        return stats, [s.data for s in samples]

    stats, datas = make()
    names = ["a_0.jpg", "a_0_v1.jpg", "a_0_v2.jpg", "a_0.png", "A_0_v3.jpg", "a_0_v1_v1.jpg"]
    assert stats["images"] == 6
    assert sorted(p.name for p in (tmp_path / "faces" / "0").iterdir()) == sorted(names)
    assert [(tmp_path / "faces" / "0" / n).read_bytes() for n in names] == datas
    lst = (tmp_path / "faces" / "label.txt").read_text().splitlines()
    assert lst == [f"1\t0/{n}\t0" for n in names]
    make()  # the same samples again: the same names
    assert (tmp_path / "faces" / "label.txt").read_text().splitlines() == lst


# ---------------------------------------------------------------- item 10: special files


def _hostile_tree(tmp_path, data_dir, non_utf8: bool = True) -> tuple:
    """A tree with every kind of entry the folders source must survive; returns
    ``(root, expected {basename: reason}, number of good images)``. ``non_utf8``: also
    names that are not UTF-8."""
    root = link_aligned_112(data_dir, tmp_path / "root")
    ident = root / "adaface_man_man"
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8\xff" + b"\0" * (3 << 20))
    os.symlink("loop.jpg", ident / "loop.jpg")  # a symbolic link to itself
    os.symlink("/dev/zero", ident / "zero.jpg")
    os.mkfifo(ident / "fifo.jpg")
    os.symlink(tmp_path / "missing.jpg", ident / "dangling.jpg")
    os.symlink(big, ident / "big_link.jpg")  # too large, seen by the source (stat of the link)
    shutil.copy(big, ident / "big_file.jpg")  # too large, seen when read
    os.mkdir(ident / "sub.jpg")
    os.symlink("loop_dir", root / "loop_dir")  # an identity "folder" that is a link loop
    rb = os.fsencode(root)
    good = (data_dir / "aligned_112" / "adaface_man_man_1.jpg").read_bytes()
    if non_utf8:
        os.mkdir(os.path.join(rb, b"caf\xe9_latin1"))  # an identity folder name that is not UTF-8
        for n in (b"x1.jpg", b"x2.jpg"):
            with open(os.path.join(rb, b"caf\xe9_latin1", n), "wb") as f:
                f.write(good)
        with open(os.path.join(os.fsencode(ident), b"bad\xff.jpg"), "wb") as f:  # a file name that is not UTF-8
            f.write(good)
    for name in ("tab\tname", "new\nline", "cr\rname"):  # identity folders with a control character
        (root / name).mkdir()
        for i in range(2):
            (root / name / f"f{i}.jpg").write_bytes(good)
    (ident / "file\twith tab.jpg").write_bytes(good)
    (ident / "file\nwith newline.jpg").write_bytes(good)
    (root / "adaface_woman_woman" / "cr\r.jpg").write_bytes(good)
    expected = {
        "loop.jpg": "unreadable",
        "zero.jpg": "unreadable",
        "fifo.jpg": "unreadable",
        "dangling.jpg": "unreadable",
        "big_link.jpg": "too_large",
        "big_file.jpg": "too_large",
        "sub.jpg": "unsupported_file",
        "loop_dir": "unreadable",
        "x1.jpg": "bad_name",
        "x2.jpg": "bad_name",
        os.fsdecode(b"bad\xff.jpg"): "bad_name",
        "f0.jpg": "bad_name",  # x3 folders
        "f1.jpg": "bad_name",
        "file\twith tab.jpg": "bad_name",
        "file\nwith newline.jpg": "bad_name",
        "cr\r.jpg": "bad_name",
    }
    if not non_utf8:
        for k in ("x1.jpg", "x2.jpg", os.fsdecode(b"bad\xff.jpg")):
            del expected[k]
    return root, expected, 8


def _items(source) -> list:
    return list(source)


def _folders_source(root, **kw):
    from facekit_plugins.folders import FoldersSource

    return FoldersSource(FoldersSource.Params(root=root, **kw))


def test_folders_source_turns_hostile_entries_into_rejects(tmp_path, data_dir):
    root, expected, n_good = _hostile_tree(tmp_path, data_dir)
    items = _items(_folders_source(root, max_file_mb=2))
    rejects = [i for i in items if isinstance(i, Reject)]
    samples = [i for i in items if isinstance(i, Sample)]
    got = {}
    for r in rejects:
        got.setdefault(os.path.basename(r.path), set()).add(r.reason)
    # the source itself refuses everything but the regular file it can only size when read
    want = {k: {v} for k, v in expected.items() if k != "big_file.jpg"}
    assert got == want
    assert sum(1 for r in rejects if os.path.basename(r.path) in ("f0.jpg", "f1.jpg")) == 6
    assert sorted(os.path.basename(s.path) for s in samples) == sorted(
        [p.name for p in (data_dir / "aligned_112").glob("*.jpg")] + ["big_file.jpg"]
    )
    assert all(s.max_bytes == 2 << 20 for s in samples)  # the limit travels with the sample
    assert len(samples) == n_good + 1


def test_read_file_refuses_special_files_without_blocking(tmp_path):
    """FIFO (no writer: a blocking open would wait forever), /dev/zero (endless), a link
    loop, a folder: refused by type on the opened descriptor; a file over the limit too."""
    os.mkfifo(tmp_path / "fifo.jpg")
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    (tmp_path / "big.jpg").write_bytes(b"x" * 1001)
    for name, reason, detail in [
        ("fifo.jpg", "unreadable", "FIFO"),
        ("zero.jpg", "unreadable", "character device"),
        ("loop.jpg", "unreadable", "symbolic link loop"),
        (".", "unreadable", "folder"),
    ]:
        with pytest.raises(SampleRejected) as e:
            read_file(str(tmp_path / name), max_bytes=1000)
        assert e.value.reason == reason and detail in e.value.detail, name
    with pytest.raises(SampleRejected) as e:
        read_file(str(tmp_path / "big.jpg"), max_bytes=1000)
    assert e.value.reason == "too_large"
    assert read_file(str(tmp_path / "big.jpg"), max_bytes=1001) == b"x" * 1001


def _limited_run(cfg, timeout=300):
    """``facekit run`` in a subprocess with a 3 GiB address-space limit and a timeout, so
    a hang or an endless read fails the test instead of the machine."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    return subprocess.run(
        [sys.executable, "-m", "facekit.cli", "run", str(cfg)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit,
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_hostile_tree_run_finishes_and_accounts_for_every_entry(tmp_path, data_dir, workers):
    """The whole run (pass-through to mxrec, folders) finishes, bounded, with every entry
    kept or rejected with its reason (names that are not UTF-8 included: rejects.tsv
    escapes them); every line of every text output parses."""
    root, expected, n_good = _hostile_tree(tmp_path, data_dir, non_utf8=True)
    cfg = write_config(
        tmp_path,
        f"""
        output: out
        workers: {workers}
        source: {{plugin: folders, root: root, max_file_mb: 2}}
        sinks: [{{plugin: mxrec, path: rec}}, {{plugin: folders, path: faces}}]
        """,
    )
    r = _limited_run(cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    summ = json.loads((tmp_path / "out" / "summary.json").read_text())
    reasons = {}
    for k, v in expected.items():
        n = 3 if k in ("f0.jpg", "f1.jpg") else 1
        reasons[v] = reasons.get(v, 0) + n
    assert summ["rejects"] == reasons
    assert summ["faces_kept"] == n_good
    rej = (tmp_path / "out" / "rejects.tsv").read_text(encoding="utf-8").split("\n")
    assert rej[-1] == "" and all(len(l.split("\t")) == 4 for l in rej[:-1])
    assert len(rej) - 2 == sum(reasons.values())
    lst = (tmp_path / "out" / "rec" / "train.lst").read_text(encoding="utf-8").split("\n")
    assert lst[-1] == "" and all(len(l.split("\t")) == 3 for l in lst[:-1]) and len(lst) == n_good + 1
    label = (tmp_path / "out" / "faces" / "label.txt").read_text(encoding="utf-8").split("\n")
    assert all(len(l.split("\t")) == 3 for l in label[:-1]) and len(label) == n_good + 1


# ---------------------------------------------------------------- item 11: names in text outputs


def test_text_outputs_escape_what_would_split_a_line():
    """A safety net behind the sources' bad_name rejects: a path with tab, newline, CR or
    an undecodable byte still makes one line with the right number of fields, in UTF-8."""
    path = "/d/a\tb\nc\rd" + os.fsdecode(b"\xff") + ".jpg"
    lmk = np.arange(10, dtype=np.float32).reshape(5, 2)
    s = Sample(key=0, path=path, identity="x", label=3, landmarks=lmk, box=np.zeros(4, np.float32))
    for line, sep, n in [
        (lst_line(s), "\t", 17),
        (lst_line(s.replace(landmarks=None)), "\t", 7),
        (lst_line(s.replace(landmarks=None, box=None)), "\t", 3),
        (aligned_lst_line(path, 3), "\t", 3),
        (landmark_line(s), " ", 12),
    ]:
        line.encode("utf-8")
        assert line.endswith("\n") and line.count("\n") == 1 and "\r" not in line
        assert len(line[:-1].split(sep)) == n
        assert "a\\tb\\nc\\rd\\xff.jpg" in line
    assert text_field("/plain/path with space\\x.jpg") == "/plain/path with space\\x.jpg"


def test_bad_names_never_reach_text_outputs_with_landmarks(tmp_path, data_dir, scrfd_model):
    """With a detector (landmarks.txt written): tab/newline names are rejected before any
    work; landmarks.txt, label.txt and train.lst keep one well-formed line per face."""
    good = (data_dir / FACE).read_bytes()
    ident = tmp_path / "root" / "Anthony_Hopkins"
    ident.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "t\tab.jpg", "n\nl.jpg"):
        (ident / name).write_bytes(good)
    (tmp_path / "root" / "id\twith tab").mkdir()
    (tmp_path / "root" / "id\twith tab" / "c.jpg").write_bytes(good)
    cfg = write_config(
        tmp_path,
        f"""
        output: out
        source: {{plugin: folders, root: root, min_images: 1}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        aligner: {{plugin: arcface}}
        sinks: [{{plugin: mxrec, path: rec}}, {{plugin: folders, path: faces}}]
        """,
    )
    s = run(load_config(cfg), progress=False)
    assert s.faces_kept == 2 and s.rejects == {"bad_name": 3}
    out = tmp_path / "out"
    for f, sep, n in [("faces/landmarks.txt", " ", 12), ("faces/label.txt", "\t", 3), ("rec/train.lst", "\t", 17)]:
        lines = (out / f).read_text(encoding="utf-8").split("\n")
        assert lines[-1] == "" and len(lines) == 3, f
        assert all(len(l.split(sep)) == n for l in lines[:-1]), f


# ---------------------------------------------------------------- item 20: labels of repacked folders


def test_repacking_facekit_folders_keeps_every_label(tmp_path, data_dir):
    """pack -> folders (13 identities: face2019_0 .. face2019_12) -> folders source ->
    mxrec: each image keeps its label (face2019_10 is not read before face2019_2)."""
    crops = sorted((data_dir / "aligned_112").glob("*.jpg"))
    root = tmp_path / "root"
    for i in range(13):
        d = root / f"person_{i:02d}"
        d.mkdir(parents=True)
        for j in range(2):
            os.symlink(crops[(i + j) % len(crops)], d / f"img_{j}.jpg")
    cfg1 = write_config(
        tmp_path,
        """
        output: out1
        source: {plugin: folders, root: root}
        sinks: [{plugin: folders, path: aligned, prefix: face2019_}]
        """,
        "one.yaml",
    )
    assert run(load_config(cfg1), progress=False).identities_written == 13
    aligned = tmp_path / "out1" / "aligned"
    assert (aligned / "face2019_12").is_dir()
    cfg2 = write_config(
        tmp_path,
        """
        output: out2
        source: {plugin: folders, root: out1/aligned}
        sinks: [{plugin: mxrec, path: rec}]
        """,
        "two.yaml",
    )
    s = run(load_config(cfg2), progress=False)
    assert s.faces_kept == 26 and s.identities_written == 13
    lines = (tmp_path / "out2" / "rec" / "train.lst").read_text().splitlines()
    for line in lines:
        _, path, label = line.split("\t")
        assert os.path.basename(os.path.dirname(path)) == f"face2019_{label}", line
    from facekit.formats.recordio import IndexedRecordIOReader, unpack

    rec = IndexedRecordIOReader(tmp_path / "out2/rec/train.idx", tmp_path / "out2/rec/train.rec")
    for k, line in enumerate(lines, start=1):
        h, img = unpack(rec.read_idx(k))
        path = line.split("\t")[1]
        assert int(h.label) == int(line.split("\t")[2]) and img == open(path, "rb").read()


def test_natural_order():
    from facekit_plugins.folders import natural_key

    names = ["face2019_10", "face2019_2", "face2019_1", "a01", "a1", "b", "a", "face2019_0", "id10x", "id9x"]
    assert sorted(names, key=natural_key) == [
        "a", "a01", "a1", "b", "face2019_0", "face2019_1", "face2019_2", "face2019_10", "id9x", "id10x",
    ]


# ---------------------------------------------------------------- item 21: label.txt of the crops


def test_label_txt_describes_the_crops_and_mxnet_packs_them(tmp_path, data_dir, run_mxnet):
    """rec -> folders: label.txt lists the crop files beside it (``1 <folder>/<file>
    label``), never the ``...rec:N`` pseudo-paths; packing it the way face2rec2 does
    (paths opened from the output folder, bytes packed as they are) gives back every
    image with its label."""
    link_aligned_112(data_dir, tmp_path / "root")
    cfg1 = write_config(
        tmp_path,
        """
        output: out1
        source: {plugin: folders, root: root}
        sinks: [{plugin: mxrec, path: rec}]
        """,
        "one.yaml",
    )
    run(load_config(cfg1), progress=False)
    cfg2 = write_config(
        tmp_path,
        """
        output: out2
        source: {plugin: mxrec, path: out1/rec, names: keys}
        sinks: [{plugin: folders, path: faces, prefix: id_}]
        """,
        "two.yaml",
    )
    assert run(load_config(cfg2), progress=False).faces_kept == 8
    faces = tmp_path / "out2" / "faces"
    lines = (faces / "label.txt").read_text().splitlines()
    files = sorted(str(p.relative_to(faces)) for p in faces.glob("id_*/*"))
    assert sorted(l.split("\t")[1] for l in lines) == files and len(files) == 8
    assert all(l.split("\t")[0] == "1" and "rec:" not in l for l in lines)
    assert all(l.split("\t")[1].startswith(f"id_{l.split(chr(9))[2]}/") for l in lines)
    out = run_mxnet(
        """
        import os, sys, json, mxnet as mx
        os.chdir(sys.argv[1])  # face2rec2 opens the .lst paths as written
        res = []
        for i, line in enumerate(open('label.txt')):
            aligned, path, label = line.strip().split('\\t')
            with open(path, 'rb') as f:
                img = f.read()
            s = mx.recordio.pack(mx.recordio.IRHeader(0, [int(label), int(aligned)], i + 1, 0), img)
            h, b = mx.recordio.unpack(s)
            res.append([path, list(map(float, h.label)), list(mx.image.imdecode(b).shape)])
        print(json.dumps(res))
        """,
        faces,
    )
    got = json.loads(out)
    assert [g[2] for g in got] == [[112, 112, 3]] * 8
    assert [g[1] for g in got] == [[0.0, 1.0]] * 4 + [[1.0, 1.0]] * 4


# ---------------------------------------------------------------- item 22: integer boxes


def test_box_only_lst_lines_have_integer_boxes():
    """haar-style detections (box, no landmarks): the box fields parse with int(), as
    insightface's face_preprocess.parse_lst_line reads them; nearest integer, halves up."""
    s = Sample(key=0, path="/d/a.jpg", identity="x", label=2, box=np.array([342.0, 10.5, 99.49, 200.5], np.float32))
    vec = lst_line(s).strip().split("\t")
    assert vec[:3] == ["0", "/d/a.jpg", "2"]
    assert [int(v) for v in vec[3:7]] == [342, 11, 99, 201]


# ---------------------------------------------------------------- item 26: count()


def test_folders_count_matches_iteration_on_a_hostile_tree(tmp_path, data_dir):
    root, _, _ = _hostile_tree(tmp_path, data_dir)
    (root / "stray.jpg").write_bytes(b"x")  # a file outside identity folders: one reject
    (root / "empty_identity").mkdir()  # yields nothing
    src = _folders_source(root)
    # 8 crops, 10 + 1 hostile entries beside them, the loop, 2 + 6 in badly named folders, the stray file
    assert src.count() == len(_items(src)) == 8 + 11 + 1 + 8 + 1


def test_folders_count_skips_side_files_of_facekit_output(tmp_path, data_dir):
    link_aligned_112(data_dir, tmp_path / "root")
    cfg = write_config(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: root}
        sinks: [{plugin: folders, path: faces}]
        """,
    )
    run(load_config(cfg), progress=False)
    src = _folders_source(tmp_path / "out" / "faces")
    assert src.count() == len(_items(src)) == 8


@pytest.mark.parametrize("negatives", [True, False])
def test_samples_count_matches_iteration(negatives):
    from facekit_plugins.samples import SamplesSource

    src = SamplesSource(SamplesSource.Params(negatives=negatives))
    assert src.count() == len(list(src)) == (5 if negatives else 3)
