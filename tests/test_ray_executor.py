"""The ``ray`` executor on a real local Ray instance (2 CPUs, this machine only) shared by the tests:
the real-photo pipeline gives the same bytes as the default run (the reference every executor
is compared with in ``test_engine_shards``: ``threads``, ``inprocess``, ``processes``), a Ray worker
process killed mid-run is retried, a killed driver resumes, and the errors users hit (Ray
missing, cluster unreachable, a model missing on a node, a stage that cannot start) are
one line naming the fix."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from conftest import _missing, facekit_cli
from facekit.errors import FacekitError
from facekit.pipeline.config import StageConfig, load_config
from facekit.pipeline.engine import run
from facekit_plugins.ray_executor import RayExecutor, RayParams
from test_engine_shards import _config, _kill_when, _tree, photos, reference  # noqa: F401  (fixtures)

try:
    import ray
except ImportError:  # the ray extra is not installed
    ray = None


def _ray():
    if ray is None:
        _missing('ray is not installed: pip install -e ".[ray]"')
    return ray


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance (2 CPUs) for the module (start-up takes ~10 s on 2 shared cores):
    runs in this process use its connection; `facekit run` subprocesses join it by address."""
    r = _ray()
    r.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield r.get_runtime_context().gcs_address
    finally:
        r.shutdown()


def _ray_config(tmp_path, photos, scrfd_model, executor="{plugin: ray, workers: 2}", **kw):
    return _config(tmp_path, photos, scrfd_model, executor, 7, **kw)


def _same(got: dict, ref: dict) -> None:
    assert sorted(got) == sorted(ref)
    assert [k for k in ref if got[k] != ref[k]] == []
    assert {"rec/train.rec", "rec/train.idx", "rec/train.lst", "rec/property", "rejects.tsv", "results.parquet"} <= set(got)


@pytest.mark.slow
def test_ray_outputs_are_byte_identical_to_the_default_run(tmp_path, photos, scrfd_model, reference, ray_cluster):
    ref_summary, ref = reference
    cfg = _ray_config(tmp_path, photos, scrfd_model, f"{{plugin: ray, workers: 2, address: '{ray_cluster}'}}")
    s = run(load_config(cfg), progress=False)
    _same(_tree(tmp_path / "out"), ref)
    assert s.faces_kept == ref_summary.faces_kept > 80
    assert s.executor == {"plugin": "ray", "workers": 2}
    assert s.shards["count"] >= 7 and s.shards["run_again"] == 0


class _KillOneActor(RayExecutor):
    """The ray executor, SIGKILLing actor 0's process right after the third shard was
    submitted (each actor then holds queued shards: the killed one's are lost)."""

    killed: list = []

    def submit(self, shard):
        ref = super().submit(shard)
        if shard.index == 2 and not self.killed:
            node, pid = self.actor_processes[0]
            os.kill(pid, signal.SIGKILL)
            self.killed.append(pid)
        return ref


@pytest.mark.slow
def test_ray_worker_killed_mid_run_is_retried_and_outputs_are_identical(tmp_path, photos, scrfd_model, reference, ray_cluster, caplog):
    _, ref = reference
    spec = load_config(_ray_config(tmp_path, photos, scrfd_model))
    spec.executor = StageConfig("executor", "ray", _KillOneActor, RayParams(workers=2), "executor (ray)")
    with caplog.at_level(logging.WARNING, logger="facekit"):
        s = run(spec, progress=False)
    assert _KillOneActor.killed, "no actor was killed"
    assert s.shards["run_again"] >= 1  # the killed actor's shards ran again
    assert any("was lost" in r.getMessage() for r in caplog.records)
    _same(_tree(tmp_path / "out"), ref)


