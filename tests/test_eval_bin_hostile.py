"""Hostile verification .bin files: length fields that claim terabytes, memo indices that
size the unpickler's memo to gigabytes, buffers referenced thousands of times, structures
nested 100000 deep, huge ints. Each gives a one-line EvalBinError naming the file, within a
small address-space limit (nothing allocates what a file claims), and nothing recurses
(neither loading nor the message). Fuzzed with hypothesis on mutated real-style bins."""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facekit.formats.evalbin import EvalBinError, loads_bin

JPEG = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"
_BINS = b"](C\x04aaaaC\x04bbbbe"  # protocol 3+: [b'aaaa', b'bbbb']


def _nested(depth: int) -> bytes:
    """Opcodes of a list nested ``depth`` deep: [[[...]]] (no recursion needed to write it)."""
    return b"]" * depth + b"a" * (depth - 1)


class _SharedBuffer:
    """Pickles as a numpy uint8 array whose raw bytes object is shared (memo) with every
    other instance: one buffer in the file, one copy per array when loaded."""

    def __init__(self, raw: bytes):
        self.raw = raw

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return _reconstruct, (np.ndarray, (0,), b"b"), (1, (len(self.raw), 1), np.dtype("u1"), False, self.raw)


def _hostile() -> dict[str, bytes]:
    big = 1 << 40  # 1 TiB claimed
    raw = b"\xff" * 1_000_000
    return {
        "BINBYTES8-1TiB": b"\x80\x04\x8e" + struct.pack("<Q", big) + b"xx",
        "BINBYTES8-2^64-1": b"\x80\x04\x8e" + struct.pack("<Q", (1 << 64) - 1) + b"xx",
        "BINUNICODE8-1TiB": b"\x80\x04\x8d" + struct.pack("<Q", big) + b"xx",
        "BYTEARRAY8-1TiB": b"\x80\x05\x96" + struct.pack("<Q", big) + b"xx",
        "FRAME-1TiB": b"\x80\x04\x95" + struct.pack("<Q", big) + b"N.",
        "LONG4-2GiB": b"\x80\x02\x8b" + struct.pack("<i", 2**31 - 1) + b"xx",
        "BINSTRING-2GiB": b"\x80\x02T" + struct.pack("<i", 2**31 - 1) + b"xx",
        "BINBYTES-4GiB": b"\x80\x03B" + struct.pack("<I", 2**32 - 1) + b"xx",
        "LONG_BINPUT-4G": b"\x80\x02]r" + struct.pack("<I", 2**32 - 1) + b".",
        "LONG_BINPUT-512M": b"\x80\x02]r" + struct.pack("<I", 2**29) + b".",
        "PUT-decimal-1G": b"(lp1000000000\n.",
        # 3000 arrays sharing one 1 MB buffer: 3 GB of copies from a 1 MB file
        "shared-buffer": pickle.dumps(([_SharedBuffer(raw) for _ in range(3000)], [True] * 1500), protocol=4),
        "shared-buffer-proto2": pickle.dumps(([_SharedBuffer(raw) for _ in range(3000)], [True] * 1500), protocol=2),
    }


_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from facekit.formats.evalbin import EvalBinError, loads_bin

    def vm():
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmSize:"))

    cases = json.load(sys.stdin)
    limit = vm() + (768 << 20)  # 768 MiB above what the interpreter already maps
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = {}
    for name, hexdata in cases.items():
        try:
            loads_bin(bytes.fromhex(hexdata), f"{name}.bin")
            out[name] = "loaded"
        except EvalBinError as e:
            out[name] = "EvalBinError: " + str(e)
        except BaseException as e:
            out[name] = "RAW " + type(e).__name__ + ": " + str(e)[:200]
    print(json.dumps(out))
    """
)


def test_claimed_lengths_and_memo_indices_allocate_nothing():
    cases = _hostile()
    r = subprocess.run(
        [sys.executable, "-c", _PROBE],
        input=json.dumps({k: v.hex() for k, v in cases.items()}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for name in cases:
        msg = out[name]
        assert msg.startswith(f"EvalBinError: {name}.bin: "), f"{name}: {msg}"
        assert "\n" not in msg and len(msg) < 400, msg


@pytest.mark.parametrize(
    "body,where",
    [
        (_BINS + b"]" + _nested(100_000) + b"a\x86", r"issame_list\[0\]: expected a bool .*found list of 1 items"),
        (_BINS + _nested(100_000) + b"\x86", r"issame_list\[0\]: expected a bool .*found list of 1 items"),
        (b"]" + _nested(100_000) + b"a" + b"](\x88\x88e\x86", r"image record 0 .*found list of 1 items"),
        (_nested(100_000), r"expected a pickled pair .*found list of 1 items"),
        (
            _BINS + b"](\x8b" + struct.pack("<i", 3000) + b"\x01" * 3000 + b"\x88e\x86",
            r"issame_list\[0\]: .*int of 23993 bits",
        ),
    ],
    ids=["issame-element", "issame-list", "image-record", "top-level", "huge-int"],
)
def test_deep_nesting_and_huge_ints_give_one_line_errors(body, where):
    data = b"\x80\x04" + body + b"."
    with pytest.raises(EvalBinError, match=r"^deep\.bin: " + where) as e:
        loads_bin(data, "deep.bin")
    assert "\n" not in str(e.value) and len(str(e.value)) < 300


def test_many_tiny_opcodes_are_refused():
    # 50 MB of empty lists would become ~3 GB of list objects
    data = b"\x80\x02" + b"]" * 2_000_000 + b"."
    with pytest.raises(EvalBinError, match=r"tiny\.bin: refused to load: more than \d+ opcodes"):
        loads_bin(data, "tiny.bin")


def _valid_bins() -> list[bytes]:
    arr = np.frombuffer(JPEG, np.uint8).reshape(-1, 1)
    obj = ([JPEG, arr, arr.copy(), JPEG], [np.bool_(True), False])
    return [pickle.dumps(obj, protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)]


MUTATION = st.tuples(
    st.integers(0, 10**6), st.sampled_from(["set", "insert", "delete", "length"]), st.binary(min_size=1, max_size=9)
)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, pickle.HIGHEST_PROTOCOL), muts=st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_bins_load_or_fail_with_one_line(which, muts):
    data = bytearray(_valid_bins()[which])
    for pos, kind, junk in muts:
        i = pos % (len(data) + 1)
        if kind == "set":
            data[i : i + len(junk)] = junk
        elif kind == "insert":
            data[i:i] = junk
        elif kind == "delete":
            del data[i : i + len(junk)]
        else:  # a length-like field: 4 or 8 bytes of 0xff
            data[i : i + 8] = b"\xff" * 8
    try:
        bins, issame = loads_bin(bytes(data), "m.bin")
    except EvalBinError as e:
        assert str(e).startswith("m.bin: ") and "\n" not in str(e), str(e)
    else:
        assert all(type(b) is bytes for b in bins) and all(type(s) is bool for s in issame)
        assert len(bins) == 2 * len(issame)
