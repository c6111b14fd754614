"""Runs that fail must say so in one line and never look successful (issue 8 items 5, 15,
18, 19): nothing kept, systematic stage errors, broken plugins, dead workers, a second run
into the same output, workers outliving a killed parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import facekit_cli, install_plugin, link_aligned_112, plugin_pyproject, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.errors import FacekitError

PLUGIN = '''
"""Detectors that misbehave on purpose, for the engine's failure tests."""
import os, signal, threading, time
import numpy as np
from pydantic import Field
import facekit
from facekit.vision.align import template_for


def _template(image):
    h, w = image.shape[:2]
    lmk = template_for(112) * np.array([w / 112, h / 112], np.float32)
    return facekit.Detections(np.array([[0, 0, w, h]], np.float32), np.ones(1, np.float32), lmk[None].astype(np.float32))


class FaultyParams(facekit.DetectorParams):
    mode: str = Field("ok", description="ok | init | always | kill | slow")
    seconds: float = 0.0
    marker: str = Field("", description="slow: a folder where each process (thread) detecting leaves a file "
                        "named by its pid (and thread), a line per image")


class FaultyDetector(facekit.Detector):
    name = "faulty"
    Params = FaultyParams

    def __init__(self, params):
        super().__init__(params)
        if params.mode == "init":
            raise RuntimeError("model server unreachable")

    def detect(self, image):
        m = self.params.mode
        if m == "always":
            raise ValueError("input tensor has the wrong shape")
        if m == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if m == "slow":
            if self.params.marker:
                name = f"{os.getpid()}-{threading.get_ident()}"
                with open(os.path.join(self.params.marker, name), "a") as f:
                    f.write("detect\\n")
            time.sleep(self.params.seconds)
        return _template(image)


@facekit.hookimpl
def register_stages(register):
    register(FaultyDetector)
