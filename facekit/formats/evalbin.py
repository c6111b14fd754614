"""Verification ``.bin`` files: ``pickle((bins, issame_list))``, read safely, written atomically.

Format (``shared/docs/FORMATS.md`` section 3; insightface ``recognition/_datasets_/lfw2pack.py``,
``build_eval_pack.py``, ``eval/verification.py`` ``load_bin``): ``bins`` = 2*P encoded
images in pair order a0, b0, a1, b1, ...; ``issame_list`` = P bools. The public bins were
written by Python 2 and are read with ``encoding='bytes'``; their elements are ``bytes`` or
numpy ``uint8`` arrays of encoded bytes, often of shape ``(N, 1)`` (what ``cv2.imencode``
returned in the OpenCV releases most bins were written with). Any C-contiguous uint8 array
is read in memory order, as insightface's ``mx.image.imdecode`` (``numpy.frombuffer``) does.

Unpickling runs code named by the file. :func:`load_bin` uses a restricted unpickler that
constructs only what a bin needs (lists, tuples, bytes, bools, numpy ``uint8``/``bool``
arrays and ``bool`` scalars) and refuses every other global before anything is called.
Hostile files cost bounded memory and time: the opcode stream is checked first (no length
field may claim more than the file holds, memo indices in sequence, no dict/set/object
opcodes, at most one opcode per 32 bytes above a floor), array data copied during a load is
capped at three times the file size, and nothing recurses over the loaded structure.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
from pathlib import Path
from typing import Sequence

import numpy as np

from facekit.formats.atomic import AtomicFile
from facekit.errors import FacekitError

#: pickle protocol written by default: readable by Python >= 3.4 (insightface's scripts
#: write ``pickle.HIGHEST_PROTOCOL``, which is 4 on Python 3.4-3.7 and 5 from 3.8).
DEFAULT_PROTOCOL = 4


class EvalBinError(FacekitError):
    """A verification ``.bin`` is malformed or unsafe; the message names the file and record."""


# --------------------------------------------------------------------------- reading


class _Refused(pickle.UnpicklingError):
    """The pickle asks for something a verification .bin never holds."""


# Opcodes a bin needs (lists, tuples, bytes/str, ints, bools, None, the memo, the numpy array
# constructors through GLOBAL/STACK_GLOBAL + REDUCE + BUILD). Dicts, sets, object creation
# (INST, OBJ, NEWOBJ), extensions, persistent ids and out-of-band buffers are refused.
_OPCODES_ALLOWED = frozenset(
    "PROTO FRAME STOP MARK POP POP_MARK DUP "
    "EMPTY_LIST LIST APPEND APPENDS EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3 "
    "BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8 STRING BINSTRING SHORT_BINSTRING "
    "UNICODE BINUNICODE SHORT_BINUNICODE BINUNICODE8 "
    "NEWTRUE NEWFALSE NONE INT BININT BININT1 BININT2 LONG LONG1 LONG4 FLOAT BINFLOAT "
    "GLOBAL STACK_GLOBAL REDUCE BUILD "
    "PUT BINPUT LONG_BINPUT MEMOIZE GET BINGET LONG_BINGET".split()
)
_MEMO_PUT = frozenset(("PUT", "BINPUT", "LONG_BINPUT"))
#: opcodes allowed per file: a floor plus one per 32 bytes. A real bin spends kilobytes of
#: image per ~30 opcodes; the bound caps what a file of tiny opcodes (each an empty list,
#: ~60 bytes) can make the unpickler build at about twice the file's size.
_MAX_OPS_FLOOR = 200_000
_BYTES_PER_OP = 32


_OPS = {ord(op.code): op for op in pickletools.opcodes}  # opcode byte -> descriptor (metadata only)
_COUNT_BYTES = {
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}


def _scan(data: bytes) -> None:
    """Walk the opcode stream before anything is built, reading only lengths and memo
    indices: every length field (BINBYTES8, BINUNICODE8, BYTEARRAY8, LONG4, BINSTRING, FRAME,
    ...) must fit in the bytes that remain, so nothing is ever allocated for a claimed length;
    memo indices must come in sequence (the C unpickler sizes its memo by the largest index);
    only the opcodes a bin needs are allowed; at most ``_MAX_OPS_FLOOR + len/32`` opcodes.
    Iterative, no recursion. Raises ``_Refused`` or ``ValueError``."""
    size = len(data)
    limit = _MAX_OPS_FLOOR + size // _BYTES_PER_OP
    pos = n = 0
    while True:
        if pos >= size:
            raise ValueError("pickle data ends before its STOP opcode")
        at = pos
        op = _OPS.get(data[pos])
        if op is None:
            raise ValueError(f"unknown opcode 0x{data[pos]:02x} at byte {at}")
        name = op.name
        if name not in _OPCODES_ALLOWED:
            raise _Refused(
                f"refused opcode {name} at byte {at}: a verification .bin holds only lists, tuples, "
                "bytes, bools and numpy uint8 arrays"
            )
        pos += 1
        value = None
        if op.arg is not None:
            k = op.arg.n
            if k >= 0:  # fixed width
                if pos + k > size:
                    raise ValueError(f"{name} at byte {at}: pickle data was truncated")
                value = int.from_bytes(data[pos : pos + k], "little")
                pos += k
            elif k == pickletools.UP_TO_NEWLINE:  # text argument(s); GLOBAL has two lines
                for _ in range(2 if name == "GLOBAL" else 1):
                    end = data.find(b"\n", pos)
                    if end < 0:
                        raise ValueError(f"{name} at byte {at}: no newline")
                    if name == "PUT":
                        text = data[pos:end]
                        if not (0 < len(text) <= 19 and text.isdigit()):
                            raise ValueError(f"PUT at byte {at}: bad memo index {text[:20]!r}")
                        value = int(text)
                    pos = end + 1
            else:  # a count, then that many bytes
                width, signed = _COUNT_BYTES[k]
                if pos + width > size:
                    raise ValueError(f"{name} at byte {at}: pickle data was truncated")
                count = int.from_bytes(data[pos : pos + width], "little", signed=signed)
                pos += width
                if not 0 <= count <= size - pos:
                    raise ValueError(f"{name} at byte {at} claims {count} bytes, only {size - pos} follow")
                pos += count
        if name in _MEMO_PUT and value > n:
            raise _Refused(f"memo index {value} at byte {at} is out of sequence (opcode {n})")
        if name == "FRAME" and value > size - pos:
            raise ValueError(f"FRAME at byte {at} claims {value} bytes, only {size - pos} follow")
        if name == "STOP":
            return
        n += 1
        if n > limit:
            raise _Refused(f"more than {limit} opcodes in {size} bytes: not a verification .bin")


class _Budget:
    """Bytes the constructors and the conversion to ``bytes`` may copy in one load. A real
    bin copies each image at most three times (``_codecs.encode``, numpy's BUILD, ``tobytes``),
    so the limit is three times the file; a buffer referenced many times through the memo
    cannot be copied many times."""

    def __init__(self, limit: int):
        self.left = limit

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise _Refused("the pickle builds more array data than the file holds (one buffer reused many times)")


class _BinArray(np.ndarray):
    """The array ``_reconstruct`` returns; its ``__setstate__`` (pickle BUILD) checks the
    state before numpy copies the raw bytes: uint8/bool dtype, shape of non-negative ints
    whose product is the raw length, bytes raw data, within the load's budget."""

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("numpy array state refused: not (version, shape, dtype, fortran, data)")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(dtype, np.dtype) or dtype not in (np.uint8, np.bool_):
            raise _Refused("numpy array state refused: only uint8 and bool arrays are allowed")
        if not isinstance(raw, bytes) or not isinstance(fortran, (bool, int)):
            raise _Refused("numpy array state refused: raw data must be bytes")
        if not isinstance(shape, tuple) or len(shape) > 32 or not all(type(d) is int and d >= 0 for d in shape):
            raise _Refused("numpy array state refused: bad shape")
        size = 1
        for d in shape:
            size *= d
            if size > len(raw):
                break
        if size != len(raw):
            raise _Refused(f"numpy array state refused: shape {shape} does not match {len(raw)} bytes")
        self._budget.take(len(raw))
        super().__setstate__(state)


def _safe_reconstruct(ctx, subtype, shape, dtype_code):
    # numpy's array pickles: _reconstruct(ndarray, (0,), b'b'), then BUILD with the state
    # (version, shape, dtype, fortran, raw bytes); the dtype there is built by _safe_dtype.
    if subtype is not ctx.token or not isinstance(shape, tuple) or shape != (0,):
        raise _Refused("numpy _reconstruct called with unexpected arguments")
    arr = _BinArray((0,), dtype=np.int8)
    arr._budget = ctx.budget
    return arr


_ALLOWED_DTYPES = {"u1", "|u1", "uint8", "B", "b1", "|b1", "bool", "?"}


def _safe_dtype(ctx, spec, align=False, copy=False):
    if isinstance(spec, bytes):
        spec = spec.decode("ascii", "replace")
    if not isinstance(spec, str) or spec not in _ALLOWED_DTYPES:
        raise _Refused(f"numpy dtype {_describe(spec)} refused (only uint8 and bool arrays are allowed)")
    return np.dtype(spec)


def _safe_scalar(ctx, dtype, data=None):
    # numpy scalars (np.bool_ in an issame list): scalar(dtype('bool'), b'\x01')
    if not isinstance(dtype, np.dtype) or dtype != np.bool_ or not isinstance(data, bytes) or len(data) != 1:
        raise _Refused("numpy scalar refused (only numpy bool scalars are allowed)")
    return np.bool_(data != b"\x00")


def _safe_encode(ctx, text, encoding="utf-8"):
    # Python 3 writes bytes under protocols 0-2 as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode called with unexpected arguments")
    ctx.budget.take(len(text))
    return text.encode("latin1")


def _safe_frombuffer(ctx, buf, dtype, shape, order="C", axis_order=None):
    # numpy's protocol-5 array pickles: _frombuffer(raw bytes, dtype, shape, order), the
    # buffer in-band as BINBYTES8 (read-only arrays) or BYTEARRAY8 (writable ones).
    if isinstance(buf, pickle.PickleBuffer):
        buf = bytes(buf.raw())
    if (
        not isinstance(buf, (bytes, bytearray))
        or not isinstance(dtype, np.dtype)
        or dtype not in (np.uint8, np.bool_)
        or not isinstance(shape, tuple)
        or len(shape) > 32
        or not all(type(d) is int and d >= 0 for d in shape)
        or order not in ("C", "F")
        or axis_order is not None
    ):
        raise _Refused("numpy _frombuffer called with unexpected arguments")
    ctx.budget.take(len(buf))
    return np.frombuffer(bytes(buf), dtype=dtype).reshape(shape, order=order)


_NDARRAY = ("numpy", "ndarray")
_SAFE_CALLS = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy", "dtype"): _safe_dtype,
    ("numpy.core.multiarray", "scalar"): _safe_scalar,
    ("numpy._core.multiarray", "scalar"): _safe_scalar,
    ("_codecs", "encode"): _safe_encode,
}


