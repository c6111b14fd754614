"""RecordIO interop with the real mxnet 1.9.1 (isolated env), both directions, on the real
photos: files mxnet writes (MXIndexedRecordIO + pack/pack_img, scalar and array labels,
multi-part records, im2rec --pass-through) read by facekit with identical keys, headers,
labels and bytes; files facekit writes (single file, shards, plain shuffled) read by
mxnet the same way; reindex reproduces mxnet's idx; rec -> folders -> rec is byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import link_identities, resized_identities, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.formats.facerec import FaceRec
from facekit.formats.recordio import IndexedRecordIOReader, build_index, format_idx, unpack

# Dump every record of every .rec in a folder, through mxnet: key, flag, labels, id, id2,
# sha256 of the image bytes, in idx order.
MX_DUMP = """
import hashlib, json, os, sys, mxnet as mx
def dump(d):
    out = {}
    for name in sorted(os.listdir(d)):
        if not name.endswith('.rec'):
            continue
        r = mx.recordio.MXIndexedRecordIO(os.path.join(d, name[:-4] + '.idx'), os.path.join(d, name), 'r')
        rows = []
        for k in r.keys:
            h, s = mx.recordio.unpack(r.read_idx(k))
            lab = [float(h.label)] if h.flag == 0 else [float(x) for x in h.label]
            rows.append([k, h.flag, lab, h.id, h.id2, hashlib.sha256(s).hexdigest()])
        r.close()
        out[name] = rows
    return out
"""


def fk_dump(d: Path) -> dict:
    """The same dump through facekit's reader."""
    out = {}
    for rec in sorted(d.glob("*.rec")):
        r = IndexedRecordIOReader(rec.with_suffix(".idx"), rec)
        rows = []
        for k in r.keys:
            h, s = unpack(r.read_idx(k))
            lab = [float(h.label)] if h.flag == 0 else [float(x) for x in h.label]
            rows.append([k, h.flag, lab, h.id, h.id2, hashlib.sha256(s).hexdigest()])
        r.close()
        out[rec.name] = rows
    return out


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def tree(tmp_path_factory, data_dir) -> Path:
    """ROOT/<identity>/<image>.jpg: the 94 real photos of 21 identities, resized to 112x112
    JPEG (the mxrec sink writes datasets of one image size)."""
    return resized_identities(data_dir, tmp_path_factory.mktemp("tree") / "root")


@pytest.fixture(scope="module")
def mx_files(tmp_path_factory, tree, data_dir, mxnet_python, run_mxnet) -> Path:
    """Files written by the real mxnet: insightface layout (pack), plain with array labels
    (pack_img, Glint360K-style [class, aligned]), multi-part records, and im2rec
    --pass-through runs (shuffled list over aligned_112; recursive list over the tree)."""
    d = tmp_path_factory.mktemp("mx")
    for sub in ("face", "glint", "multi", "im2rec_aligned", "im2rec_tree"):
        (d / sub).mkdir()
    run_mxnet(
        """
        import os, sys, cv2, numpy as np, mxnet as mx
        from mxnet.recordio import IRHeader, pack, pack_img
        root, d = sys.argv[1], sys.argv[2]
        idents = sorted(os.listdir(root))
        files = [(i, os.path.join(root, n, f)) for i, n in enumerate(idents) for f in sorted(os.listdir(os.path.join(root, n)))]
        # insightface layout, as face2rec/the dataset guide write it
        w = mx.recordio.MXIndexedRecordIO(d + '/face/train.idx', d + '/face/train.rec', 'w')
        n, K = len(files), len(idents)
        w.write_idx(0, pack(IRHeader(0, [n + 1.0, n + 1.0 + K], 0, 0), b''))
        ranges, key = [], 1
        for i, (lab, p) in enumerate(files):
            w.write_idx(key, pack(IRHeader(0, float(lab), key, 0), open(p, 'rb').read()))
            if ranges and ranges[-1][0] == lab: ranges[-1][2] = key + 1
            else: ranges.append([lab, key, key + 1])
            key += 1
        for lab, s, e in ranges:
            w.write_idx(key, pack(IRHeader(0, [float(s), float(e)], 0, 0), b'')); key += 1
        w.close()
        open(d + '/face/property', 'w').write('%d,112,112\\n' % K)
        # plain, array labels [class, aligned], images re-encoded by pack_img (OpenCV, BGR)
        w = mx.recordio.MXIndexedRecordIO(d + '/glint/train.idx', d + '/glint/train.rec', 'w')
        for key, (lab, p) in enumerate(files[:30]):
            img = cv2.resize(cv2.imread(p), (112, 112))
            w.write_idx(key, pack_img(IRHeader(0, [float(lab), 1.0], key, 7), img, quality=90))
        w.close()
        # multi-part: image bytes with the magic at 4-byte-aligned payload offsets
        magic = bytes.fromhex('0a23d7ce')
        w = mx.recordio.MXIndexedRecordIO(d + '/multi/train.idx', d + '/multi/train.rec', 'w')
        for key, (lab, p) in enumerate(files[:12]):
            b = open(p, 'rb').read()
            b = b[:100] + magic + b[104:200] + magic + magic + b[208:]   # payload offsets 124, 220, 224
            w.write_idx(key, pack(IRHeader(0, float(lab), key, 0), b))
        w.close()
        """,
        tree,
        d,
    )
    im2rec = [mxnet_python, "-m", "mxnet.tools.im2rec"]
    a = d / "im2rec_aligned" / "aligned"
    subprocess.run(im2rec + [a, data_dir / "aligned_112", "--list"], check=True, capture_output=True)
    subprocess.run(im2rec + [a, data_dir / "aligned_112", "--pass-through"], check=True, capture_output=True)
    t = d / "im2rec_tree" / "tree"
    subprocess.run(im2rec + [t, tree, "--list", "--recursive", "--no-shuffle"], check=True, capture_output=True)
    subprocess.run(im2rec + [t, tree, "--pass-through"], check=True, capture_output=True)
    return d


