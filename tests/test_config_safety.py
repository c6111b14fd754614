"""Pipelines that would destroy data or hang are refused by `validate` (issue 8 items 6,
7, 12, 15): overlapping sinks, outputs in system folders or inside the input, sink paths
escaping the output, whole photos into a fixed-size rec, alias bombs, deep nesting, binary
files."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from conftest import config_error, facekit_cli, faces_root, write_config
from facekit.pipeline.config import load_config


@pytest.fixture
def root(tmp_path):
    return faces_root(tmp_path)


def _err(tmp_path, text) -> str:
    return config_error(tmp_path, text)


def test_two_sinks_on_one_path(tmp_path, root):
    msg = _err(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        sinks:
          - {plugin: mxrec, path: data}
          - {plugin: folders, path: data}
        """)
    assert "pipeline.yaml:6: sinks[1] (folders): path" in msg and "overlaps sinks[0] (mxrec)" in msg


def test_nested_sink_paths(tmp_path, root):
    msg = _err(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        sinks:
          - {plugin: mxrec, path: data}
          - {plugin: folders, path: data/aligned}
        """)
    assert "sinks[1] (folders)" in msg and "overlaps" in msg


def test_sink_path_escaping_output(tmp_path, root):
    msg = _err(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        sinks: [{plugin: mxrec, path: ../../elsewhere}]
        """)
    assert "pipeline.yaml:4: sinks[0] (mxrec): path" in msg and "must be inside output" in msg


