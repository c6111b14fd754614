"""rejects.tsv fields stay one field whatever a file name holds (issue 8 item 11)."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from facekit.formats.tsv import escape, unescape


@settings(derandomize=True, max_examples=300)
@given(st.binary(max_size=40))
def test_escape_round_trips_any_file_name(raw):
    name = os.fsdecode(raw)  # what os.listdir gives for these bytes
    field = escape(name)
    assert not any(c in field for c in "\t\n\r")
    field.encode("utf-8")  # always writable as UTF-8
    assert os.fsencode(unescape(field)) == raw


def test_escape_examples():
    assert escape("plain/name.jpg") == "plain/name.jpg"
    assert escape("a\tb\nc\rd\\e") == "a\\tb\\nc\\rd\\\\e"
    assert escape(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"
    assert unescape("literal\\\\x41") == "literal\\x41"
