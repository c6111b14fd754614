"""Bad configs are refused before any work starts, naming file, line, stage and key."""

from __future__ import annotations

import pytest

from conftest import config_error, facekit_cli, faces_root, write_config


@pytest.fixture
def root(tmp_path):
    return faces_root(tmp_path)


def _err(tmp_path, text) -> str:
    return config_error(tmp_path, text)


def test_unknown_plugin_lists_installed(tmp_path, root):
    msg = _err(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: faces}
        detector:
          plugin: retinafcae
        sinks: [{plugin: mxrec, path: rec}]
        """,
    )
    assert "pipeline.yaml:5:" in msg and "unknown detector plugin 'retinafcae'" in msg
    for name in ("haar", "mtcnn", "retinaface"):
        assert name in msg


def test_unknown_parameter_names_stage_key_and_line(tmp_path, root):
    msg = _err(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: faces}
        sinks:
          - plugin: mxrec
            pth: rec
        """,
    )
    assert "pipeline.yaml:6: sinks[0] (mxrec): unknown parameter 'pth'" in msg
    assert "valid: path, layout, prefix" in msg
    assert "missing required parameter 'path'" in msg


def test_wrong_type_and_value(tmp_path, root):
    msg = _err(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: faces, min_images: many}
        aligner: {plugin: arcface, size: 100}
        detector: {plugin: haar}
        sinks: [{plugin: folders, path: x}]
        """,
    )
    assert "pipeline.yaml:3: source (folders): parameter 'min_images'" in msg
    assert "pipeline.yaml:4: aligner (arcface): parameter 'size': alignment size 100 must be a multiple of 112 or 128" in msg


def test_landmark_aligner_needs_landmark_detector(tmp_path, root):
    msg = _err(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: faces}
        detector: {plugin: haar}
        aligner: {plugin: arcface}
        sinks: [{plugin: folders, path: x}]
        """,
    )
    assert "needs five landmarks" in msg and "boxcrop" in msg


def test_missing_source_folder(tmp_path):
    msg = _err(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: no/such/folder}
        sinks: [{plugin: folders, path: x}]
        """,
    )
    assert "pipeline.yaml:3: source (folders): parameter 'root': path does not exist:" in msg
    assert str(tmp_path / "no/such/folder") in msg  # resolved against the config's folder


def test_missing_model_says_where_to_put_it(tmp_path, root, monkeypatch):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "nothing-here"))
    msg = _err(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: faces}
        detector: {plugin: retinaface}
        aligner: {plugin: arcface}
        sinks: [{plugin: folders, path: x}]
        """,
    )
    assert "det_10g.onnx" in msg and str(tmp_path / "nothing-here" / "models") in msg


def test_top_level_errors(tmp_path):
    msg = _err(tmp_path, "source: {plugin: folders}\nsinks: []\nextra: 1\n")
    assert "missing required parameter 'output'" in msg
    assert "unknown parameter 'extra'" in msg and "pipeline.yaml:3" in msg
    msg = _err(tmp_path, "output: [unclosed\n")
    assert "invalid YAML" in msg


def test_validate_cli(tmp_path, root):
    good = write_config(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: faces}
        sinks: [{plugin: mxrec, path: rec}]
        """,
        "good.yaml",
    )
    r = facekit_cli("validate", good)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and "source" in r.stdout
    assert not (tmp_path / "out").exists()  # validate does no work
    bad = write_config(tmp_path, "output: out\nsource: {plugin: nope}\nsinks: [{plugin: mxrec, path: r}]\n", "bad.yaml")
    r = facekit_cli("validate", bad)
    assert r.returncode == 2
    assert "bad.yaml:2" in r.stderr and "unknown source plugin 'nope'" in r.stderr


def test_landmark_augmenter_needs_aligned_faces(tmp_path, root):
    msg = config_error(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: {root}}}
        detector: {{plugin: haar}}
        aligner: {{plugin: boxcrop}}
        augmenters: [{{plugin: facemask}}]
        sinks: [{{plugin: folders, path: faces}}]
        """)
    assert "augmenters[0] (facemask) needs the five landmarks" in msg and "gives boxes only" in msg
    assert "pipeline.yaml:6:" in msg


