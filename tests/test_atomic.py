"""A failed run leaves the previous outputs as they were; no half file looks whole; the
outputs of a run are published as one unit (issue 8 items 16, 17)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from conftest import link_aligned_112, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.errors import FacekitError
from facekit.pipeline.publish import Publication, recover


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


def _snapshot(folder, keep_state=False):
    """Every file under ``folder`` -> bytes; ``summary.json`` without its timing and shard
    bookkeeping (a resumed run reuses shards)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if not p.is_file() or (not keep_state and rel.startswith(".facekit")):
            continue
        data = p.read_bytes()
        if p.name == "summary.json":
            d = json.loads(data)
            d.pop("seconds")
            d.pop("shards")
            data = json.dumps(d, sort_keys=True).encode()
        out[rel] = data
    return out


def _partials(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith((".partial", ".old")))


def test_failing_sink_keeps_previous_output(tmp_path, aligned_cfg, monkeypatch):
    """Disk full in a sink: previous outputs intact, no staging file left, the message names
    the sink and its path."""
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
    with pytest.raises(FacekitError) as e:
        run(load_config(aligned_cfg), progress=False)
    msg = str(e.value)
    assert "sinks[1] (folders)" in msg and str(tmp_path / "out" / "faces") in msg and "No space left" in msg
    assert _snapshot(tmp_path / "out") == before
    assert _partials(tmp_path / "out") == []


SLOW = (
    "import sys, time\n"
    "from facekit.plugins import get_registry\n"
    "from facekit.pipeline.config import load_config\n"
    "from facekit.pipeline.engine import run\n"
    "cls = get_registry().get('sink', 'mxrec')\n"
    "orig = cls.write_many\n"
    "def write_many(self, s):\n"
    "    r = orig(self, s); self._flush(); print('wrote', flush=True); time.sleep(60); return r\n"
    "cls.write_many = write_many\n"
    "run(load_config(sys.argv[1]), progress=False)\n"
)