'''

PYPROJECT = plugin_pyproject("facekit-faulty", "faulty", "facekit_faulty", "0.0.1")


@pytest.fixture(scope="module")
def faulty_env(tmp_path_factory):
    """Environment with a misbehaving third-party detector plugin on PYTHONPATH."""
    return install_plugin(tmp_path_factory, PYPROJECT, "facekit_faulty", PLUGIN)


@pytest.fixture
def aligned_root(tmp_path, data_dir):
    return link_aligned_112(data_dir, tmp_path / "root")


def _cli(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "facekit.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _faulty_cfg(tmp_path, mode, workers=0, seconds=0.0, name="pipeline.yaml", marker="", executor=None, extra=""):
    where = f"executor: {executor}" if executor else f"workers: {workers}"
    return write_config(tmp_path, f"""
        output: out
        {where}{extra}
        source: {{plugin: folders, root: root}}
        detector: {{plugin: faulty, mode: {mode}, seconds: {seconds}, marker: "{marker}"}}
        aligner: {{plugin: arcface}}
        sinks: [{{plugin: mxrec, path: rec}}]
        """, name)


def test_run_that_keeps_no_face_fails_and_writes_nothing(tmp_path, data_dir, scrfd_model):
    """Item 5: only face-free photos -> exit 1 with the reject counts; no empty train.rec."""
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(data_dir / "images" / "negatives", root / "negatives")
    cfg = write_config(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: root}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        aligner: {{plugin: arcface}}
        sinks: [{{plugin: mxrec, path: rec}}]
        """)
    r = facekit_cli("run", "-q", cfg)
    assert r.returncode == 1
    assert r.stderr.startswith("error: no face was kept") and "no_face" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "rec").exists() and not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.parametrize("executor", [None, "{plugin: threads, workers: 2}"])
def test_systematic_stage_error_fails_fast(tmp_path, aligned_root, faulty_env, executor):
    """Item 5: the same stage error on the first images stops the run at once, exit 1."""
    cfg = _faulty_cfg(tmp_path, "always", executor=executor)
    r = _cli(faulty_env, "run", "-q", cfg)
    assert r.returncode == 1, r.stdout
    assert "error: the first 5 images all failed in a stage with the same error" in r.stderr
    assert "ValueError: input tensor has the wrong shape" in r.stderr
    assert "Traceback" not in r.stderr
    # one warning for the run, not one per worker thread
    assert r.stderr.count("stage error on") == 1, r.stderr
    assert not (tmp_path / "out" / "rec").exists()


@pytest.mark.parametrize("workers,executor", [(0, None), (2, None), (0, "{plugin: threads, workers: 2}")])
def test_plugin_constructor_error_is_one_line(tmp_path, aligned_root, faulty_env, workers, executor):
    """Item 15: a detector that cannot start -> one line naming the stage; with workers no
    BrokenProcessPool trace."""
    cfg = _faulty_cfg(tmp_path, "init", workers, executor=executor)
    r = _cli(faulty_env, "run", "-q", cfg)
    assert r.returncode in (1, 2)
    assert "model server unreachable" in r.stderr and "detector (faulty)" in r.stderr
    assert "Traceback" not in r.stderr and "BrokenProcessPool" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_dead_worker_names_its_images(tmp_path, aligned_root, faulty_env):
    """Item 15: a worker killed by the system (as the OOM killer does) -> one line naming
    the images it was processing."""
    cfg = _faulty_cfg(tmp_path, "kill", workers=2)
    r = _cli(faulty_env, "run", "-q", cfg)
    assert r.returncode == 1
    assert "a worker process died while processing" in r.stderr and "adaface_" in r.stderr
    assert "Traceback" not in r.stderr


def test_stage_error_warning_has_no_traceback(tmp_path, data_dir, scrfd_model):
    """Item 15: a 60000x1 image is a ``stage_error`` reject (OpenCV's resize fails on it);
    the warning about it is printed, and it is one line with no traceback (issue 30 item
    19: the test checked neither that a warning nor that a stage error happened)."""
    import numpy as np
    from PIL import Image

    ident = tmp_path / "root" / "someone"
    ident.mkdir(parents=True)
    Image.fromarray(np.full((1, 60000, 3), 128, np.uint8)).save(ident / "long.png")
    for k in (1, 2):
        os.symlink(data_dir / f"images/identities/Anthony_Hopkins/Anthony_Hopkins_000{k}.jpg", ident / f"a{k}.jpg")
    cfg = write_config(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: root}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        aligner: {{plugin: arcface}}
        sinks: [{{plugin: folders, path: faces}}]
        """)
    r = facekit_cli("run", "-q", cfg)
    assert r.returncode == 0, r.stderr
    rejects = (tmp_path / "out" / "rejects.tsv").read_text().splitlines()[1:]
    assert len(rejects) == 1
    path, identity, reason, detail = rejects[0].split("\t")
    assert (path, identity, reason) == (str(ident / "long.png"), "someone", "stage_error")
    # the whole of stderr is the one warning line, naming the image and the error
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert lines == [f"WARNING facekit: stage error on {ident / 'long.png'}: {detail}"], r.stderr


def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(d))
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_their_parent(tmp_path, aligned_root, faulty_env):
    """Item 18: kill -9 the parent of `facekit run -w 2`: its workers and the resource
    tracker are gone within seconds."""
    marker = tmp_path / "detecting"
    marker.mkdir()
    cfg = _faulty_cfg(tmp_path, "slow", workers=2, seconds=30, marker=marker)
    p = subprocess.Popen([sys.executable, "-m", "facekit.cli", "run", "-q", str(cfg)], env=faulty_env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and len(list(marker.iterdir())) < 2 and p.poll() is None:
            time.sleep(0.2)  # both workers inside their detector
        kids = _children(p.pid)  # 2 workers + the resource tracker
        assert len(kids) >= 2 and len(list(marker.iterdir())) == 2, kids
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.2)
        assert not [k for k in kids if _alive(k)], "worker processes outlived their parent"
    finally:
        for k in _children(p.pid):
            os.kill(k, signal.SIGKILL)


def test_second_run_into_same_output_is_refused(tmp_path, aligned_root, faulty_env):
    """Item 19: while one run writes out/, another into out/ exits 1 naming the folder; once
    the first is gone (even killed) the output can be used again."""
    slow = _faulty_cfg(tmp_path, "slow", seconds=5, name="slow.yaml")
    fast = _faulty_cfg(tmp_path, "ok", name="fast.yaml")
    p = subprocess.Popen([sys.executable, "-m", "facekit.cli", "run", "-q", str(slow)], env=faulty_env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = tmp_path / "out" / ".facekit" / "lock"
        deadline = time.time() + 60
        while time.time() < deadline and not (lock.exists() and lock.read_text().startswith(f"pid {p.pid}")):
            time.sleep(0.05)
        r = _cli(faulty_env, "run", "-q", fast)
        assert r.returncode == 1
        assert "another facekit run is writing this output" in r.stderr and f"pid {p.pid}" in r.stderr
    finally:
        p.kill()
        p.wait()
    r = _cli(faulty_env, "run", "-q", fast)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "rec" / "train.rec").exists()


def test_nothing_kept_in_process_raises(tmp_path, aligned_root):
    """The engine API too: no identity reaches min_images -> FacekitError, no outputs."""
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: root, min_images: 50}
        sinks: [{plugin: mxrec, path: rec}]
        """)
    with pytest.raises(FacekitError, match="no face was kept"):
        run(load_config(cfg), progress=False)
    assert not (tmp_path / "out" / "rec").exists()


def test_progress_bar_has_a_total(tmp_path, aligned_root, capsys):
    """Item 26: the progress bar counts against the source's count() (total and ETA), not
    a bare counter."""
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: root}
        sinks: [{plugin: mxrec, path: rec}]
        """)
    run(load_config(cfg), progress=True)
    err = capsys.readouterr().err
    assert "8/8" in err and "100%" in err, err
    cfg2 = write_config(tmp_path, f"""
        output: out2
        source: {{plugin: mxrec, path: {tmp_path / 'out' / 'rec'}}}
        sinks: [{{plugin: folders, path: faces}}]
        """, "rec2folders.yaml")
    run(load_config(cfg2), progress=True)
    err = capsys.readouterr().err
    assert "8/8" in err and "100%" in err, err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_with_workers_is_one_line(tmp_path, aligned_root, faulty_env):
    """Ctrl-C reaches the whole process group: the workers ignore it, the parent unwinds,
    exits 130 with one line and publishes nothing."""
    marker = tmp_path / "detecting"
    marker.mkdir()
    cfg = _faulty_cfg(tmp_path, "slow", workers=2, seconds=30, marker=marker)
    # SIGINT as a terminal gives it: a test run started in the background (`cmd &` in a
    # script) has it ignored, and the child would inherit that
    p = subprocess.Popen([sys.executable, "-m", "facekit.cli", "run", "-q", str(cfg)], env=faulty_env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # both workers inside their detector (past their start, where Ctrl-C is ignored),
        # however slowly a busy machine starts them
        deadline = time.time() + 180
        while time.time() < deadline and len(list(marker.iterdir())) < 2 and p.poll() is None:
            time.sleep(0.2)
        assert len(list(marker.iterdir())) == 2, "the workers never started detecting"
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines() == [
        "error: interrupted; nothing was published, previous outputs are unchanged"
    ]
    assert not (tmp_path / "out" / "rec").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups, /proc")
def test_ctrl_c_with_worker_threads_stops_at_the_next_batch(tmp_path, data_dir, faulty_env):
    """The ``threads`` executor (the default): Ctrl-C stops each worker thread at its next
    batch of images instead of letting it finish its shard: exit 130, one line, nothing
    published, and far fewer images detected than the shards hold."""
    from facekit.pipeline.worker import BATCH

    root = tmp_path / "root"
    crops = sorted((data_dir / "aligned_112").rglob("*.jpg"))
    n = 4 * BATCH  # images an identity: a shard each (shard_size 1), one per thread
    for ident in ("a", "b"):
        (root / ident).mkdir(parents=True)
        for i in range(n):
            os.symlink(crops[i % len(crops)], root / ident / f"{i:03d}.jpg")
    marker = tmp_path / "detecting"
    marker.mkdir()
    cfg = _faulty_cfg(tmp_path, "slow", seconds=0.25, marker=marker, executor="{plugin: threads, workers: 2}",
                      extra="\n        shard_size: 1")
    p = subprocess.Popen([sys.executable, "-m", "facekit.cli", "run", "-q", str(cfg)], env=faulty_env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 180
        while time.time() < deadline and len(list(marker.iterdir())) < 2 and p.poll() is None:
            time.sleep(0.05)
        assert len(list(marker.iterdir())) == 2, "the worker threads never started detecting"
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines() == [
        "error: interrupted; nothing was published, previous outputs are unchanged"
    ]
    detected = [len(f.read_text().splitlines()) for f in marker.iterdir()]
    # each thread ends the batch it is in and, at most, the one it was starting: without
    # the stop both would detect all n images of their shard
    assert len(detected) == 2 and all(0 < d <= 2 * BATCH < n for d in detected), detected
    assert not (tmp_path / "out" / "rec").exists()
