"""Text fields that stay one field: the escaping of facekit's tab-separated outputs.

``rejects.tsv`` (and other facekit TSV files) escape each field so that a name holding a tab,
a newline or bytes that are not UTF-8 still gives one line of the right number of fields:
``\\`` -> ``\\\\``, TAB -> ``\\t``, LF -> ``\\n``, CR -> ``\\r``, and each byte of a file name
that is not UTF-8 (Python's ``surrogateescape`` form, as ``os.listdir`` returns it) ->
``\\xHH``. :func:`unescape` reverses it (``os.fsencode(unescape(f))`` gives the name's bytes).
"""

from __future__ import annotations

import re

_ESC = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_NEEDS = re.compile(r"[\\\t\n\r\udc80-\udcff]")
_UNESC = re.compile(r"\\(\\|t|n|r|x[0-9a-fA-F]{2})")


def _one(m: re.Match) -> str:
    c = m.group(0)
    return _ESC.get(c) or f"\\x{ord(c) - 0xDC00:02x}"


def escape(field: str) -> str:
    """One TSV field: see the module doc. Plain text is returned unchanged."""
    return _NEEDS.sub(_one, field) if _NEEDS.search(field) else field


def _back(m: re.Match) -> str:
    t = m.group(1)
    if t[0] == "x":
        return chr(0xDC00 + int(t[1:], 16))
    return {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}[t]


def unescape(field: str) -> str:
    """The text :func:`escape` was given (non-UTF-8 bytes back in surrogateescape form)."""
    return _UNESC.sub(_back, field)