class _LoadContext:
    """Per-load state the constructors share: the ``numpy.ndarray`` token and the budget."""

    def __init__(self, budget: _Budget):
        self.token = object()  # fresh per load: nothing a file does to it outlives the load
        self.budget = budget


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of ``_SAFE_CALLS`` (as checking wrappers) and
    ``numpy.ndarray`` (as an inert token only ``_reconstruct`` accepts); refuses the rest."""

    def __init__(self, file, budget: _Budget, **kw):
        super().__init__(file, **kw)
        self._ctx = _LoadContext(budget)

    def find_class(self, module, name):
        if (module, name) == _NDARRAY:
            return self._ctx.token
        fn = _SAFE_CALLS.get((module, name))
        if fn is None:
            raise _Refused(
                f"refused global {_clip(str(module), 80)}.{_clip(str(name), 80)}: a verification .bin may hold "
                "only lists, tuples, bytes, bools and numpy uint8 arrays; constructing anything else could run code"
            )
        ctx = self._ctx

        def guarded(*args):  # a fresh function per lookup, so BUILD cannot alter shared state
            return fn(ctx, *args)

        return guarded

    def persistent_load(self, pid):
        raise _Refused("refused persistent id: not allowed in a verification .bin")


def _clip(text: str, n: int = 200) -> str:
    """``text`` on one line, at most ``n`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _describe(x) -> str:
    """A short description of an untrusted value for messages: never a recursive repr, never
    the decimal digits of a huge int."""
    if isinstance(x, (bool, np.bool_)) or x is None:
        return repr(x)
    if isinstance(x, int):
        return repr(x) if x.bit_length() <= 64 else f"int of {x.bit_length()} bits"
    if isinstance(x, float):
        return repr(x)
    if isinstance(x, np.ndarray):
        return f"numpy array {x.dtype}{list(x.shape)}"
    if isinstance(x, (str, bytes, bytearray)):
        return f"{type(x).__name__} {x[:20]!r}{'...' if len(x) > 20 else ''} ({len(x)} long)"
    if isinstance(x, (list, tuple)):
        return f"{type(x).__name__} of {len(x)} items"
    return type(x).__name__


def _as_bytes(x, where: str, copied: dict, budget: _Budget) -> bytes:
    """Encoded image bytes of a bin element: ``bytes``, ``bytearray`` or a C-contiguous numpy
    uint8 array of any shape (``cv2.imencode`` returns ``(N, 1)``), read in memory order as
    ``numpy.frombuffer`` (insightface ``mx.image.imdecode``) does."""
    if isinstance(x, bytes):
        return x
    if isinstance(x, bytearray):
        return bytes(x)
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.flags.c_contiguous:
        got = copied.get(id(x))
        if got is None:  # the same array object referenced twice is copied once
            budget.take(x.nbytes)
            got = copied[id(x)] = (x, x.tobytes())
        return got[1]
    if isinstance(x, np.ndarray) and x.dtype == np.uint8:
        raise EvalBinError(f"{where}: numpy uint8 array {list(x.shape)} is not C-contiguous (not encoded image bytes)")
    raise EvalBinError(f"{where}: expected encoded image bytes or a numpy uint8 array, found {_describe(x)}")


def _as_bool(x, where: str) -> bool:
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if type(x) is int and x in (0, 1):
        return bool(x)
    raise EvalBinError(f"{where}: expected a bool (same/different), found {_describe(x)}")


def loads_bin(data: bytes, name: str = "<bytes>") -> tuple[list[bytes], list[bool]]:
    """Parse the bytes of a verification ``.bin``; see :func:`load_bin`."""
    budget = _Budget(3 * len(data) + 65536)
    try:
        _scan(data)
        obj = _RestrictedUnpickler(io.BytesIO(data), budget, encoding="bytes").load()
    except _Refused as e:
        raise EvalBinError(f"{name}: refused to load: {_clip(str(e))}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        OverflowError,
        MemoryError,
        RecursionError,
    ) as e:
        raise EvalBinError(f"{name}: not a readable pickle: {type(e).__name__}: {_clip(str(e))}") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise EvalBinError(f"{name}: expected a pickled pair (bins, issame_list), found {_describe(obj)}")
    raw_bins, raw_issame = obj
    if not isinstance(raw_bins, (list, tuple)):
        raise EvalBinError(f"{name}: bins must be a list, found {_describe(raw_bins)}")
    if isinstance(raw_issame, np.ndarray) and raw_issame.ndim == 1:
        raw_issame = list(raw_issame)
    if not isinstance(raw_issame, (list, tuple)):
        raise EvalBinError(f"{name}: issame_list must be a list, found {_describe(raw_issame)}")
    copied: dict = {}
    try:
        bins = [
            _as_bytes(x, f"{name}: image record {i} (pair {i // 2}, {'ab'[i % 2]})", copied, budget)
            for i, x in enumerate(raw_bins)
        ]
    except _Refused as e:
        raise EvalBinError(f"{name}: refused to load: {e}") from None
    del copied
    issame = [_as_bool(x, f"{name}: issame_list[{i}]") for i, x in enumerate(raw_issame)]
    if len(bins) != 2 * len(issame):
        raise EvalBinError(f"{name}: {len(bins)} images for {len(issame)} pairs; a bin holds exactly 2 images per pair")
    return bins, issame


def load_bin(path: str | os.PathLike) -> tuple[list[bytes], list[bool]]:
    """Read a verification ``.bin`` safely.

    Equivalent to insightface ``verification.load_bin``'s ``pickle.load(f, encoding='bytes')``
    but with a restricted unpickler: only lists, tuples, bytes, bools, numpy ``uint8``/bool
    arrays (any shape, e.g. ``cv2.imencode``'s ``(N, 1)``; read as their C-order bytes) and
    numpy bool scalars are constructed; any other global (a ``__reduce__`` that
    names a function, ``os.system``, ...) is refused before it is called.

    Args:
        path: the ``.bin`` file (Python 2 or 3 pickle, any protocol).
    Returns:
        ``(bins, issame)``: ``bins`` = list of 2*P encoded images (``bytes``, as stored:
        JPEG/PNG, decode them to get pixels) in pair order a0, b0, a1, b1, ...; ``issame`` =
        list of P Python ``bool`` (True: both images show the same person).
    Raises:
        EvalBinError: unreadable file, refused global or opcode, a length, memo index or
            copy volume the file cannot hold, wrong structure (names file and record), or
            image/flag counts that do not match. Always one line naming the file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise EvalBinError(f"{path}: cannot read: {e.strerror or e}") from None
    return loads_bin(data, str(path))


# --------------------------------------------------------------------------- writing


def dumps_bin(bins: Sequence[bytes], issame: Sequence[bool], protocol: int = DEFAULT_PROTOCOL) -> bytes:
    """Serialise ``(bins, issame_list)`` as insightface's ``lfw2pack``/``build_eval_pack`` do:
    ``pickle.dumps((list_of_bytes, list_of_bool), protocol)``. See :func:`save_bin`."""
    b = [bytes(x) for x in bins]
    s = [bool(x) for x in issame]
    if len(b) != 2 * len(s):
        raise ValueError(f"{len(b)} images for {len(s)} pairs; a bin holds exactly 2 images per pair")
    if not 2 <= protocol <= pickle.HIGHEST_PROTOCOL:
        raise ValueError(f"pickle protocol {protocol} not in 2..{pickle.HIGHEST_PROTOCOL}")
    return pickle.dumps((b, s), protocol=protocol)


def save_bin(
    path: str | os.PathLike, bins: Sequence[bytes], issame: Sequence[bool], protocol: int = DEFAULT_PROTOCOL
) -> None:
    """Write a verification ``.bin`` atomically (temporary file + rename).

    Args:
        path: output file.
        bins: 2*P encoded images (``bytes``), pair order a0, b0, a1, b1, ...
        issame: P bools.
        protocol: pickle protocol: 2 for Python 2 readers (old mxnet trainers), 4 (default,
            Python >= 3.4), 5 (Python >= 3.8).
    Raises:
        ValueError: counts do not match or unsupported protocol. OSError: cannot write.
    """
    data = dumps_bin(bins, issame, protocol)
    f = AtomicFile(path, "wb")
    try:
        f.write(data)
        f.commit()
    except BaseException:
        f.abort()
        raise