@pytest.fixture(scope="module")
def mx_dump(mx_files, run_mxnet) -> dict:
    code = MX_DUMP + "\nimport sys\nprint(json.dumps({s: dump(os.path.join(sys.argv[1], s)) for s in sys.argv[2:]}))"
    subs = ["face", "glint", "multi", "im2rec_aligned", "im2rec_tree"]
    return json.loads(run_mxnet(code, mx_files, *subs))


def test_facekit_reads_mxnet_files_identically(mx_files, mx_dump, tree):
    for sub, dumped in mx_dump.items():
        assert fk_dump(mx_files / sub) == dumped, sub
    # and the content is what was packed: the original file bytes, labels by identity
    files = sorted(p for p in tree.glob("*/*"))
    face = mx_dump["face"]["train.rec"]
    n = len(files)
    assert face[0][:3] == [0, 2, [n + 1.0, n + 22.0]]
    assert [r[5] for r in face[1 : n + 1]] == [sha(p.read_bytes()) for p in files]
    # multi-part records really are split (cflag 1 at the record start) and read back whole
    raw = (mx_files / "multi" / "train.rec").read_bytes()
    assert (int.from_bytes(raw[4:8], "little") >> 29) == 1
    assert fk_dump(mx_files / "multi")["train.rec"][3][5] == mx_dump["multi"]["train.rec"][3][5]


def test_im2rec_pass_through_read_by_facekit(mx_files, data_dir):
    """im2rec --list shuffles (seed 100): keys are the list's indices, ids the same; the
    bytes are the aligned_112 files as they are; the source sees a plain layout."""
    lst = [ln.split("\t") for ln in (mx_files / "im2rec_aligned" / "aligned.lst").read_text().splitlines()]
    r = IndexedRecordIOReader(mx_files / "im2rec_aligned" / "aligned.idx", mx_files / "im2rec_aligned" / "aligned.rec")
    assert r.keys == [int(x[0]) for x in lst] and r.keys != sorted(r.keys)
    for key, label, rel in lst:
        h, img = unpack(r.read_idx(int(key)))
        assert (h.flag, h.label, h.id) == (0, float(label), int(key))
        assert img == (data_dir / "aligned_112" / rel.strip()).read_bytes()
    rec = FaceRec(mx_files / "im2rec_aligned" / "aligned.rec")
    assert rec.layout == "plain" and len(rec) == 8


