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
