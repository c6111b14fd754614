"""Follow-ups of issue 30 items 9 and 2: the folders source names an identity by the NFC
form of its folder's name, so an ``exclude:`` list written in NFD (as macOS writes ``José``)
must still exclude it; the mxrec sink's file names must fit 255 bytes as the folders sink's
do."""

from __future__ import annotations

import os
import unicodedata

import pyarrow.parquet as pq

from conftest import write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run


def test_an_nfd_exclude_list_excludes_the_nfc_identity(tmp_path, data_dir):
    nfc, nfd = unicodedata.normalize("NFC", "José"), unicodedata.normalize("NFD", "José")
    crops = sorted((data_dir / "aligned_identities" / "kz_celebs_112").glob("*/*.png"))
    for i, name in enumerate([nfc, "Asel"]):
        (tmp_path / "faces" / name).mkdir(parents=True)
        for k in range(2):
            os.symlink(crops[2 * i + k], tmp_path / "faces" / name / f"{k}.png")
    (tmp_path / "exclude.txt").write_text(nfd + "\n")
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: faces, exclude: exclude.txt}
        sinks: [{plugin: folders, path: f}]
        """)
    s = run(load_config(cfg), progress=False)
    assert s.faces_kept == 2 and s.rejects == {"excluded": 2}
    rows = pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()
    assert [(r["identity"], r["reason"]) for r in rows if r["reason"]] == [(nfc, "excluded")] * 2


def test_mxrec_sink_prefix_too_long_is_refused(tmp_path):
    """issue 30 item 2 (the mxrec sink): a prefix whose files (``<prefix>.identities.tsv``,
    ``<prefix>-00000-of-00002.rec``) would pass 255 bytes is refused by validate, naming the
    line; a prefix that fits is accepted."""
    from conftest import config_error

    (tmp_path / "faces" / "a").mkdir(parents=True)
    base = """
        output: out
        source: {plugin: folders, root: faces}
        sinks:
          - {plugin: mxrec, path: rec, prefix: "%s", shards: %d}
        """
    msg = config_error(tmp_path, base % ("p" * 241, 1))
    assert "pipeline.yaml:5: sinks[0] (mxrec):" in msg and "prefix is 241 bytes" in msg, msg
    msg = config_error(tmp_path, base % ("p" * 237, 2))
    assert "'<prefix>-00000-of-00002.rec'" in msg and "at most 236" in msg, msg
    load_config(write_config(tmp_path, base % ("p" * 240, 1), "ok.yaml"))


def test_a_publication_refuses_a_path_outside_its_output(tmp_path, monkeypatch):
    """A sink given a relative path (or one outside the run's output) is refused in one line
    instead of staging ``.NAME.X.partial`` folders in the working directory."""
    import pytest

    from facekit.errors import FacekitError
    from facekit.pipeline.publish import Publication

    monkeypatch.chdir(tmp_path)
    pub = Publication(tmp_path / "out")
    for bad in ("rec", tmp_path / "elsewhere" / "rec", tmp_path / "out"):
        with pytest.raises(FacekitError, match="not inside the run's output folder"):
            pub.dir(bad)
        with pytest.raises(FacekitError, match="not inside the run's output folder"):
            pub.file(bad)
    assert not list(tmp_path.glob(".*.partial"))
    staged = pub.dir(tmp_path / "out" / "rec")
    assert staged.staging.parent == tmp_path / "out"
    pub.abort()