def test_array_labels_and_glint_style(mx_files):
    rec = FaceRec(mx_files / "glint")
    assert rec.layout == "plain"  # key 0 has flag 2 but image bytes: not a header
    labels = rec.labels()
    assert labels.tolist() == sorted(labels.tolist()) and len(labels) == 30
    h, img = rec.read(0)
    assert h.flag == 2 and list(h.label) == [0.0, 1.0] and h.id2 == 7 and img[:2] == b"\xff\xd8"


def test_reindex_reproduces_mxnet_idx(mx_files):
    for sub, stem, rule in (("face", "train", "ordinal"), ("im2rec_aligned", "aligned", "id"), ("glint", "train", "id")):
        keys, offs, info = build_index(mx_files / sub / f"{stem}.rec")
        assert info["keys"] == rule
        assert format_idx(keys, offs) == (mx_files / sub / f"{stem}.idx").read_bytes(), sub


def _run(tmp_path, text, name="p.yaml"):
    return run(load_config(write_config(tmp_path, text, name)), progress=False)


def test_facekit_writes_what_mxnet_reads(tmp_path, tree, run_mxnet):
    """facekit's sink (single file, 3 shards, plain shuffled in 2 shards) read by mxnet:
    identical dumps; images are the original bytes; shards are standalone insightface files."""
    s = _run(
        tmp_path,
        f"""
        output: out
        source: {{plugin: folders, root: {tree}, min_images: 1}}
        sinks:
          - {{plugin: mxrec, path: one}}
          - {{plugin: mxrec, path: sh, shards: 3}}
          - {{plugin: mxrec, path: pl, layout: plain, shuffle: true, seed: 5, shards: 2}}
        """,
    )
    assert s.faces_kept == 94 and s.identities_written == 21
    out = tmp_path / "out"
    code = MX_DUMP + "\nimport sys\nprint(json.dumps({s: dump(os.path.join(sys.argv[1], s)) for s in sys.argv[2:]}))"
    got = json.loads(run_mxnet(code, out, "one", "sh", "pl"))
    for sub in ("one", "sh", "pl"):
        assert fk_dump(out / sub) == got[sub], sub
    files = sorted(tree.glob("*/*"))
    idents = sorted({p.parent.name for p in files})
    one = got["one"]["train.rec"]
    assert [r[5] for r in one[1:95]] == [sha(p.read_bytes()) for p in files]
    # shards: each a valid insightface file; together exactly the single file's images
    rows = []
    for name, recs in sorted(got["sh"].items()):
        first, end = recs[0][2]
        assert recs[0][1] == 2 and [r[0] for r in recs] == list(range(int(end)))
        rows += recs[1 : int(first)]
        for k, _, (s_, e_), *_ in recs[int(first) :]:
            assert len({tuple(recs[j][2]) for j in range(int(s_), int(e_))}) == 1  # one label per identity record
    assert [(r[2], r[3], r[5]) for r in rows] == [(r[2], r[3], r[5]) for r in one[1:95]]
    shard_labels = [{r[2][0] for r in recs if r[1] == 0} for recs in got["sh"].values()]
    assert sum(len(x) for x in shard_labels) == 21 and not set.intersection(*shard_labels)  # identity boundaries
    # plain shuffled: keys from 0, scalar labels, every image once, label = its identity
    pl = [r for recs in got["pl"].values() for r in recs]
    assert all(r[1] == 0 for r in pl) and all(recs[0][0] == 0 for recs in got["pl"].values())
    assert sorted((idents[int(r[2][0])], r[5]) for r in pl) == sorted((p.parent.name, sha(p.read_bytes())) for p in files)
    assert [r[5] for r in pl] != [r[5] for r in one[1:95]]  # shuffled