def test_killed_run_keeps_previous_output_and_next_run_cleans(tmp_path, aligned_cfg):
    """SIGKILL in the middle of a run: the previous outputs are intact and complete; the
    staging files it left are removed by the next run."""
    run(load_config(aligned_cfg), progress=False)
    before = _snapshot(tmp_path / "out")
    slow = tmp_path / "slow.py"
    slow.write_text(SLOW)
    p = subprocess.Popen([sys.executable, str(slow), str(aligned_cfg)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "wrote"
    p.send_signal(signal.SIGKILL)
    p.wait()
    left = _partials(tmp_path / "out")
    assert left, "the killed run should have left staging files for this test to mean anything"
    assert {k: v for k, v in _snapshot(tmp_path / "out").items() if ".partial" not in k} == before
    run(load_config(aligned_cfg), progress=False)
    assert _partials(tmp_path / "out") == []
    assert _snapshot(tmp_path / "out") == before


def test_sigterm_removes_staging(tmp_path, aligned_cfg):
    """SIGTERM unwinds the run like Ctrl-C: no staging file is left behind."""
    run(load_config(aligned_cfg), progress=False)
    before = _snapshot(tmp_path / "out")
    slow = tmp_path / "slow.py"
    slow.write_text(
        SLOW.replace(
            "run(load_config",
            "import signal\nsignal.signal(signal.SIGTERM, lambda n, f: (_ for _ in ()).throw(SystemExit(143)))\nrun(load_config",
        )
    )
    p = subprocess.Popen([sys.executable, str(slow), str(aligned_cfg)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "wrote"
    assert _partials(tmp_path / "out")
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 143
    assert _partials(tmp_path / "out") == []
    assert _snapshot(tmp_path / "out") == before


def test_cli_sigterm_removes_staging(tmp_path, data_dir):
    """The facekit CLI turns SIGTERM into an orderly abort (exit 143, nothing left)."""
    root = tmp_path / "root"
    link_aligned_112(data_dir, root)
    # a run slow enough to be caught mid-way: re-encode through the reencode augmenter
    # many times over by listing the same images in many identities
    first = sorted(root.iterdir())[0]
    for k in range(300):
        (root / f"copy{k:03d}").symlink_to(first, target_is_directory=True)
    cfg = write_config(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: root}
        augmenters: [{plugin: reencode}]
        sinks: [{plugin: mxrec, path: rec}]
        """,
    )
    p = subprocess.Popen([sys.executable, "-m", "facekit.cli", "run", "-q", str(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    import time

    deadline = time.time() + 60
    while time.time() < deadline and not _partials(tmp_path / "out"):
        time.sleep(0.02)
    assert _partials(tmp_path / "out"), "run finished before it could be interrupted"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "Traceback" not in err
    assert _partials(tmp_path / "out") == []
    assert not (tmp_path / "out" / "rec").exists()


def test_refuses_to_replace_foreign_folder(tmp_path):
    d = tmp_path / "precious"
    d.mkdir()
    (d / "thesis.tex").write_text("do not lose me")
    with pytest.raises(FacekitError, match="not written by facekit"):
        Publication(tmp_path).dir(d)
    assert (d / "thesis.tex").read_text() == "do not lose me"


def _old_and_new_configs(tmp_path, data_dir):
    """Two runs into one output with the same output names and different bytes (labels
    from 5 / from 0): a mix of the two is visible in every file."""
    root = tmp_path / "root"
    link_aligned_112(data_dir, root)
    text = """
        output: out
        source: {plugin: folders, root: root%s}
        sinks: [{plugin: mxrec, path: rec}, {plugin: folders, path: faces}]
        """
    return write_config(tmp_path, text % ", start_id: 5", "a.yaml"), write_config(tmp_path, text % "", "b.yaml")


# Kill points of a publication: the journal's rename, then per output (4 of them, each
# already present) "old aside" and "staging into place", then the removal of the old ones.
KILL = (
    "import os, signal, sys\n"
    "import facekit.pipeline.publish as pub\n"
    "from facekit.pipeline.config import load_config\n"
    "from facekit.pipeline.engine import run\n"
    "k = int(sys.argv[2]); n = [0]\n"
    "real_replace, real_remove = os.replace, pub._remove\n"
    "def replace(a, b):\n"
    "    n[0] += 1\n"
    "    if n[0] == k: os.kill(os.getpid(), signal.SIGKILL)\n"
    "    return real_replace(a, b)\n"
    "def remove(p):\n"
    "    n[0] += 1\n"
    "    if n[0] == k: os.kill(os.getpid(), signal.SIGKILL)\n"
    "    return real_remove(p)\n"
    "pub.os.replace = replace\n"
    "pub._remove = remove\n"
    "run(load_config(sys.argv[1]), progress=False)\n"
    "print('finished', n[0])\n"
)


def test_publish_is_atomic_for_the_run_at_every_kill_point(tmp_path, data_dir):
    """kill -9 at each step of the publication: after the next run's recovery the output is
    entirely the old run's or entirely the new run's, never a mix."""
    cfg_a, cfg_b = _old_and_new_configs(tmp_path, data_dir)
    out = tmp_path / "out"
    run(load_config(cfg_b), progress=False)
    new = _snapshot(out)
    run(load_config(cfg_a), progress=False)
    old = _snapshot(out)
    assert old != new
    script = tmp_path / "kill.py"
    script.write_text(KILL)
    steps = None
    k = 1
    outcomes = []
    while steps is None or k <= steps:
        r = subprocess.run([sys.executable, str(script), str(cfg_b), str(k)], capture_output=True, text=True)
        if r.returncode == 0:  # k past the last step: learn how many there are
            steps = int(r.stdout.split()[-1])
            run(load_config(cfg_a), progress=False)
            k += 1
            continue
        assert r.returncode == -signal.SIGKILL, r.stderr
        recover(out)  # what the next run does first (then it removes the stale staging)
        snap = {k: v for k, v in _snapshot(out).items() if ".partial" not in k}
        assert snap in (old, new), f"kill point {k}: output mixes two runs"
        outcomes.append("new" if snap == new else "old")
        run(load_config(cfg_a), progress=False)  # back to the old output for the next kill point
        assert _partials(out) == []
        k += 1
    assert steps >= 10, steps  # journal + 4 x (aside, into place) + removals
    assert outcomes[0] == "old" and outcomes[-1] == "new", outcomes


@pytest.mark.parametrize("exc", [OSError(16, "Device or resource busy"), KeyboardInterrupt()])
def test_commit_failing_half_way_is_completed_by_the_next_run(tmp_path, data_dir, monkeypatch, exc):
    """A rename that fails (or an interrupt) in the middle of a publication: the staging the
    journal names is kept, and the next run's recovery makes the output the whole new run;
    never a mix, never an output lost."""
    import facekit.pipeline.publish as publish

    cfg_a, cfg_b = _old_and_new_configs(tmp_path, data_dir)
    out = tmp_path / "out"
    run(load_config(cfg_b), progress=False)
    new = _snapshot(out)
    real = publish.os.replace
    for k in range(2, 10):  # after the journal's own rename: each step of the renames
        run(load_config(cfg_a), progress=False)
        old = _snapshot(out)
        n = [0]

        def replace(a, b):
            n[0] += 1
            if n[0] == k:
                raise exc
            return real(a, b)

        spec = load_config(cfg_b)
        spec.resume = False  # no work folder: every os.replace counted is the publication's
        monkeypatch.setattr(publish.os, "replace", replace)
        with pytest.raises((FacekitError, KeyboardInterrupt)):
            run(spec, progress=False)
        monkeypatch.setattr(publish.os, "replace", real)
        assert (out / ".facekit" / "publish.json").exists()
        recover(out)
        snap = {key: v for key, v in _snapshot(out).items() if ".partial" not in key}
        assert snap == new, f"step {k}: not the whole new run after recovery"
    assert old != new


def test_recover_refuses_a_forged_journal(tmp_path):
    """The journal is data on disk: a token or path that is not what commit writes is
    refused before anything is renamed or deleted."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "file.old").write_text("keep")
    out = tmp_path / "out"
    (out / ".facekit").mkdir(parents=True)
    for journal in (
        {"token": "t/../../victim/file", "entries": []},
        {"token": "0123abcd", "entries": ["x"]},
        {"token": "0123abcd", "entries": [{"staging": ".x.0123abcd.partial", "final": "."}]},
        {"token": "0123abcd", "entries": [{"staging": "../victim/.file.0123abcd.partial", "final": "../victim/file"}]},
        {"token": "0123abcd", "entries": [{"staging": "other", "final": "rec"}]},
    ):
        (out / ".facekit" / "publish.json").write_text(json.dumps(journal))
        with pytest.raises(FacekitError, match="not a facekit publish journal"):
            recover(out)
    assert (victim / "file.old").read_text() == "keep"