def test_executor_settings_are_checked(tmp_path, root):
    base = f"output: out\nsource: {{plugin: folders, root: {root}}}\nsinks: [{{plugin: folders, path: faces}}]\n"
    msg = config_error(tmp_path, base + "executor: {plugin: cluster9}\n")
    assert "unknown executor plugin 'cluster9'" in msg and "inprocess, processes" in msg and "threads" in msg
    msg = config_error(tmp_path, base + "workers: 2\nexecutor: {plugin: processes}\n")
    assert "give 'workers' or 'executor', not both" in msg
    msg = config_error(tmp_path, base + "executor: {plugin: processes, workers: 0}\n")
    assert "executor (processes): parameter 'workers'" in msg
    assert "shard_size" in config_error(tmp_path, base + "shard_size: 0\n")
    from facekit.pipeline.config import load_config

    assert not load_config(write_config(tmp_path, base)).resume  # pass-through: redone, not resumed
    assert load_config(write_config(tmp_path, base + "resume: true\n")).resume
    spec = load_config(write_config(tmp_path, base + "workers: 3\n"))
    assert spec.executor.name == "processes" and spec.workers == 3 and spec.executor.params.threads == 1
    spec = load_config(write_config(tmp_path, base + "executor: {plugin: processes, workers: 2, threads: 2}\n"))
    spec.set_workers(4)  # -w 4 keeps the other settings
    assert spec.workers == 4 and spec.executor.params.threads == 2
    spec.set_workers(0)
    assert spec.executor.name == "inprocess" and spec.workers == 0
    # the default: a shard worker thread per usable core, one library thread each, for a
    # pipeline that decodes; pass-through packing (base) runs in process
    from facekit.pipeline import default_workers

    spec = load_config(write_config(tmp_path, base + "detector: {plugin: haar}\n"))
    assert spec.executor.name == "threads" and spec.workers == default_workers() >= 1
    assert spec.executor.params.threads == 1
    assert load_config(write_config(tmp_path, base + "detector: {plugin: haar}\nworkers: 0\n")).executor.name == "inprocess"
    assert load_config(write_config(tmp_path, base)).executor.name == "inprocess"
    spec = load_config(write_config(tmp_path, base + "executor: {plugin: threads, workers: 3, threads: 2}\n"))
    assert spec.workers == 3 and spec.executor.params.threads == 2
    msg = config_error(tmp_path, base + "executor: {plugin: threads, workers: 0}\n")
    assert "executor (threads): parameter 'workers'" in msg
    # -w N keeps an executor the config named (its other settings too); the default
    # becomes processes, as 'workers: N' in the config does
    spec = load_config(write_config(tmp_path, base + "executor: {plugin: threads, workers: 8, in_flight: 3}\n"))
    spec.set_workers(4)
    assert spec.executor.name == "threads" and spec.workers == 4 and spec.executor.params.in_flight == 3
    spec = load_config(write_config(tmp_path, base + "detector: {plugin: haar}\n"))
    spec.set_workers(4)
    assert spec.executor.name == "processes" and spec.workers == 4
    # an accelerator provider or a stage that is not thread-safe: in process by default
    from facekit.pipeline.config import _default_executor

    class Stage:
        def __init__(self, providers, thread_safe=True):
            self.params = type("P", (), {"providers": providers})()
            self.cls = type("C", (), {"thread_safe": thread_safe})

    assert _default_executor([Stage(["CPUExecutionProvider"]), None]) == "threads"
    assert _default_executor([Stage(["CUDAExecutionProvider", "CPUExecutionProvider"])]) == "inprocess"
    assert _default_executor([Stage(None), Stage(None, thread_safe=False)]) == "inprocess"
    assert _default_executor([None, None]) == "inprocess"


def test_a_stage_that_is_not_thread_safe_is_not_run_on_threads(tmp_path, root, monkeypatch):
    from facekit.pipeline.config import load_config
    from facekit.plugins import get_registry

    monkeypatch.setattr(get_registry().get("detector", "haar"), "thread_safe", False)
    base = f"output: out\nsource: {{plugin: folders, root: {root}}}\nsinks: [{{plugin: folders, path: faces}}]\n"
    base += "detector: {plugin: haar}\n"
    assert load_config(write_config(tmp_path, base)).executor.name == "inprocess"
    msg = config_error(tmp_path, base + "executor: {plugin: threads}\n")
    assert "detector (haar) cannot run on several threads of one process" in msg and "thread_safe = False" in msg