def test_rec_folders_rec_round_trip_is_byte_identical(tmp_path, mx_files):
    """mxnet's insightface file and im2rec's recursive pass-through file -> folders ->
    rec: the rebuilt .rec and .idx equal mxnet's byte for byte (every image included)."""
    for sub, stem, layout in (("face", "train", "insightface"), ("im2rec_tree", "tree", "plain")):
        src = mx_files / sub / f"{stem}.rec"
        s1 = _run(
            tmp_path,
            f"""
            output: {sub}_a
            source: {{plugin: mxrec, path: {src}}}
            sinks: [{{plugin: folders, path: folders, label_digits: 7}}]
            """,
        )
        s2 = _run(
            tmp_path,
            f"""
            output: {sub}_b
            source: {{plugin: folders, root: {sub}_a/folders, min_images: 1}}
            sinks: [{{plugin: mxrec, path: rec, layout: {layout}, prefix: {stem}}}]
            """,
        )
        assert s1.faces_kept == s2.faces_kept == 94
        out = tmp_path / f"{sub}_b" / "rec"
        assert (out / f"{stem}.rec").read_bytes() == src.read_bytes(), sub
        assert (out / f"{stem}.idx").read_bytes() == src.with_suffix(".idx").read_bytes(), sub
        # the folder files are the original bytes, untouched
        imgs = sorted((tmp_path / f"{sub}_a" / "folders").glob("*/*.*"))
        rec = FaceRec(src)
        assert sorted(sha(p.read_bytes()) for p in imgs) == sorted(sha(img) for _, _, img in rec)


# arcface_torch MXFaceDataset.__init__/__getitem__ (recognition/arcface_torch/dataset.py)
# minus torch/torchvision, run under mxnet for each folder in argv: label and sha256 of the
# mx.image.imdecode pixels of every item, in dataset order (one list per folder).
MX_FACE_DATASET = """
import hashlib, json, numbers, os, sys, numpy as np, mxnet as mx
out = []
for root_dir in sys.argv[1:]:
    out.append([])
    imgrec = mx.recordio.MXIndexedRecordIO(os.path.join(root_dir, 'train.idx'), os.path.join(root_dir, 'train.rec'), 'r')
    header, _ = mx.recordio.unpack(imgrec.read_idx(0))
    imgidx = np.array(range(1, int(header.label[0]))) if header.flag > 0 else np.array(list(imgrec.keys))
    for idx in imgidx:
        h, img = mx.recordio.unpack(imgrec.read_idx(idx))
        label = h.label if isinstance(h.label, numbers.Number) else h.label[0]
        out[-1].append([int(label), hashlib.sha256(mx.image.imdecode(img).asnumpy().tobytes()).hexdigest()])
print(json.dumps(out))
"""


def test_arcface_torch_reads_a_shard_set_one_dataset_per_shard(tmp_path, data_dir, run_mxnet):
    """The README's recipe for arcface_torch: MXFaceDataset opens root_dir/train.rec only,
    so each insightface shard gets a folder of its own (symlinks); the shards' datasets
    concatenated give exactly the unsharded file's items (labels, decoded pixels), and
    facekit.torch.FaceRecDataset reads the set itself with the same labels. (The 150x150
    chips of four identities.)"""
    names = ["John_Salley", "John_Savage", "John_Schneider", "John_Shimkus"]
    root = link_identities(data_dir, tmp_path / "root", names)
    _run(
        tmp_path,
        f"""
        output: out
        source: {{plugin: folders, root: {root}, min_images: 1}}
        sinks: [{{plugin: mxrec, path: one}}, {{plugin: mxrec, path: sh, shards: 3}}]
        """,
    )
    out = tmp_path / "out"
    parts = []
    for i, rec in enumerate(sorted((out / "sh").glob("train-*-of-*.rec"))):
        d = tmp_path / "parts" / str(i)
        d.mkdir(parents=True)
        for ext in (".rec", ".idx"):
            os.symlink(rec.with_suffix(ext), d / f"train{ext}")
        parts.append(d)
    assert len(parts) == 3
    *per_shard, whole = json.loads(run_mxnet(MX_FACE_DATASET, *parts, out / "one"))
    per_shard = [item for part in per_shard for item in part]
    assert len(whole) == 44 and len({lab for lab, _ in whole}) == 4 and per_shard == whole
    pytest.importorskip("torch")
    from facekit.torch import FaceRecDataset

    ds = FaceRecDataset(out / "sh")
    assert [int(ds[i][1]) for i in range(len(ds))] == [lab for lab, _ in whole]


def _rec_folders_rec(tmp_path, src, name, layout, stem):
    """configs/rec2folders.yaml then configs/folders2rec.yaml (label_digits 7, min_images 1,
    order: label for a shuffled source): returns the rebuilt folder."""
    _run(
        tmp_path,
        f"""
        output: {name}_a
        source: {{plugin: mxrec, path: {src}, order: label}}
        sinks: [{{plugin: folders, path: folders, label_digits: 7}}]
        """,
    )
    _run(
        tmp_path,
        f"""
        output: {name}_b
        source: {{plugin: folders, root: {name}_a/folders, min_images: 1}}
        sinks: [{{plugin: mxrec, path: rec, layout: {layout}, prefix: {stem}}}]
        """,
    )
    return tmp_path / f"{name}_b" / "rec"


