"""A disk that fills up while a run writes (issue 30 item 4): the run fails with the first
error's one line (the sink and its path, or the run's own file), exit code 1, and its abort
runs every cleanup, so no ``.partial`` staging file is left behind. The disk is simulated:
the sinks' writes and the ``rejects.tsv`` file raise ``OSError(ENOSPC)`` (monkeypatched,
in this process)."""

from __future__ import annotations

import builtins
import errno
import logging
import os
import signal
from pathlib import Path

import pytest

from conftest import link_aligned_112, write_config
from facekit.errors import FacekitError
from facekit.pipeline import publish
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.pipeline.publish import Publication
from facekit.plugins import get_registry

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def cfg(tmp_path, data_dir):
    """Eight aligned crops and one file that is not an image (a reject: a row of
    ``rejects.tsv``), into an mxrec and a folders sink."""
    root = link_aligned_112(data_dir, tmp_path / "root")
    (sorted(root.iterdir())[0] / "broken.jpg").write_bytes(b"not a jpeg")
    return write_config(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: root}
        sinks: [{plugin: mxrec, path: rec}, {plugin: folders, path: faces}]
        """,
    )


def _partials(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith((".partial", ".old")))


class _FullDisk:
    """A text file on a full disk: its buffered data never reaches the disk, so ``close``
    (the last flush) fails; with ``writes`` set, the write after that many fails too."""

    def __init__(self, f, writes=None):
        self._f, self._writes = f, writes

    def write(self, text):
        if self._writes is not None:
            if self._writes <= 0:
                raise OSError(ENOSPC.errno, ENOSPC.strerror)
            self._writes -= 1
        return self._f.write(text)

    def close(self):
        self._f.close()
        raise OSError(ENOSPC.errno, ENOSPC.strerror)

    def __getattr__(self, name):
        return getattr(self._f, name)


def _full_rejects(monkeypatch, writes=None) -> None:
    """``rejects.tsv`` (its staging file) is written on a full disk."""
    real = builtins.open

    def fake(file, *args, **kwargs):
        f = real(file, *args, **kwargs)
        name = os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
        if name.startswith(".rejects.tsv.") and name.endswith(".partial"):
            return _FullDisk(f, writes)
        return f

    monkeypatch.setattr(builtins, "open", fake)


def _failing_sink(monkeypatch, plugin: str, method: str, at: int = 2) -> None:
    """The ``plugin`` sink's ``method`` raises ENOSPC on its ``at``-th call."""
    cls = get_registry().get("sink", plugin)
    orig = getattr(cls, method)
    calls = {"n": 0}

    def failing(self, *args):
        calls["n"] += 1
        if calls["n"] == at:
            raise OSError(ENOSPC.errno, ENOSPC.strerror)
        return orig(self, *args)

    monkeypatch.setattr(cls, method, failing)


def _cli_run(cfg: Path, capsys) -> tuple[int, str]:
    """``facekit run -q cfg`` in this process: (exit code, stderr)."""
    from facekit.cli.main import main

    term = signal.getsignal(signal.SIGTERM)  # the command sets its own SIGTERM handler
    try:
        with pytest.raises(SystemExit) as e:
            main(["run", "-q", str(cfg)], prog_name="facekit")
    finally:
        signal.signal(signal.SIGTERM, term)
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "plugin,method,where,path",
    [("mxrec", "write_many", "sinks[0] (mxrec)", "rec"), ("folders", "write", "sinks[1] (folders)", "faces")],
)
def test_disk_full_in_a_sink_names_it_and_leaves_no_partial(tmp_path, cfg, monkeypatch, capsys, plugin, method, where, path):
    """Issue 30 item 4: a sink's write fails with ENOSPC, then so does the close of
    ``rejects.tsv`` in the abort: the message is the sink's (its name and path), exit 1,
    and the publication's abort still removes every staging file."""
    _failing_sink(monkeypatch, plugin, method)
    _full_rejects(monkeypatch)
    code, err = _cli_run(cfg, capsys)
    out = tmp_path / "out"
    assert code == 1, err
    assert err.strip().splitlines() == [
        f"error: {where}: writing {out / path}: No space left on device (disk full?)"
    ], err
    assert _partials(out) == []
    assert not (out / path).exists() and not (out / "rejects.tsv").exists()


def test_disk_full_on_rejects_tsv_names_it_and_leaves_no_partial(tmp_path, cfg, monkeypatch, capsys):
    """Issue 30 item 4: ``rejects.tsv``'s own write fails with ENOSPC (its first reject
    row), and its close in the abort fails again: the message names ``rejects.tsv``, exit 1,
    every staging file is removed."""
    _full_rejects(monkeypatch, writes=1)  # the header is written, the first reject row is not
    code, err = _cli_run(cfg, capsys)
    out = tmp_path / "out"
    assert code == 1, err
    assert err.strip().splitlines() == [f"error: {out / 'rejects.tsv'}: No space left on device (disk full?)"], err
    assert _partials(out) == []


def test_abort_runs_every_cleanup_after_one_fails(tmp_path, cfg, monkeypatch, caplog):
    """Issue 30 item 4: cleanups that fail in the abort (a sink's ``abort``, the close of
    ``rejects.tsv``, one staging folder that cannot be removed) neither replace the run's
    error nor stop the cleanups after them: the other staging files are removed and the
    one left is named in a warning."""
    _failing_sink(monkeypatch, "folders", "write")
    _full_rejects(monkeypatch)
    mx = get_registry().get("sink", "mxrec")

    def abort(self):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(mx, "abort", abort)
    real_remove = publish._remove
    stuck = []

    def remove(p):
        if p.name.startswith(".rec.") and not stuck:
            stuck.append(p)
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(p))
        real_remove(p)

    monkeypatch.setattr(publish, "_remove", remove)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="facekit"), pytest.raises(FacekitError) as e:
        run(load_config(cfg), progress=False)
    assert str(e.value) == f"sinks[1] (folders): writing {out / 'faces'}: No space left on device (disk full?)"
    assert [str(out / p) for p in _partials(out)] == [str(p) for p in stuck]  # only the one that could not go
    assert any(str(stuck[0]) in r.getMessage() and "next run removes it" in r.getMessage() for r in caplog.records)


def test_publication_abort_removes_every_staging_place_then_raises(tmp_path, monkeypatch):
    """Issue 30 item 4: one staging place that cannot be removed does not keep the abort
    from removing the others; its error (naming it) is raised after."""
    pub = Publication(tmp_path)
    a = pub.dir(tmp_path / "a")
    b = pub.file(tmp_path / "b.tsv")
    b.write_text("x")
    c = pub.dir(tmp_path / "c")
    real_remove = publish._remove

    def remove(p):
        if p == a.staging:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(p))
        real_remove(p)

    monkeypatch.setattr(publish, "_remove", remove)
    with pytest.raises(PermissionError) as e:
        pub.abort()
    assert e.value.filename == str(a.staging)
    assert a.staging.exists() and not b.exists() and not c.staging.exists()
