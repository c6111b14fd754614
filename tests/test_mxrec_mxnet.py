"""The real mxnet 1.9.1 (isolated env) judges what facekit writes, byte for byte."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from conftest import link_aligned_112, link_identities, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.formats.recordio import (
    MAGIC_BYTES,
    IndexedRecordIOReader,
    IndexedRecordIOWriter,
    IRHeader,
    encode_record,
    pack,
    unpack,
)


def _magic_payloads():
    """Payloads with the magic at aligned offsets (split), unaligned (not split), at the
    very start and end, twice in a row, plus lengths 0..7 for the padding."""
    rng = np.random.default_rng(7)
    body = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    return [
        b"",
        b"a",
        b"abcdefg",
        MAGIC_BYTES,
        MAGIC_BYTES + body,
        body + MAGIC_BYTES,
        body[:8] + MAGIC_BYTES + body[8:16] + MAGIC_BYTES + MAGIC_BYTES + body[16:21],
        body[:5] + MAGIC_BYTES + body[5:30],  # unaligned: not a split point
        body[:12] + MAGIC_BYTES + body[12:14],
    ]


def test_split_framing_matches_dmlc_rules():
    p = b"abcd" + MAGIC_BYTES + b"efg"
    enc = encode_record(p)
    # part 1: cflag 1, length 4; part 2: cflag 3, length 3, padded to 4
    assert enc[:8] == MAGIC_BYTES + struct.pack("<I", (1 << 29) | 4)
    assert enc[12:20] == MAGIC_BYTES + struct.pack("<I", (3 << 29) | 3)
    assert enc[20:] == b"efg\0" and len(enc) == 24


def test_facekit_and_mxnet_write_identical_files(tmp_path, run_mxnet):
    payloads = _magic_payloads()
    fk = tmp_path / "fk"
    fk.mkdir()
    with IndexedRecordIOWriter(fk / "a.idx", fk / "a.rec") as w:
        for i, p in enumerate(payloads):
            w.write_idx(i, p)
    # the batched writer (one framing pass, one write; what the mxrec sink uses), with
    # payloads given whole and as (IRHeader, image) pieces, aligned and unaligned
    with IndexedRecordIOWriter(fk / "b.idx", fk / "b.rec") as w:
        w.write_many_idx(range(3), payloads[:3])
        w.write_many_idx(range(3, len(payloads)), [(p[:4], p[4:]) if j % 2 else (p[:3], p[3:]) for j, p in enumerate(payloads[3:])])
    (tmp_path / "payloads.json").write_text(json.dumps([p.hex() for p in payloads]))
    out = run_mxnet(
        """
        import sys, json, mxnet as mx
        d = sys.argv[1]
        payloads = [bytes.fromhex(h) for h in json.load(open(d + '/payloads.json'))]
        w = mx.recordio.MXIndexedRecordIO(d + '/mx.idx', d + '/mx.rec', 'w')
        for i, p in enumerate(payloads):
            w.write_idx(i, p)
        w.close()
        r = mx.recordio.MXIndexedRecordIO(d + '/fk/a.idx', d + '/fk/a.rec', 'r')
        print(json.dumps([r.read_idx(i).hex() for i in r.keys]))
        """,
        tmp_path,
    )
    assert [bytes.fromhex(h) for h in json.loads(out)] == payloads  # mxnet reads ours
    assert (tmp_path / "mx.rec").read_bytes() == (fk / "a.rec").read_bytes()  # byte for byte
    assert (tmp_path / "mx.idx").read_bytes() == (fk / "a.idx").read_bytes()
    assert (tmp_path / "mx.rec").read_bytes() == (fk / "b.rec").read_bytes()
    assert (tmp_path / "mx.idx").read_bytes() == (fk / "b.idx").read_bytes()
    r = IndexedRecordIOReader(tmp_path / "mx.idx", tmp_path / "mx.rec")  # we read mxnet's
    assert [r.read_idx(k) for k in r.keys] == payloads


def test_pack_unpack_match_mxnet(tmp_path, run_mxnet):
    cases = [(IRHeader(0, 3.0, 7, 0), b"jpegbytes"), (IRHeader(0, [2.0, 5.0], 0, 0), b""),
             (IRHeader(9, [1.0, 0.0, 4.5], 11, 12), MAGIC_BYTES + b"xy")]
    ours = [pack(h, s).hex() for h, s in cases]
    out = run_mxnet(
        """
        import json, mxnet as mx
        cases = [((0, 3.0, 7, 0), b"jpegbytes"), ((0, [2.0, 5.0], 0, 0), b""),
                 ((9, [1.0, 0.0, 4.5], 11, 12), bytes.fromhex('0a23d7ce') + b"xy")]
        print(json.dumps([mx.recordio.pack(mx.recordio.IRHeader(*h), s).hex() for h, s in cases]))
        """
    )
    assert json.loads(out) == ours
    h, s = unpack(bytes.fromhex(ours[2]))
    assert h.flag == 3 and list(h.label) == [1.0, 0.0, 4.5] and s == MAGIC_BYTES + b"xy"


@pytest.mark.slow
def test_pipeline_rec_read_by_mxnet(tmp_path, data_dir, scrfd_model, run_mxnet):
    """A real pipeline's train.rec/train.idx, read by mxnet's MXIndexedRecordIO/unpack:
    header, labels, identity ranges and image bytes as facekit's aligned folders say."""
    link_identities(data_dir, tmp_path / "root", ["Alex_Lacamoire", "John_Salley", "Amy_Adams", "deepface_id08", "Rob_Lowe"])
    cfg = write_config(
        tmp_path,
        f"""
        output: out
        source: {{plugin: folders, root: root, start_id: 0}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        aligner: {{plugin: arcface}}
        sinks: [{{plugin: mxrec, path: rec}}, {{plugin: folders, path: faces}}]
        """,
    )
    s = run(load_config(cfg), progress=False)
    assert s.identities_written == 4 and s.faces_kept == 2 + 11 + 2 + 2
    out = run_mxnet(
        """
        import sys, json, mxnet as mx
        d = sys.argv[1]
        r = mx.recordio.MXIndexedRecordIO(d + '/train.idx', d + '/train.rec', 'r')
        h0, s0 = mx.recordio.unpack(r.read_idx(0))
        recs = []
        for k in range(1, int(h0.label[0])):
            h, img = mx.recordio.unpack(r.read_idx(k))
            arr = mx.image.imdecode(img).asnumpy()
            recs.append([float(h.label), h.id, img.hex(), list(arr.shape)])
        ids = [list(map(float, mx.recordio.unpack(r.read_idx(k))[0].label))
               for k in range(int(h0.label[0]), int(h0.label[1]))]
        print(json.dumps({"flag": h0.flag, "label": list(map(float, h0.label)), "empty": s0 == b"",
                          "keys": sorted(r.keys), "recs": recs, "ids": ids}))
        """,
        tmp_path / "out" / "rec",
    )
    got = json.loads(out)
    n = s.faces_kept
    assert got["flag"] == 2 and got["label"] == [n + 1, n + 1 + 4] and got["empty"]
    assert got["keys"] == list(range(n + 1 + 4))
    labels = [r[0] for r in got["recs"]]
    assert labels == [0.0] * 2 + [1.0] * 11 + [2.0] * 2 + [3.0] * 2  # Amy_Adams (1 image) left out
    assert [r[1] for r in got["recs"]] == list(range(1, n + 1))
    assert all(r[3] == [112, 112, 3] for r in got["recs"])
    assert got["ids"] == [[1, 3], [3, 14], [14, 16], [16, 18]]
    # image bytes equal the JPEGs the folders sink wrote, in the same order
    faces = sorted((tmp_path / "out" / "faces").glob("*/*.jpg"), key=lambda p: (int(p.parent.name), p.name))
    assert [bytes.fromhex(r[2]) for r in got["recs"]] == [p.read_bytes() for p in faces]
    assert (tmp_path / "out" / "rec" / "property").read_text() == "4,112,112\n"


