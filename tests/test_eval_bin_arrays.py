"""Verification bins made the way real ones are: ``cv2.imencode`` of real photos, whose result
(in the OpenCV releases most bins were written with) is a numpy uint8 array of shape (N, 1),
put in the list as it is and pickled (protocols 0-5; Python 3 + numpy 2, Python 3 + numpy 1
in the isolated mxnet env, Python 2 as older scripts wrote them). ``load_bin``, ``facekit
eval`` and the ``evalbin`` source read them; the bytes are those insightface's ``load_bin``
decodes (``mx.image.imdecode``, checked under the real mxnet)."""

from __future__ import annotations

import hashlib
import json
import pickle
import struct

import cv2
import numpy as np
import pytest

from conftest import facekit_cli, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.formats.evalbin import EvalBinError, load_bin, loads_bin, save_bin
from facekit.vision.images import decode_image
from facekit.formats.pairs import folder_pairs


@pytest.fixture(scope="module")
def encoded(data_dir):
    """12 pairs of real photos (LFW-style fold order, positives and negatives), each
    resized to 112x112 and encoded with ``cv2.imencode`` (JPEG, every third one PNG): a list
    of (N, 1) uint8 arrays in pair order, and the flags."""
    root = data_dir / "images" / "identities"
    pairs = folder_pairs(root, seed=0, folds=2)
    half = len(pairs) // 2
    chosen = pairs[:6] + pairs[half - 6 : half] + pairs[half : half + 6] + pairs[-6:]
    arrays = []
    for k, rel in enumerate(r for p in chosen for r in (p.a, p.b)):
        img = cv2.resize(cv2.imread(str(root / rel)), (112, 112), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".png" if k % 3 == 2 else ".jpg", img)
        assert ok
        # older OpenCV (the releases most public bins were written with) returns (N, 1);
        # recent releases return (N,): the bins of both kinds exist
        arrays.append(buf.reshape(-1, 1))
    assert all(a.dtype == np.uint8 and a.ndim == 2 and a.shape[1] == 1 for a in arrays)
    return arrays, [p.issame for p in chosen]