@pytest.mark.slow
def test_ray_driver_killed_and_rerun_resumes_with_identical_outputs(tmp_path, photos, scrfd_model, reference, ray_cluster):
    """`facekit run` joined to the cluster is SIGKILLed after 2 finished shards; the rerun,
    on a local Ray instance it starts itself (address left out), reuses them."""
    _, ref = reference
    out = tmp_path / "out"
    killed = _ray_config(tmp_path, photos, scrfd_model, f"{{plugin: ray, workers: 2, address: '{ray_cluster}'}}")
    assert _kill_when(killed, out, 2) >= 2
    assert not (out / "rec").exists()
    again = _ray_config(tmp_path, photos, scrfd_model, "{plugin: ray, workers: 2, num_cpus: 1}", name="again.yaml")
    r = subprocess.run([sys.executable, "-m", "facekit.cli", "run", "-q", str(again)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["executor"]["plugin"] == "ray"
    assert 2 <= summary["shards"]["reused"] < summary["shards"]["count"]
    _same(_tree(out), ref)


def _own_model_copy(tmp_path, photos, scrfd_model):
    """A copy of the model under ``tmp_path`` (for the test to break after the driver checked
    it) and the spec of a one-actor Ray run that reads it."""
    model = tmp_path / "models" / "scrfd.onnx"
    model.parent.mkdir()
    shutil.copyfile(scrfd_model, model)
    return model, load_config(_config(tmp_path, photos, model, "{plugin: ray, workers: 1}"))


@pytest.mark.slow
def test_ray_model_missing_on_a_worker_node_is_one_line_naming_node_and_path(tmp_path, photos, scrfd_model, ray_cluster):
    model, spec = _own_model_copy(tmp_path, photos, scrfd_model)
    model.unlink()  # present where the config was checked, absent where the actor runs
    with pytest.raises(FacekitError) as e:
        run(spec, progress=False)
    msg = str(e.value)
    assert "\n" not in msg
    node = ray.nodes()[0]["NodeManagerAddress"]
    assert f"{model} does not exist on Ray node {node} (" in msg and "detector (retinaface): model" in msg
    assert "storage every node mounts" in msg
    assert not (tmp_path / "out" / "rec").exists()


@pytest.mark.slow
def test_ray_stage_that_cannot_start_on_an_actor_is_one_line(tmp_path, photos, scrfd_model, ray_cluster):
    model, spec = _own_model_copy(tmp_path, photos, scrfd_model)
    model.write_bytes(b"not an onnx model")  # broken after the driver checked it
    with pytest.raises(FacekitError) as e:
        run(spec, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"on Ray node {ray.nodes()[0]['NodeManagerAddress']} (") and "detector (retinaface)" in msg


def test_ray_not_installed_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(FacekitError) as e:
        RayExecutor(RayParams()).start(None)
    assert str(e.value).startswith("executor (ray): Ray is not installed") and 'pip install "facekit[ray]"' in str(e.value)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("how", ["host:port", "ray://", "auto"])
def test_ray_unreachable_cluster_is_one_line_naming_the_address(tmp_path, how):
    """Nobody listens on the address (Ray itself would retry for minutes); ``auto`` resolves
    to RAY_ADDRESS as Ray does, and that address is checked."""
    _ray()
    dead = f"127.0.0.1:{_closed_port()}"
    address = {"host:port": dead, "ray://": f"ray://{dead}", "auto": "auto"}[how]
    env = dict(os.environ, RAY_ADDRESS=dead) if how == "auto" else None
    (tmp_path / "root" / "a").mkdir(parents=True)
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        f"output: {tmp_path / 'out'}\nexecutor: {{plugin: ray, address: '{address}'}}\n"
        f"source: {{plugin: folders, root: {tmp_path / 'root'}}}\nsinks: [{{plugin: mxrec, path: rec}}]\n"
    )
    r = facekit_cli("run", "-q", cfg, env=env)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "cannot reach the Ray cluster at " in lines[0] and "fix 'address:'" in lines[0]
    if how == "auto":  # Ray writes 127.0.0.1 as this machine's address
        assert f":{dead.split(':')[1]} (" in lines[0] and "address: auto found" in lines[0]
    else:
        assert f"cannot reach the Ray cluster at {address} (" in lines[0]