def test_mxrec_plain_layout_read_by_mxnet(tmp_path, data_dir, run_mxnet):
    """layout: plain (no detector: pass-through of already aligned faces): keys from 0,
    scalar labels, no header record; every byte passes through untouched."""
    root = tmp_path / "root"
    link_aligned_112(data_dir, root)
    cfg = write_config(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: root}
        sinks: [{plugin: mxrec, path: rec, layout: plain}]
        """,
    )
    s = run(load_config(cfg), progress=False)
    assert s.faces_kept == 8 and s.identities_written == 2
    out = run_mxnet(
        """
        import sys, json, mxnet as mx
        d = sys.argv[1]
        r = mx.recordio.MXIndexedRecordIO(d + '/train.idx', d + '/train.rec', 'r')
        print(json.dumps([[k, float(mx.recordio.unpack(r.read_idx(k))[0].label),
                           mx.recordio.unpack(r.read_idx(k))[1].hex()] for k in r.keys]))
        """,
        tmp_path / "out" / "rec",
    )
    got = json.loads(out)
    srcs = sorted((data_dir / "aligned_112").glob("*.jpg"))
    assert [g[0] for g in got] == list(range(8))
    assert [g[1] for g in got] == [0.0] * 4 + [1.0] * 4
    assert [bytes.fromhex(g[2]) for g in got] == [p.read_bytes() for p in srcs]