def test_rec_folders_rec_of_a_shuffled_im2rec_file_comes_back_in_key_order(tmp_path, mx_files, mxnet_python, data_dir):
    """The README's limit of the byte-for-byte round trip: im2rec's default (shuffled) list
    writes records in shuffled order; through folders they come back in label, then key
    order with key = id = position, which is exactly what im2rec --no-shuffle writes for
    the same images: same bytes as that file, not as the shuffled one."""
    src = mx_files / "im2rec_aligned" / "aligned.rec"
    out = _rec_folders_rec(tmp_path, src, "shuf", "plain", "aligned")
    ns = tmp_path / "noshuffle" / "aligned"
    ns.parent.mkdir()
    im2rec = [mxnet_python, "-m", "mxnet.tools.im2rec"]
    subprocess.run(im2rec + [ns, data_dir / "aligned_112", "--list", "--no-shuffle"], check=True, capture_output=True)
    subprocess.run(im2rec + [ns, data_dir / "aligned_112", "--pass-through"], check=True, capture_output=True)
    rebuilt = (out / "aligned.rec").read_bytes()
    assert rebuilt != src.read_bytes()  # shuffled order not kept
    assert rebuilt == ns.with_suffix(".rec").read_bytes()
    assert (out / "aligned.idx").read_bytes() == ns.with_suffix(".idx").read_bytes()
    orig = IndexedRecordIOReader(src.with_suffix(".idx"), src)
    assert orig.keys != sorted(orig.keys)
    want = [(h.label, img) for h, img in (unpack(orig.read_idx(k)) for k in sorted(orig.keys))]
    back = IndexedRecordIOReader(out / "aligned.idx", out / "aligned.rec")
    got = [unpack(back.read_idx(k)) for k in back.keys]
    assert back.keys == [h.id for h, _ in got] == list(range(8))
    assert [(h.label, img) for h, img in got] == want


def test_rec_folders_rec_rewrites_header_and_identity_record_ids(tmp_path, mx_files, run_mxnet):
    """The README's other limit: a file whose header and identity records carry ids other
    than 0 (written by mxnet) comes back with id 0 there: the canonical file, byte for byte,
    with every image record unchanged."""
    d = tmp_path / "ids"
    d.mkdir()
    run_mxnet(
        """
        import sys, mxnet as mx
        from mxnet.recordio import IRHeader, pack, unpack
        src, d = sys.argv[1], sys.argv[2]
        r = mx.recordio.MXIndexedRecordIO(src + '/train.idx', src + '/train.rec', 'r')
        w = mx.recordio.MXIndexedRecordIO(d + '/train.idx', d + '/train.rec', 'w')
        for k in r.keys:
            s = r.read_idx(k)
            h, img = unpack(s)
            if h.flag > 0:  # header and identity records: id = key, id2 = 7
                s = pack(IRHeader(0, h.label, k, 7), img)
            w.write_idx(k, s)
        w.close()
        """,
        mx_files / "face",
        d,
    )
    out = _rec_folders_rec(tmp_path, d, "ids", "insightface", "train")
    assert (d / "train.rec").read_bytes() != (mx_files / "face" / "train.rec").read_bytes()
    assert (out / "train.rec").read_bytes() == (mx_files / "face" / "train.rec").read_bytes()
    assert (out / "train.idx").read_bytes() == (d / "train.idx").read_bytes()