def test_sink_on_run_file(tmp_path, root):
    msg = _err(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        sinks: [{plugin: evalbin, path: summary.json}]
        """)
    assert "a name the run itself writes" in msg


@pytest.mark.parametrize("output", ["/", "/etc", "/usr/share/facekit-out", "'~'"])
def test_system_output_folders(tmp_path, root, output):
    msg = _err(tmp_path, f"""
        output: {output}
        source: {{plugin: folders, root: faces}}
        sinks: [{{plugin: mxrec, path: rec}}]
        """)
    assert "pipeline.yaml:2: output" in msg and ("system" in msg or "home" in msg)


def test_foreign_non_empty_output_refused(tmp_path, root):
    """`output: /etc` overwrote an existing summary.json: a folder facekit did not write is
    never used as an output."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "summary.json").write_text("my own notes")
    msg = _err(tmp_path, """
        output: mine
        source: {plugin: folders, root: faces}
        sinks: [{plugin: mxrec, path: rec}]
        """)
    assert "is not a facekit output folder" in msg
    assert (tmp_path / "mine" / "summary.json").read_text() == "my own notes"


@pytest.mark.parametrize("output", ["faces", "faces/out"])
def test_output_in_source_root(tmp_path, root, output):
    msg = _err(tmp_path, f"""
        output: {output}
        source: {{plugin: folders, root: faces}}
        sinks: [{{plugin: mxrec, path: rec}}]
        """)
    assert "inside source (folders)'s input folder" in msg


def test_sink_replacing_an_input(tmp_path):
    """A source folder inside the output is fine, but no sink may write over it."""
    (tmp_path / "out" / "photos" / "a").mkdir(parents=True)
    (tmp_path / "out" / ".facekit").mkdir()
    msg = _err(tmp_path, """
        output: out
        source: {plugin: folders, root: out/photos}
        sinks: [{plugin: folders, path: photos}]
        """)
    assert "sinks[0] (folders): path" in msg and "overlaps source (folders)'s input" in msg


def test_detector_without_aligner_into_mxrec(tmp_path, root, scrfd_model):
    """Item 7: whole photos of every size into a rec with one property size."""
    msg = _err(tmp_path, f"""
        output: out
        source: {{plugin: folders, root: faces}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        sinks: [{{plugin: folders, path: faces}}, {{plugin: mxrec, path: rec}}]
        """)
    assert "sinks[1] (mxrec) stores images of one size" in msg and "add an aligner" in msg


def test_validate_exits_2_and_writes_nothing(tmp_path, root):
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        sinks: [{plugin: mxrec, path: x}, {plugin: folders, path: x}]
        """)
    r = facekit_cli("validate", cfg)
    assert r.returncode == 2 and "overlaps" in r.stderr and not (tmp_path / "out").exists()


def _bomb(levels: int = 9) -> str:
    """Nine anchors, each a list of nine aliases of the one before: 9**9 = 387,420,489
    values once expanded, in one 300-byte flow sequence."""
    seqs = ["&a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        seqs.append(f"&{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "[" + ", ".join(seqs) + "]"


# load_config in a fresh process: seconds, peak traced memory, YAML values constructed
_MEASURE = """
import json, sys, time, tracemalloc
import yaml.constructor
from facekit.errors import ConfigError
from facekit.pipeline.config import load_config

built = [0]
construct = yaml.constructor.BaseConstructor.construct_object
def counting(self, node, deep=False):
    built[0] += 1
    return construct(self, node, deep)
yaml.constructor.BaseConstructor.construct_object = counting
out = []
for path in sys.argv[1:]:
    built[0] = 0
    tracemalloc.start()
    t = time.perf_counter()
    try:
        load_config(path)
        msg = None
    except ConfigError as e:
        msg = str(e)
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    out.append({"error": msg, "seconds": seconds, "peak_bytes": peak, "constructed": built[0]})
print(json.dumps(out))
"""


def test_alias_bomb_is_refused_quickly(tmp_path, root):
    """Item 12: a 433-byte billion-laughs config: refused at once, bounded memory.

    Issue 30 item 19: measured, not assumed. PyYAML gives an anchor's aliases one shared
    object, so the danger is whoever walks the loaded config (a ``json.dumps``, Ray's
    serializer for ``runtime_env``, a deep copy): 387M values. The second bomb hides in the
    ``ray`` executor's ``runtime_env``, a dict that validation accepts without walking it,
    so only the expansion check refuses it. Both are refused from the YAML node graph,
    before a single value is constructed, in a fresh process: well under 5 s and 16 MB of
    traced memory (the expansion would take minutes and GBs)."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        bomb += f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
    bomb += "output: out\nsource: {plugin: folders, root: faces}\nsinks: [{plugin: mxrec, path: rec}]\n"
    assert len(bomb) < 600
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(bomb)
    r = subprocess.run([sys.executable, "-m", "facekit.cli", "validate", str(cfg)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "alias bomb" in r.stderr and "Traceback" not in r.stderr
    hidden = tmp_path / "hidden.yaml"
    hidden.write_text(f"output: out\nexecutor: {{plugin: ray, workers: 1, runtime_env: {{x: {_bomb()}}}}}\n"
                      "source: {plugin: folders, root: faces}\nsinks: [{plugin: mxrec, path: rec}]\n")
    assert len(hidden.read_text()) < 600
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(cfg), str(hidden)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    for path, m in zip([cfg, hidden], json.loads(r.stdout)):
        assert m["error"] and "alias bomb" in m["error"] and m["error"].startswith(f"{path}:"), m
        assert m["constructed"] == 0, m  # refused on the node graph: nothing built
        assert m["seconds"] < 5 and m["peak_bytes"] < 16 << 20, m


def test_reasonable_aliases_still_work(tmp_path, root):
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        sinks: [&rec {plugin: mxrec, path: rec, layout: plain}, {<<: *rec, path: rec2}]
        """)
    spec = load_config(cfg)
    assert [s.params.layout for s in spec.sinks] == ["plain", "plain"]


def test_deep_nesting_is_one_line(tmp_path, root):
    cfg = tmp_path / "deep.yaml"
    cfg.write_text("output: out\nsource: {plugin: folders, root: faces}\nsinks: " + "[" * 50000 + "]" * 50000 + "\n")
    r = facekit_cli("validate", cfg)
    assert r.returncode == 2 and "nested too deeply" in r.stderr and "Traceback" not in r.stderr


def test_validate_on_binary_file(tmp_path):
    """Item 15: `facekit validate` on a binary file: one line."""
    cfg = tmp_path / "model.yaml"
    cfg.write_bytes(random.Random(0).randbytes(4096) + b"\xff\xfe\x00")  # seeded: same file every run
    r = facekit_cli("validate", cfg)
    assert r.returncode == 2 and "not a YAML text file" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_symlinks_are_resolved_consistently(tmp_path, root):
    """An output that is a link to another disk is fine; an output inside the source folder
    reached through a link to it is refused."""
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "out")
    cfg = write_config(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        sinks: [{plugin: mxrec, path: rec}]
        """)
    load_config(cfg)
    os.symlink(root, tmp_path / "facelink")
    msg = _err(tmp_path, """
        output: faces/res
        source: {plugin: folders, root: facelink}
        sinks: [{plugin: mxrec, path: rec}]
        """)
    assert "inside source (folders)'s input folder" in msg


def test_output_linked_from_inside_the_source_is_refused(tmp_path, root):
    """`-o faces/zz_out` where faces/zz_out is a link to an empty folder elsewhere: the
    source would still list (and read) the output through the link."""
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "zz_out")
    msg = _err(tmp_path, """
        output: faces/zz_out
        source: {plugin: folders, root: faces}
        sinks: [{plugin: mxrec, path: rec}]
        """)
    assert "inside source (folders)'s input folder" in msg


def test_model_validator_errors_name_the_stage(tmp_path, root, monkeypatch):
    """A stage-level validation error (no parameter name) reads `detector (retinaface): ...`,
    not `parameter ''`."""
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "nothing-here"))
    msg = _err(tmp_path, """
        output: out
        source: {plugin: folders, root: faces}
        detector: {plugin: retinaface}
        aligner: {plugin: arcface}
        sinks: [{plugin: mxrec, path: rec}]
        """)
    assert "detector (retinaface): no detection model given" in msg and "parameter ''" not in msg
