"""issue 30 item 5: ``facekit report`` ended part-way. SIGTERM unwinds as Ctrl-C does (one
line, exit 143, its staging folder removed, a previous report unchanged); the staging a
``kill -9`` left is removed by the next ``facekit report`` or ``facekit run`` into the same
output, while the staging of a report still running there is left alone.

The run is a real pass-through packing of the shared identity photos (six copies of each
identity folder, the negatives and a broken file), so that its report takes seconds: a report
is frozen (SIGSTOP) once its staging folder holds files, then signalled, so the signal always
lands part-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import facekit_cli, write_config

COPIES = 6
#: bounds on each step (a report of this run takes ~5-10 s on 2 shared cores)
START_S = 120
EXIT_S = 120


@pytest.fixture(scope="module")
def run_cfg(data_dir, tmp_path_factory) -> Path:
    """The config of a finished pass-through run (identity folders -> folders sink)."""
    base = tmp_path_factory.mktemp("report_sigterm")
    root = base / "root"
    root.mkdir()
    for k in range(COPIES):
        for d in sorted((data_dir / "images" / "identities").iterdir()):
            os.symlink(d, root / f"{d.name}_{k}")
    neg = root / "zz_negatives"
    neg.mkdir()
    for f in sorted((data_dir / "images" / "negatives").iterdir()):
        os.symlink(f, neg / f.name)
    (neg / "broken.jpg").write_bytes(b"not a photo")
    cfg = write_config(base, f"""
        output: {base / 'out'}
        source: {{plugin: folders, root: {root}}}
        sinks:
          - {{plugin: folders, path: faces}}
        """)
    r = facekit_cli("run", "-q", cfg)
    assert r.returncode == 0, r.stderr
    return cfg


def _out(cfg: Path) -> Path:
    return cfg.parent / "out"


def _staging(out: Path) -> list[Path]:
    """What reports leave beside ``out/report``: ``.report.*`` (staging, lock, old copy)."""
    return sorted(p for p in out.iterdir() if p.name.startswith(".report."))


def _partials(out: Path) -> list[Path]:
    return [p for p in _staging(out) if p.name.endswith(".partial")]


def _files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _report_frozen(out: Path, before: list[Path] = ()) -> tuple[subprocess.Popen, Path]:
    """Start `facekit report OUT` and SIGSTOP it once its staging folder holds a few files;
    returns the stopped process and its staging folder."""
    p = subprocess.Popen([sys.executable, "-m", "facekit.cli", "report", str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + START_S
    mine = None
    while p.poll() is None and time.monotonic() < deadline:
        new = [s for s in _partials(out) if s not in before]
        if new and _files(new[0]) >= 5:
            mine = new[0]
            break
        time.sleep(0.005)
    os.kill(p.pid, signal.SIGSTOP)
    if mine is None or not mine.is_dir():
        p.kill()
        p.communicate()
        pytest.fail(f"the report was not caught part-way (exit {p.returncode}); make the run bigger")
    return p, mine


def _end(p: subprocess.Popen, sig: int) -> tuple[str, str]:
    """Send ``sig`` to the frozen report, let it go on, and wait for its end."""
    try:
        os.kill(p.pid, sig)
        os.kill(p.pid, signal.SIGCONT)
        return p.communicate(timeout=EXIT_S)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_sigterm_removes_the_staging_and_says_so(run_cfg):
    """issue 30 item 5: SIGTERM part-way: one line, exit 143, no staging, the previous report kept."""
    out = _out(run_cfg)
    r = facekit_cli("report", out)
    assert r.returncode == 0, r.stderr
    index = (out / "report" / "index.html").read_bytes()
    p, stage = _report_frozen(out)
    size = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file())
    assert size > 0
    stdout, stderr = _end(p, signal.SIGTERM)
    assert p.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.splitlines() == ["error: terminated; the report was not written, any previous report is unchanged"]
    assert stdout == ""
    assert _staging(out) == [], f"{stage.name} ({size} bytes) left"
    assert (out / "report" / "index.html").read_bytes() == index


def test_staging_of_a_killed_report_is_removed_by_the_next_report_and_a_live_one_is_kept(run_cfg):
    """issue 30 item 5: the next `facekit report` removes what a kill -9 left, but not the
    staging of a report running at the same time (it then finishes and publishes)."""
    out = _out(run_cfg)
    dead, dead_stage = _report_frozen(out)
    _end(dead, signal.SIGKILL)
    assert dead.returncode == -signal.SIGKILL and dead_stage.is_dir()  # what the issue saw
    live, live_stage = _report_frozen(out, before=[dead_stage])
    try:
        r = facekit_cli("report", out)
        assert r.returncode == 0, r.stderr
        assert not dead_stage.exists()
        assert live_stage.is_dir(), "the staging of a running report was removed"
        assert [p.name.rsplit(".", 1)[1] for p in _staging(out)] == sorted(["lock", "partial"])
    finally:
        stdout, stderr = _end(live, signal.SIGCONT)
    assert live.returncode == 0, stderr
    assert stdout.startswith(f"{out / 'report' / 'index.html'}: ")
    assert _staging(out) == []
    assert (out / "report" / "index.html").is_file()


def test_staging_of_a_killed_report_is_removed_by_the_next_run(run_cfg):
    """issue 30 item 5: a `facekit run` into the output removes what a killed report left."""
    out = _out(run_cfg)
    dead, dead_stage = _report_frozen(out)
    _end(dead, signal.SIGKILL)
    assert dead.returncode == -signal.SIGKILL and dead_stage.is_dir()
    r = facekit_cli("run", "-q", run_cfg)
    assert r.returncode == 0, r.stderr
    assert _staging(out) == [], "the killed report's staging is still there"
