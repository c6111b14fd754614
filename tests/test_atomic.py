"""A failed run leaves the previous outputs as they were; no half file looks whole."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from conftest import link_aligned_112, write_config
from facekit.atomic import AtomicDir
from facekit.config import load_config
from facekit.engine import run


@pytest.fixture
def aligned_cfg(tmp_path, data_dir):
    root = tmp_path / "root"
    link_aligned_112(data_dir, root)
    return write_config(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: root}
        sinks: [{plugin: mxrec, path: rec}, {plugin: folders, path: faces}]
        """,
    )


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_failing_sink_keeps_previous_output(tmp_path, aligned_cfg, monkeypatch):
    spec = load_config(aligned_cfg)
    run(spec, progress=False)
    before = _snapshot(tmp_path / "out")
    assert "rec/train.rec" in before and "rejects.tsv" in before

    from facekit.plugins import get_registry

    sink_cls = get_registry().get("sink", "folders")
    calls = {"n": 0}
    orig = sink_cls.write

    def flaky(self, s):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        return orig(self, s)

    monkeypatch.setattr(sink_cls, "write", flaky)
    with pytest.raises(OSError):
        run(load_config(aligned_cfg), progress=False)
    assert _snapshot(tmp_path / "out") == before
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if "partial" in p.name]
    assert leftovers == []


def test_killed_run_keeps_previous_output(tmp_path, aligned_cfg):
    """SIGKILL in the middle of a run: the previous outputs are intact and complete."""
    run(load_config(aligned_cfg), progress=False)
    before = _snapshot(tmp_path / "out")
    slow = tmp_path / "slow.py"
    slow.write_text(
        "import sys, time\n"
        "from facekit.plugins import get_registry\n"
        "from facekit.config import load_config\n"
        "from facekit.engine import run\n"
        "cls = get_registry().get('sink', 'mxrec')\n"
        "orig = cls.write_many\n"
        "def write_many(self, s):\n"
        "    orig(self, s); self._flush(); print('wrote', flush=True); time.sleep(30)\n"
        "cls.write_many = write_many\n"
        "run(load_config(sys.argv[1]), progress=False)\n"
    )
    p = subprocess.Popen([sys.executable, str(slow), str(aligned_cfg)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "wrote"
    p.send_signal(signal.SIGKILL)
    p.wait()
    after = {k: v for k, v in _snapshot(tmp_path / "out").items() if ".partial" not in k}
    assert after == before


def test_refuses_to_replace_foreign_folder(tmp_path):
    d = tmp_path / "precious"
    d.mkdir()
    (d / "thesis.tex").write_text("do not lose me")
    with pytest.raises(FileExistsError, match="not written by facekit"):
        AtomicDir(d)
    assert (d / "thesis.tex").read_text() == "do not lose me"