def _readonly(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False  # pickled in-band as BINBYTES8 under protocol 5 (BYTEARRAY8 if writable)
    return a


@pytest.mark.parametrize("proto", range(0, pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("writable", [True, False])
def test_imencode_arrays_load_every_protocol(encoded, proto, writable):
    arrays, issame = encoded
    if not writable:
        arrays = [_readonly(a) for a in arrays]
    data = pickle.dumps((arrays, issame), protocol=proto)
    bins, flags = loads_bin(data, "cv2.bin")
    assert flags == issame
    assert bins == [a.tobytes() for a in arrays] and all(type(b) is bytes for b in bins)
    for b, a in zip(bins[:3], arrays[:3]):
        assert np.array_equal(decode_image(b), cv2.imdecode(a, cv2.IMREAD_COLOR))


def _py2_str(b: bytes) -> bytes:
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<I", len(b)) + b)


def _py2_array_proto2(raw: bytes) -> bytes:
    """A (N, 1) uint8 array as Python 2 + numpy 1.x pickled it with protocol 2."""
    dtype = b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"
    dtype += b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    shape = b"J" + struct.pack("<i", len(raw)) + b"K\x01\x86"
    head = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"\x87R"
    return head + b"(K\x01" + shape + dtype + b"\x89" + _py2_str(raw) + b"tb"


def _py2_repr(raw: bytes) -> bytes:
    """Python 2's repr of a str, as protocol 0 writes it (S'...')."""
    out = bytearray()
    for c in raw:
        if c in (0x5C, 0x27) or not 0x20 <= c < 0x7F:
            out += b"\\x%02x" % c
        else:
            out.append(c)
    return b"S'" + bytes(out) + b"'\n"


def _py2_array_proto0(raw: bytes, put) -> bytes:
    """A (N, 1) uint8 array as Python 2's cPickle wrote it with protocol 0 (text opcodes)."""
    head = b"cnumpy.core.multiarray\n_reconstruct\n" + put() + b"(cnumpy\nndarray\n" + put()
    head += b"(I0\nt" + put() + _py2_repr(b"b") + put() + b"tR" + put()
    state = b"(I1\n(I%d\nI1\nt" % len(raw) + put()
    state += b"cnumpy\ndtype\n" + put() + b"(" + _py2_repr(b"u1") + put() + b"I0\nI1\nt" + put() + b"R" + put()
    state += b"(I3\n" + _py2_repr(b"|") + put() + b"NNNI-1\nI-1\nI0\nt" + put() + b"b"
    state += b"I00\n" + _py2_repr(raw) + put() + b"t" + put() + b"b"
    return head + state


def test_python2_pickles_of_imencode_arrays(encoded):
    arrays, issame = encoded
    raws = [a.tobytes() for a in arrays]
    flags = b"".join(b"\x88" if s else b"\x89" for s in issame)
    proto2 = b"\x80\x02](" + b"".join(_py2_array_proto2(r) for r in raws) + b"e](" + flags + b"e\x86."
    memo = iter(range(10**6))

    def put() -> bytes:
        return b"p%d\n" % next(memo)

    proto0 = b"((l" + put() + b"".join(_py2_array_proto0(r, put) + b"a" for r in raws)
    proto0 += b"(l" + put() + b"".join(b"I%02d\na" % int(s) for s in issame) + b"t."
    for data in (proto2, proto0):
        ref_bins, ref_flags = pickle.loads(data, encoding="bytes")  # a valid pickle, as Python reads it
        assert ref_bins[0].shape == arrays[0].shape and list(ref_flags) == issame
        assert loads_bin(data, "py2.bin") == (raws, issame)


def test_numpy1_bins_read_as_insightface_load_bin_does(encoded, run_mxnet, tmp_path):
    """Bins pickled under numpy 1.23 (``numpy.core`` names) with protocols 0-5, read by the
    real mxnet as insightface's ``load_bin`` does, and by facekit: the same bytes."""
    arrays, issame = encoded
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    for i, a in enumerate(arrays):
        (raw_dir / f"{i:03d}").write_bytes(a.tobytes())
    (tmp_path / "issame.json").write_text(json.dumps(issame))
    out = run_mxnet(
        """
        import hashlib, json, pickle, sys
        from pathlib import Path
        import mxnet as mx
        import numpy as np
        tmp = Path(sys.argv[1])
        bins = [np.frombuffer((tmp / "raw" / f).read_bytes(), np.uint8).reshape(-1, 1).copy()
                for f in sorted(p.name for p in (tmp / "raw").iterdir())]
        issame = json.loads((tmp / "issame.json").read_text())
        seen = {}
        for proto in range(pickle.HIGHEST_PROTOCOL + 1):
            path = tmp / f"np1-p{proto}.bin"
            path.write_bytes(pickle.dumps((bins, issame), protocol=proto))
            # insightface recognition/arcface_torch/eval/verification.py load_bin
            with open(path, "rb") as f:
                got, flags = pickle.load(f, encoding="bytes")
            imgs = [mx.image.imdecode(b) for b in got]
            seen[proto] = [[list(im.shape), hashlib.sha1(np.frombuffer(b, np.uint8).tobytes()).hexdigest()]
                           for im, b in zip(imgs, got)] + [list(flags)]
        print(json.dumps(seen))
        """,
        tmp_path,
    )
    seen = json.loads(out.strip().splitlines()[-1])
    assert sorted(map(int, seen)) == list(range(6))
    for proto, rows in seen.items():
        data = (tmp_path / f"np1-p{proto}.bin").read_bytes()
        if int(proto) >= 2:
            assert b"numpy.core.multiarray" in data or b"numpy.core.numeric" in data
        bins, flags = load_bin(tmp_path / f"np1-p{proto}.bin")
        assert flags == issame == rows[-1]
        assert bins == [a.tobytes() for a in arrays]
        for b, (shape, sha) in zip(bins, rows[:-1]):
            assert hashlib.sha1(b).hexdigest() == sha and list(decode_image(b).shape) == shape


def test_non_contiguous_uint8_array_is_named(encoded):
    arrays, _ = encoded
    strided = np.ascontiguousarray(np.concatenate([arrays[0], arrays[0]], axis=1)).T  # F-order (2, N)
    assert not strided.flags.c_contiguous
    data = pickle.dumps(([arrays[1], strided], [True]), protocol=5)
    with pytest.raises(EvalBinError, match=r"nc\.bin: image record 1 \(pair 0, b\): .*not C-contiguous"):
        loads_bin(data, "nc.bin")


def test_eval_and_evalbin_source_accept_imencode_arrays(encoded, rec_model, tmp_path):
    arrays, issame = encoded
    arr_bin, bytes_bin = tmp_path / "arrays.bin", tmp_path / "bytes.bin"
    arr_bin.write_bytes(pickle.dumps((arrays, issame), protocol=2))
    save_bin(bytes_bin, [a.tobytes() for a in arrays], issame)
    res = {}
    for p in (arr_bin, bytes_bin):
        js = tmp_path / f"{p.stem}.json"
        r = facekit_cli("eval", "-m", rec_model, "--folds", "2", "-q", "--json", js, p)
        assert r.returncode == 0, r.stderr
        res[p.stem] = json.loads(js.read_text())["results"][0]
    assert res["arrays"]["accuracy"] > 0.8
    for k in ("accuracy", "accuracy_std", "tar", "far", "xnorm", "fold_thresholds"):
        assert res["arrays"][k] == res["bytes"][k], k
    # the evalbin source reads it too: bin -> bin with bytes elements, same images and flags
    cfg = write_config(
        tmp_path,
        f"""
        output: out
        source: {{plugin: evalbin, path: {arr_bin}}}
        sinks:
          - {{plugin: evalbin, path: again.bin}}
        """,
    )
    run(load_config(cfg), progress=False)
    assert load_bin(tmp_path / "out" / "again.bin") == ([a.tobytes() for a in arrays], issame)


def test_evalbin_source_count_is_the_number_of_images(encoded, tmp_path):
    from facekit.pipeline.config import parse_config

    arrays, issame = encoded
    path = tmp_path / "c.bin"
    path.write_bytes(pickle.dumps((arrays, issame), protocol=4))
    text = f"output: out\nsource: {{plugin: evalbin, path: {path}}}\nsinks: [{{plugin: pairs, path: f}}]\n"
    spec = parse_config(text)
    src = spec.source.build()
    assert src.count() == len(list(src)) == 2 * len(issame) == 48
