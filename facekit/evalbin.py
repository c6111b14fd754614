"""Verification ``.bin`` files: ``pickle((bins, issame_list))``, read safely, written atomically.

Format (``shared/docs/FORMATS.md`` section 3; insightface ``recognition/_datasets_/lfw2pack.py``,
``build_eval_pack.py``, ``eval/verification.py`` ``load_bin``): ``bins`` = 2*P encoded
images in pair order a0, b0, a1, b1, ...; ``issame_list`` = P bools. The public bins were
written by Python 2 and are read with ``encoding='bytes'``; their elements are ``bytes`` or
numpy ``uint8`` arrays of encoded bytes.

Unpickling runs code named by the file. :func:`load_bin` uses a restricted unpickler that
constructs only what a bin needs (lists, tuples, bytes, bools, numpy ``uint8``/``bool``
arrays and ``bool`` scalars) and refuses every other global before anything is called.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Sequence

import numpy as np

from facekit.atomic import AtomicFile
from facekit.errors import FacekitError

#: pickle protocol written by default: readable by Python >= 3.4 (insightface's scripts
#: write ``pickle.HIGHEST_PROTOCOL``, which is 4 on Python 3.4-3.7 and 5 from 3.8).
DEFAULT_PROTOCOL = 4


class EvalBinError(FacekitError):
    """A verification ``.bin`` is malformed or unsafe; the message names the file and record."""


# --------------------------------------------------------------------------- reading


class _Refused(pickle.UnpicklingError):
    """The pickle asks for something a verification .bin never holds."""


def _safe_reconstruct(token, subtype, shape, dtype_code):
    # numpy's array pickles: _reconstruct(ndarray, (0,), b'b'), then BUILD with the state
    # (version, shape, dtype, fortran, raw bytes); the dtype there is built by _safe_dtype.
    if subtype is not token or tuple(shape) != (0,):
        raise _Refused("numpy _reconstruct called with unexpected arguments")
    return np.ndarray((0,), dtype=np.int8)


_ALLOWED_DTYPES = {"u1", "|u1", "uint8", "B", "b1", "|b1", "bool", "?"}


def _safe_dtype(token, spec, align=False, copy=False):
    if isinstance(spec, bytes):
        spec = spec.decode("ascii", "replace")
    if not isinstance(spec, str) or spec not in _ALLOWED_DTYPES:
        raise _Refused(f"numpy dtype {spec!r} refused (only uint8 and bool arrays are allowed)")
    return np.dtype(spec)


def _safe_scalar(token, dtype, data=None):
    # numpy scalars (np.bool_ in an issame list): scalar(dtype('bool'), b'\x01')
    if not isinstance(dtype, np.dtype) or dtype != np.bool_ or not isinstance(data, bytes) or len(data) != 1:
        raise _Refused("numpy scalar refused (only numpy bool scalars are allowed)")
    return np.bool_(data != b"\x00")


def _safe_encode(token, text, encoding="utf-8"):
    # Python 3 writes bytes under protocols 0-2 as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode called with unexpected arguments")
    return text.encode("latin1")


def _safe_frombuffer(token, buf, dtype, shape, order="C", axis_order=None):
    # numpy's protocol-5 array pickles: _frombuffer(raw bytes, dtype, shape, order).
    if isinstance(buf, pickle.PickleBuffer):
        buf = bytes(buf.raw())
    if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, np.dtype) or len(tuple(shape)) != 1:
        raise _Refused("numpy _frombuffer called with unexpected arguments")
    return np.frombuffer(bytes(buf), dtype=dtype).reshape(tuple(shape))


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


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals of ``_SAFE_CALLS`` (as checking wrappers) and
    ``numpy.ndarray`` (as an inert token only ``_reconstruct`` accepts); refuses the rest."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self._ndarray = object()  # fresh per load: nothing a file does to it outlives the load

    def find_class(self, module, name):
        if (module, name) == _NDARRAY:
            return self._ndarray
        fn = _SAFE_CALLS.get((module, name))
        if fn is None:
            raise _Refused(
                f"refused global {module}.{name}: a verification .bin may hold only lists, tuples, "
                "bytes, bools and numpy uint8 arrays; constructing anything else could run code"
            )
        token = self._ndarray

        def guarded(*args):  # a fresh function per lookup, so BUILD cannot alter shared state
            return fn(token, *args)

        return guarded

    def persistent_load(self, pid):
        raise _Refused("refused persistent id: not allowed in a verification .bin")


def _as_bytes(x, where: str) -> bytes:
    if isinstance(x, bytes):
        return x
    if isinstance(x, bytearray):
        return bytes(x)
    if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 1:
        return x.tobytes()
    desc = f"numpy array {x.dtype}{list(x.shape)}" if isinstance(x, np.ndarray) else type(x).__name__
    raise EvalBinError(f"{where}: expected encoded image bytes or a 1-d numpy uint8 array, found {desc}")


def _as_bool(x, where: str) -> bool:
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, int) and x in (0, 1):
        return bool(x)
    raise EvalBinError(f"{where}: expected a bool (same/different), found {type(x).__name__} {x!r:.40}")


def loads_bin(data: bytes, name: str = "<bytes>") -> tuple[list[bytes], list[bool]]:
    """Parse the bytes of a verification ``.bin``; see :func:`load_bin`."""
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as e:
        raise EvalBinError(f"{name}: refused to load: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise EvalBinError(f"{name}: not a readable pickle: {type(e).__name__}: {e}") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise EvalBinError(f"{name}: expected a pickled pair (bins, issame_list), found {type(obj).__name__}")
    raw_bins, raw_issame = obj
    if not isinstance(raw_bins, (list, tuple)):
        raise EvalBinError(f"{name}: bins must be a list, found {type(raw_bins).__name__}")
    if isinstance(raw_issame, np.ndarray) and raw_issame.ndim == 1:
        raw_issame = list(raw_issame)
    if not isinstance(raw_issame, (list, tuple)):
        raise EvalBinError(f"{name}: issame_list must be a list, found {type(raw_issame).__name__}")
    bins = [_as_bytes(x, f"{name}: image record {i} (pair {i // 2}, {'ab'[i % 2]})") for i, x in enumerate(raw_bins)]
    issame = [_as_bool(x, f"{name}: issame_list[{i}]") for i, x in enumerate(raw_issame)]
    if len(bins) != 2 * len(issame):
        raise EvalBinError(f"{name}: {len(bins)} images for {len(issame)} pairs; a bin holds exactly 2 images per pair")
    return bins, issame


def load_bin(path: str | os.PathLike) -> tuple[list[bytes], list[bool]]:
    """Read a verification ``.bin`` safely.

    Equivalent to insightface ``verification.load_bin``'s ``pickle.load(f, encoding='bytes')``
    but with a restricted unpickler: only lists, tuples, bytes, bools, numpy ``uint8``/bool
    arrays and numpy bool scalars are constructed; any other global (a ``__reduce__`` that
    names a function, ``os.system``, ...) is refused before it is called.

    Args:
        path: the ``.bin`` file (Python 2 or 3 pickle, any protocol).
    Returns:
        ``(bins, issame)``: ``bins`` = list of 2*P encoded images (``bytes``, as stored:
        JPEG/PNG, decode them to get pixels) in pair order a0, b0, a1, b1, ...; ``issame`` =
        list of P Python ``bool`` (True: both images show the same person).
    Raises:
        EvalBinError: unreadable file, refused global, wrong structure (names file and
            record), or image/flag counts that do not match.
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
