"""issue 30 item 5 (follow-up): SIGTERM or Ctrl-C while ``report: true`` writes the QA report
after the run's outputs were published. The outputs stand, so the line must say they were
published and how to get the report, not "nothing was published"."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import link_aligned_112, write_config

#: runs facekit's CLI with build_report replaced by one that signals its own process first
DRIVER = textwrap.dedent("""
    import os, signal, sys, time
    import facekit.report.build as build

    def build_report(output, *args, **kwargs):
        os.kill(os.getpid(), getattr(signal, sys.argv[2]))
        time.sleep(30)  # the signal's handler raises here
        raise AssertionError("the signal was not delivered")

    build.build_report = build_report
    from facekit.cli import main
    main(["run", "-q", sys.argv[1]])
""")


@pytest.mark.parametrize("sig, code", [("SIGTERM", 128 + signal.SIGTERM), ("SIGINT", 130)])
def test_signal_during_the_report_says_the_outputs_were_published(sig, code, tmp_path, data_dir):
    root = link_aligned_112(data_dir, tmp_path / "root")
    cfg = write_config(tmp_path, f"""
        output: out
        report: true
        source: {{plugin: folders, root: {root}, min_images: 1}}
        sinks: [{{plugin: folders, path: faces}}]
        """)
    r = subprocess.run([sys.executable, "-c", DRIVER, str(cfg), sig], capture_output=True, text=True, timeout=300)
    out = tmp_path / "out"
    assert r.returncode == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "nothing was published" not in lines[0]
    assert "were published" in lines[0] and f"facekit report {out}" in lines[0], lines[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["faces_kept"] == 8
    assert len(list((out / "faces").rglob("*.jpg"))) == 8
    assert not (out / "report").exists()