def test_relayout_plain_shuffled_and_back_is_lossless(tmp_path, mx_files):
    """insightface -> plain shuffled (seeded, reproducible) -> insightface with order: label
    rebuilds mxnet's file byte for byte; labels with gaps are kept, not renumbered."""
    src = mx_files / "face"
    for out, seed in (("p1", 3), ("p2", 3), ("p3", 4)):
        _run(
            tmp_path,
            f"""
            output: {out}
            source: {{plugin: mxrec, path: {src}}}
            sinks: [{{plugin: mxrec, path: rec, layout: plain, shuffle: true, seed: {seed}}}]
            """,
        )
    p1, p2, p3 = (tmp_path / o / "rec" / "train.rec" for o in ("p1", "p2", "p3"))
    assert p1.read_bytes() == p2.read_bytes() and p1.read_bytes() != p3.read_bytes()
    tsv = (tmp_path / "p1" / "rec" / "train.identities.tsv").read_text().splitlines()
    assert tsv[0].split("\t") == ["label", "file", "start", "end", "count", "first_id", "end_id"] and len(tsv) == 22
    _run(
        tmp_path,
        f"""
        output: back
        source: {{plugin: mxrec, path: {tmp_path / 'p1' / 'rec'}, order: label}}
        sinks: [{{plugin: mxrec, path: rec}}]
        """,
    )
    back = tmp_path / "back" / "rec"
    assert (back / "train.rec").read_bytes() == (src / "train.rec").read_bytes()
    assert (back / "train.idx").read_bytes() == (src / "train.idx").read_bytes()
    # a file order source refuses a shuffled file with a clear message
    with pytest.raises(Exception, match="order: label"):
        _run(tmp_path, f"output: bad\nsource: {{plugin: mxrec, path: {p1}}}\nsinks: [{{plugin: mxrec, path: rec}}]\n")


def test_labels_kept_as_given(tmp_path, mx_files):
    """A shard read alone keeps the dataset's global labels (no renumbering from 0);
    renumber: consecutive from start_id."""
    _run(
        tmp_path,
        f"""
        output: sh
        source: {{plugin: mxrec, path: {mx_files / 'face'}}}
        sinks: [{{plugin: mxrec, path: rec, shards: 3}}]
        """,
    )
    last = sorted((tmp_path / "sh" / "rec").glob("*-00002-of-00003.rec"))[0]
    want = sorted(set(FaceRec(last).labels().tolist()))
    assert want[0] > 0
    for mode, expect in (("keep", want), ("renumber", list(range(5, 5 + len(want))))):
        _run(
            tmp_path,
            f"""
            output: {mode}
            source: {{plugin: mxrec, path: {last}, labels: {mode}, start_id: 5}}
            sinks: [{{plugin: mxrec, path: rec, layout: plain}}]
            """,
        )
        got = FaceRec(tmp_path / mode / "rec").labels().tolist()
        assert sorted(set(got)) == expect
        assert (tmp_path / mode / "rec" / "property").read_text().split(",")[0] == str(expect[-1] + 1)


@pytest.mark.parametrize("batch, batch_bytes", [(1, 8 << 20), (5, 8 << 20), (512, 20_000)])
def test_sink_batches_do_not_change_the_files(tmp_path, mx_files, monkeypatch, batch, batch_bytes):
    """The mxrec sink frames and writes image records in batches (count or bytes bound):
    whatever the batch bounds, the files are mxnet's byte for byte (single file) and equal
    to an unbatched run's (shards, plain shuffled)."""
    from facekit.plugins import get_registry

    sink = get_registry().get("sink", "mxrec")
    cfg = f"""
        output: {{out}}
        source: {{{{plugin: mxrec, path: {mx_files / 'face'}}}}}
        sinks:
          - {{{{plugin: mxrec, path: one}}}}
          - {{{{plugin: mxrec, path: sh, shards: 3}}}}
          - {{{{plugin: mxrec, path: pl, layout: plain, shuffle: true, seed: 5, shards: 2}}}}
        """
    _run(tmp_path, cfg.format(out="big"))
    monkeypatch.setattr(sink, "BATCH", batch)
    monkeypatch.setattr(sink, "BATCH_BYTES", batch_bytes)
    _run(tmp_path, cfg.format(out="small"))
    src = mx_files / "face"
    small, big = tmp_path / "small", tmp_path / "big"
    assert (small / "one" / "train.rec").read_bytes() == (src / "train.rec").read_bytes()
    assert (small / "one" / "train.idx").read_bytes() == (src / "train.idx").read_bytes()
    names = sorted(p.relative_to(big).as_posix() for p in big.glob("[!.]*/*") if p.is_file())
    assert names == sorted(p.relative_to(small).as_posix() for p in small.glob("[!.]*/*") if p.is_file())
    assert len(names) >= 5 + 2 * 2 + 3 * 2
    for name in names:
        assert (small / name).read_bytes() == (big / name).read_bytes(), name
