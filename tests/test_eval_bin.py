"""Verification .bin files: the insightface layout, every pickle flavour public bins come in
(Python 2 str pickles, numpy uint8 arrays, protocols 0-5), and a loader that refuses to
construct anything else, so a malicious .bin runs nothing."""

from __future__ import annotations

import os
import pickle
import struct
import warnings

import numpy as np
import pytest

from conftest import facekit_cli
from facekit.formats.evalbin import EvalBinError, dumps_bin, load_bin, loads_bin, save_bin

JPEG_A = b"\xff\xd8\xff\xe0fake-jpeg-a\xff\xd9"
JPEG_B = b"\xff\xd8\xff\xe0fake-jpeg-b\x00\x0a\x23\xd7\xce\xff\xd9"


def test_roundtrip_layout(tmp_path):
    bins = [JPEG_A, JPEG_B, JPEG_B, JPEG_A]
    for proto in (2, 4, 5):
        p = tmp_path / f"p{proto}.bin"
        save_bin(p, bins, [True, False], protocol=proto)
        # the file is exactly what insightface's lfw2pack writes: pickle((list of bytes, list of bool))
        raw = pickle.loads(p.read_bytes())
        assert raw == (bins, [True, False]) and type(raw) is tuple
        assert all(type(b) is bytes for b in raw[0]) and all(type(s) is bool for s in raw[1])
        assert load_bin(p) == (bins, [True, False])
        assert not [f for f in os.listdir(tmp_path) if f.endswith(".partial")]
    assert p.read_bytes()[:2] == b"\x80\x05"
    assert (tmp_path / "p2.bin").read_bytes()[:2] == b"\x80\x02"
    with pytest.raises(ValueError, match="2 images per pair"):
        dumps_bin([JPEG_A], [True])


@pytest.mark.parametrize("proto", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_arrays_and_bools_every_protocol(proto):
    arr = np.frombuffer(JPEG_B, np.uint8)
    data = pickle.dumps(([JPEG_A, arr, arr.copy(), JPEG_A], [np.bool_(True), False]), protocol=proto)
    assert loads_bin(data) == ([JPEG_A, JPEG_B, JPEG_B, JPEG_A], [True, False])
    data = pickle.dumps(([arr, arr], np.array([True])), protocol=proto)
    assert loads_bin(data) == ([JPEG_B, JPEG_B], [True])


def _py2_str(b: bytes) -> bytes:
    return (b"U" + bytes([len(b)]) + b) if len(b) < 256 else (b"T" + struct.pack("<I", len(b)) + b)


def _py2_uint8_array(raw: bytes) -> bytes:
    """A numpy uint8 array as Python 2 + numpy 1.x pickled it (protocol 2, str = BINSTRING)."""
    dtype = b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R"
    dtype += b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + _py2_str(b"b")
        + b"\x87R"
        + b"(K\x01"
        + b"J"
        + struct.pack("<i", len(raw))
        + b"\x85"
        + dtype
        + b"\x89"
        + _py2_str(raw)
        + b"tb"
    )


def test_python2_pickle_with_str_and_numpy_elements():
    # (['<jpeg a>', array(<jpeg b>), ...], [True, False]) written by Python 2
    body = _py2_str(JPEG_A) + _py2_uint8_array(JPEG_B) + _py2_uint8_array(JPEG_B) + _py2_str(JPEG_A)
    data = b"\x80\x02](" + body + b"e](\x88\x89e\x86."
    assert pickle.loads(data, encoding="bytes")[1] == [True, False]  # a valid pickle
    assert loads_bin(data, "py2.bin") == ([JPEG_A, JPEG_B, JPEG_B, JPEG_A], [True, False])


class _Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _evil_pickles(marker) -> dict[str, bytes]:
    m = str(marker)
    ok = [JPEG_A, JPEG_B]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)  # np.matrix
        matrix = np.matrix([[1, 2]], dtype=np.uint8)
    return {
        "reduce-open": pickle.dumps(([_Payload(open, m, "w"), JPEG_B], [True]), protocol=4),
        "reduce-in-issame": pickle.dumps((ok, [_Payload(os.mkdir, m)]), protocol=2),
        "reduce-top-level": pickle.dumps(_Payload(os.mkdir, m), protocol=0),
        "proto0-global": b"cos\nmkdir\n(V" + m.encode() + b"\ntR.",
        "inst-opcode": b"(V" + m.encode() + b"\nios\nmkdir\n.",
        "numpy-object-dtype": pickle.dumps((np.array([_Payload(os.mkdir, m), 1], dtype=object), [True]), protocol=2),
        "numpy-subclass": pickle.dumps(([matrix, JPEG_A], [True]), protocol=2),
    }


@pytest.mark.parametrize("kind", list(_evil_pickles("x")))
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, kind):
    marker = tmp_path / "pwned"
    data = _evil_pickles(marker)[kind]
    evil = tmp_path / "evil.bin"
    evil.write_bytes(data)
    with pytest.raises(EvalBinError) as e:
        load_bin(evil)
    msg = str(e.value)
    assert str(evil) in msg and "refused" in msg, msg
    assert not marker.exists()
    if kind in ("reduce-open", "reduce-in-issame", "reduce-top-level", "proto0-global", "inst-opcode"):
        # the payload is live: a plain pickle.load does run it
        try:
            pickle.loads(data)
        except Exception:
            pass
        assert marker.exists()


def test_evil_bin_refused_by_cli_and_source(tmp_path, data_dir):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.bin"
    evil.write_bytes(_evil_pickles(marker)["reduce-open"])
    model = data_dir / "models" / "recognition" / "photo_analyze_mobilefacenet_128d.onnx"
    r = facekit_cli("eval", "-m", model, evil, "-q")
    assert r.returncode == 1 and "refused global io.open" in r.stderr, r.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj,match",
    [
        (([JPEG_A, JPEG_B, JPEG_A], [True]), r"3 images for 1 pairs"),
        (([JPEG_A, "text"], [True]), r"image record 1 \(pair 0, b\)"),
        (([JPEG_A, np.zeros(3, np.float32)], [True]), r"dtype"),
        (([JPEG_A, JPEG_B], [2]), r"issame_list\[0\]"),
        (([JPEG_A, JPEG_B],), r"expected a pickled pair"),
        ((JPEG_A, [True]), r"bins must be a list, found bytes"),
        (({"a": 1}, [True]), r"refused opcode EMPTY_DICT"),  # no dict or set is ever built
    ],
)
def test_bad_structure_names_file_and_record(tmp_path, obj, match):
    p = tmp_path / "bad.bin"
    p.write_bytes(pickle.dumps(obj, protocol=2))
    with pytest.raises(EvalBinError, match=match) as e:
        load_bin(p)
    assert str(p) in str(e.value)


def test_truncated_or_missing_file(tmp_path):
    p = tmp_path / "t.bin"
    p.write_bytes(dumps_bin([JPEG_A, JPEG_B], [True])[:-5])
    with pytest.raises(EvalBinError, match="t.bin: not a readable pickle"):
        load_bin(p)
    with pytest.raises(EvalBinError, match="cannot read"):
        load_bin(tmp_path / "absent.bin")
