"""Config paths that hung or crashed `validate`/`run` (issue 30 items 3 and 6): a FIFO,
device or socket where a file is read is a one-line error naming the config line, stage and
key (never an open that waits for a writer); a NUL byte in any path field is a one-line
error naming the line and key (never a traceback)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

import pytest

from conftest import config_error, link_aligned_112, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run

#: seconds a command may take before it counts as hung (validate takes ~2 s)
HANG = 60


def _cli(*args, cwd):
    """``facekit ARGS`` in a subprocess; a command still running after :data:`HANG`
    seconds fails the test (it would hang forever)."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "facekit.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd,
            timeout=HANG, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"facekit {' '.join(map(str, args))} hung (still running after {HANG} s)")


def _one_line_error(r, *parts):
    """``r`` failed with one error (config errors: a header line and one line per error),
    no traceback, every one of ``parts`` in the error."""
    assert r.returncode in (1, 2), (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.strip() and ln.strip() != "error: invalid pipeline config:"]
    assert len(errors) == 1, r.stderr
    for p in parts:
        assert p in errors[0], (p, r.stderr)
    return errors[0]


@pytest.fixture
def faces(tmp_path, data_dir):
    return link_aligned_112(data_dir, tmp_path / "faces")


# ---------------------------------------------------------------- item 3: FIFO, device, socket


@pytest.mark.parametrize("plugin", ["yunet", "recognizer"])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_fifo_model_is_an_error_not_a_hang(tmp_path, faces, scrfd_model, plugin, command):
    """issue 30 item 3: ``model:`` naming a FIFO hung ``validate`` and ``run`` forever
    (the model check opened it and waited for a writer); now one line naming the config
    line, the stage and the key."""
    os.mkfifo(tmp_path / "model.onnx")
    stage = (
        "detector: {plugin: yunet, model: model.onnx}\naligner: {plugin: arcface}"
        if plugin == "yunet"
        else f"detector: {{plugin: retinaface, model: {scrfd_model}}}\naligner: {{plugin: arcface}}\n"
        "recognizer: {plugin: onnx, model: model.onnx}"
    )
    write_config(tmp_path, f"output: out\nsource: {{plugin: folders, root: faces}}\n{stage}\n"
                 "sinks: [{plugin: folders, path: f}]\n")
    r = _cli(command, "pipeline.yaml", cwd=tmp_path)
    where = "pipeline.yaml:3: detector (yunet)" if plugin == "yunet" else "pipeline.yaml:5: recognizer (onnx)"
    _one_line_error(r, where, "parameter 'model'", "is a FIFO")
    assert not (tmp_path / "out").exists()


def test_device_and_socket_as_input_are_errors(tmp_path, faces):
    """issue 30 item 3: a character device (``/dev/zero``: endless bytes) or a socket
    named as a model or an exclude list is refused at validation, naming line and key."""
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.onnx"))
    try:
        msg = config_error(tmp_path, """
            output: out
            source: {plugin: folders, root: faces, exclude: /dev/zero}
            detector: {plugin: yunet, model: s.onnx}
            aligner: {plugin: arcface}
            sinks: [{plugin: folders, path: f}]
            """)
    finally:
        sock.close()
    assert "pipeline.yaml:3: source (folders): parameter 'exclude': /dev/zero is a character device" in msg
    assert "pipeline.yaml:4: detector (yunet): parameter 'model':" in msg and "is a socket" in msg


def test_fifo_exclude_list_does_not_hang_run(tmp_path, faces):
    """issue 30 item 3: an ``exclude:`` list naming a FIFO passed validation and hung
    ``run`` when the engine read it; now validate and run refuse it in one line."""
    os.mkfifo(tmp_path / "exclude.txt")
    write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: faces, exclude: exclude.txt}
        sinks: [{plugin: folders, path: f}]
        """)
    for command in ("validate", "run"):
        r = _cli(command, "pipeline.yaml", cwd=tmp_path)
        _one_line_error(r, "pipeline.yaml:3: source (folders): parameter 'exclude'", "is a FIFO")


def test_fifo_lst_beside_a_rec_is_not_waited_on(tmp_path, faces, caplog):
    """issue 30 items 3 and 13: the mxrec source reads the ``.lst`` beside a rec for
    names; one that is a FIFO is opened non-blocking, refused with a one-line warning, and
    the images are named by label and record key (the run does not wait for a writer)."""
    cfg = write_config(tmp_path, """
        output: packed
        source: {plugin: folders, root: faces}
        sinks: [{plugin: mxrec, path: rec}]
        """, "pack.yaml")
    run(load_config(cfg), progress=False)
    lst = tmp_path / "packed" / "rec" / "train.lst"
    lst.unlink()
    os.mkfifo(lst)
    cfg = write_config(tmp_path, """
        output: back
        source: {plugin: mxrec, path: packed/rec}
        sinks: [{plugin: folders, path: f}]
        """, "back.yaml")
    caplog.set_level(logging.WARNING)
    s = run(load_config(cfg), progress=False)
    assert s.faces_kept == 8
    warned = [r.getMessage() for r in caplog.records if "train.lst" in r.getMessage()]
    assert len(warned) == 1 and "not a regular file" in warned[0], warned
    assert sorted(p.name for p in (tmp_path / "back" / "f").iterdir() if p.is_dir()) == ["0", "1"]


# ---------------------------------------------------------------- item 6: NUL bytes


NUL_CASES = [
    # (config lines, expected "line: stage: parameter 'key'")
    ('output: "o1\\0x"\nsource: {plugin: folders, root: faces}\nsinks: [{plugin: folders, path: f}]',
     "pipeline.yaml:1: config: parameter 'output'"),
    ('output: out\nsource: {plugin: folders, root: "fa\\0ces"}\nsinks: [{plugin: folders, path: f}]',
     "pipeline.yaml:2: source (folders): parameter 'root'"),
    ('output: out\nsource: {plugin: folders, root: faces, exclude: "x\\0"}\nsinks: [{plugin: folders, path: f}]',
     "pipeline.yaml:2: source (folders): parameter 'exclude'"),
    ('output: out\nsource: {plugin: folders, root: faces}\ndetector: {plugin: yunet, model: "m\\0.onnx"}\n'
     'aligner: {plugin: arcface}\nsinks: [{plugin: folders, path: f}]',
     "pipeline.yaml:3: detector (yunet): parameter 'model'"),
    ('output: out\nsource: {plugin: folders, root: faces}\nsinks:\n  - {plugin: folders, path: "f\\0"}',
     "pipeline.yaml:4: sinks[0] (folders): parameter 'path'"),
    ('output: out\nsource: {plugin: folders, root: faces}\nsinks:\n  - {plugin: folders, path: f, lst_file: "a\\0b"}',
     "pipeline.yaml:4: sinks[0] (folders): parameter 'lst_file'"),
    ('output: out\nsource: {plugin: folders, root: faces}\nsinks:\n  - {plugin: folders, path: f, landmarks_file: "\\0"}',
     "pipeline.yaml:4: sinks[0] (folders): parameter 'landmarks_file'"),
    ('output: out\nsource: {plugin: folders, root: faces}\nsinks:\n  - {plugin: mxrec, path: r, prefix: "tr\\0ain"}',
     "pipeline.yaml:4: sinks[0] (mxrec): parameter 'prefix'"),
    ('output: out\nsource: {plugin: mxrec, path: faces, prefix: "t\\0"}\nsinks: [{plugin: folders, path: f}]',
     "pipeline.yaml:2: source (mxrec): parameter 'prefix'"),
]


@pytest.mark.parametrize("text,where", NUL_CASES, ids=[w.split("'")[1] + "-" + w.split(":")[2].strip() for _, w in NUL_CASES])
def test_nul_byte_in_a_path_is_one_line_naming_line_and_key(tmp_path, faces, text, where):
    """issue 30 item 6: a NUL byte in a path field (``output: "o1\\u0000x"`` gave a
    traceback; others an error holding the raw NUL, or a crash at run time) is a config
    error naming the line and the key."""
    msg = config_error(tmp_path, text + "\n")
    assert where in msg and "NUL byte" in msg, msg
    assert "\0" not in msg


def test_nul_byte_in_output_via_cli(tmp_path, faces):
    """issue 30 item 6: ``facekit validate`` and ``run`` on ``output: "o1\\u0000x"``:
    exit 2, one line, no traceback."""
    write_config(tmp_path, 'output: "o1\\u0000x"\nsource: {plugin: folders, root: faces}\n'
                 "sinks: [{plugin: folders, path: f}]\n")
    for command in ("validate", "run"):
        r = _cli(command, "pipeline.yaml", cwd=tmp_path)
        assert r.returncode == 2
        _one_line_error(r, "pipeline.yaml:1: config: parameter 'output'", "NUL byte")


def test_nul_byte_in_the_config_path_or_output_override(tmp_path, faces):
    """issue 30 item 6: ``load_config`` given a config path or an ``output`` override with
    a NUL byte (the Python API; argv cannot hold one) raised ValueError from the OS layer;
    now a ConfigError saying so."""
    from facekit.errors import ConfigError

    cfg = write_config(tmp_path, "output: out\nsource: {plugin: folders, root: faces}\nsinks: [{plugin: folders, path: f}]\n")
    with pytest.raises(ConfigError, match="NUL byte"):
        load_config(str(cfg) + "\0")
    with pytest.raises(ConfigError, match="NUL byte"):
        load_config(cfg, output=tmp_path / "o\0ut")
