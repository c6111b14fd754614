"""issue 27 part 3: entry points without YAML. ``facekit align SRC DST`` runs the standard
pipeline through the same code as ``facekit run`` (its outputs are the YAML run's bytes);
``--set KEY=VALUE`` overrides any key of a config on ``run``/``validate`` (checked like the
file, errors naming the ``--set``); ``facekit init`` writes a commented starter config that
validates as written and runs once its source names the photos."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml

from conftest import facekit_cli, link_identities, write_config
from facekit.errors import ConfigError
from facekit.pipeline.config import load_config
from facekit.pipeline.overrides import apply_overrides, parse_set

#: a few shared identities (two with a single photo: the seed rule drops them)
FEW = ["Alex_Lacamoire", "Amy_Adams", "John_Salley", "deepface_id04", "mtcnn_ivan"]


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path -> sha256)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _ok(r):
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def _error(r, status: int = 2) -> str:
    """The error of a failed command: no traceback, the problem on one line."""
    assert r.returncode == status, f"rc={r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    return r.stderr


@pytest.mark.slow
def test_align_equals_the_yaml_run_bytes(tmp_path, data_dir, scrfd_model):
    """issue 27 part 3: `facekit align ids out --model scrfd` on the 21 shared identities
    writes the same train.rec/.idx/property/.lst bytes as `facekit run` of the config a user
    would write (folders -> retinaface -> arcface -> mxrec), and --print-config shows that
    config."""
    link_identities(data_dir, tmp_path / "ids")
    cfg = write_config(tmp_path, f"""\
        output: yaml-out
        source: {{plugin: folders, root: ids}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        aligner: {{plugin: arcface}}
        sinks:
          - {{plugin: mxrec, path: rec}}
        """)
    ran = _ok(facekit_cli("run", cfg, "-q"))
    aligned = _ok(facekit_cli("align", "ids", "align-out", "--model", scrfd_model, "-q", cwd=tmp_path))
    want = _tree(tmp_path / "yaml-out" / "rec")
    assert {"train.rec", "train.idx", "property", "train.lst"} <= set(want), want
    assert _tree(tmp_path / "align-out" / "rec") == want
    assert (tmp_path / "align-out" / "rec" / "train.rec").stat().st_size > 50_000
    # the same counts in both summaries (images read, faces kept, identities, rejects)
    keep = lambda out: [line for line in out.splitlines() if not line.startswith(("seconds", "sink", "rejects", "results"))]  # noqa: E731
    assert keep(aligned.stdout) == keep(ran.stdout)
    shown = _ok(facekit_cli("align", "ids", "align-out", "--model", scrfd_model, "--print-config", cwd=tmp_path))
    assert yaml.safe_load(shown.stdout) == {
        "output": str(tmp_path / "align-out"),
        "source": {"plugin": "folders", "root": str(tmp_path / "ids")},
        "detector": {"plugin": "retinaface", "model": str(scrfd_model)},
        "aligner": {"plugin": "arcface"},
        "sinks": [{"plugin": "mxrec", "path": "rec"}],
    }


@pytest.mark.slow
def test_align_to_folders_with_the_default_detector(tmp_path, data_dir, has_mtcnn):
    """issue 27 part 3: `facekit align --to folders -w 0` (default detector: the quickstart's
    mtcnn, no model file) writes the aligned identity folders `facekit run` writes for the
    same config, and --set reaches align's config too."""
    link_identities(data_dir, tmp_path / "ids", FEW)
    cfg = write_config(tmp_path, """\
        output: yaml-out
        source: {plugin: folders, root: ids, min_images: 1}
        detector: {plugin: mtcnn}
        aligner: {plugin: arcface}
        sinks: [{plugin: folders, path: aligned}]
        workers: 0
        """)
    _ok(facekit_cli("run", cfg, "-q"))
    _ok(facekit_cli("align", "ids", "out", "--to", "folders", "-w", "0", "--set", "source.min_images=1", "-q",
                    cwd=tmp_path))
    want = _tree(tmp_path / "yaml-out" / "aligned")
    assert sum(name.endswith(".jpg") for name in want) >= 15, want
    assert _tree(tmp_path / "out" / "aligned") == want


def test_align_errors_name_the_option(tmp_path, data_dir):
    """issue 27 part 3: a bad align option is an error naming that option (SRC, DST,
    --detector, --model), before any work, with no traceback and nothing written."""
    link_identities(data_dir, tmp_path / "ids", FEW)
    err = _error(facekit_cli("align", "nothere", "out", cwd=tmp_path))
    assert "SRC nothere: source (folders): parameter 'root'" in err and "does not exist" in err, err
    err = _error(facekit_cli("align", "ids", "out", "--detector", "nope", cwd=tmp_path))
    assert "--detector nope: detector: unknown detector plugin 'nope'" in err, err
    err = _error(facekit_cli("align", "ids", "out", "--model", "sface_2021dec", cwd=tmp_path))
    assert err == "error: --model sface_2021dec: a recognizer model, not a detector ('facekit models' lists them)\n"
    err = _error(facekit_cli("align", "ids", "out", "--detector", "mtcnn", "--model", "m.onnx", cwd=tmp_path))
    assert "--model m.onnx: detector (mtcnn): unknown parameter 'model'" in err, err
    err = _error(facekit_cli("align", "ids", "ids/out", cwd=tmp_path))
    assert "DST ids/out: output" in err and "the run would read its own outputs" in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "ids" / "out").exists()
    # a detector giving boxes only gets the boxcrop aligner (arcface needs landmarks)
    shown = _ok(facekit_cli("align", "ids", "out", "--detector", "haar", "--print-config", cwd=tmp_path))
    assert yaml.safe_load(shown.stdout)["aligner"] == {"plugin": "boxcrop"}


def _two_sinks(tmp_path, data_dir, scrfd_model) -> Path:
    link_identities(data_dir, tmp_path / "ids", FEW)
    return write_config(tmp_path, f"""\
        output: out
        source: {{plugin: folders, root: ids}}
        detector:
          plugin: retinaface
          model: {scrfd_model}
        aligner: {{plugin: arcface}}
        sinks:
          - {{plugin: mxrec, path: rec}}
          - {{plugin: folders, path: aligned}}
        """)


def test_set_overrides_any_key(tmp_path, data_dir, scrfd_model):
    """issue 27 part 3: --set replaces a key (a number, a path below output), adds a missing
    key, replaces a list entry with a YAML flow mapping and appends one past the end."""
    cfg = _two_sinks(tmp_path, data_dir, scrfd_model)
    spec = load_config(cfg, overrides=[parse_set("detector.threshold=0.6"), parse_set("sinks.0.path=rec2"),
                                       parse_set("sinks.1={plugin: folders, path: f, prefix: id_}"),
                                       parse_set("sinks.2={plugin: folders, path: g}"),
                                       parse_set("source.min_images=1")])
    assert spec.detector.params.threshold == 0.6
    assert [sc.params.path for sc in spec.sinks] == [tmp_path / "out" / n for n in ("rec2", "f", "g")]
    assert spec.sinks[1].params.prefix == "id_" and spec.source.params.min_images == 1
    assert spec.detector.params.model == scrfd_model  # not overridden: the file's
    # on the command line, validate shows the overridden sinks
    r = _ok(facekit_cli("validate", cfg, "--set", "sinks.0.path=rec2", "--set", "sinks.1={plugin: mxrec, path: r3}"))
    assert "sinks[0] (mxrec)" in r.stdout and "sinks[1] (mxrec)" in r.stdout, r.stdout


@pytest.mark.slow
def test_run_with_set_writes_where_the_set_says(tmp_path, data_dir, scrfd_model):
    """issue 27 part 3: `facekit run CONFIG --set detector.threshold=0.6 --set sinks.0.path=rec2`
    runs the overridden pipeline: the RecordIO lands in rec2, not in the file's rec."""
    cfg = _two_sinks(tmp_path, data_dir, scrfd_model)
    _ok(facekit_cli("run", cfg, "-q", "--set", "detector.threshold=0.6", "--set", "sinks.0.path=rec2"))
    assert (tmp_path / "out" / "rec2" / "train.rec").stat().st_size > 0
    assert not (tmp_path / "out" / "rec").exists()
    assert any((tmp_path / "out" / "aligned").iterdir())


def test_set_errors_name_the_set(tmp_path, data_dir, scrfd_model):
    """issue 27 part 3: an invalid --set value is reported like the file's errors but
    naming the --set (no line: it has none); a key path the config lacks, a malformed --set
    and a value that is not YAML are one-line errors naming it; the file's own errors keep
    their lines."""
    cfg = _two_sinks(tmp_path, data_dir, scrfd_model)
    for command in ("validate", "run"):
        err = _error(facekit_cli(command, cfg, "--set", "detector.threshold=abc"))
        assert err.splitlines()[-1].strip().startswith(
            "--set detector.threshold=abc: detector (retinaface): parameter 'threshold': "), err
    err = _error(facekit_cli("run", cfg, "--set", "sinks.5.path=x"))
    assert err == ("error: --set sinks.5.path=x: sinks is a list of 2 entries (sinks.0 to sinks.1; sinks.2=... "
                   "adds one)\n"), err
    err = _error(facekit_cli("validate", cfg, "--set", "merge.identities=apply"))
    assert err == "error: --set merge.identities=apply: the config has no 'merge' (give it whole: --set merge=...)\n"
    err = _error(facekit_cli("validate", cfg, "--set", "output.x=1"))
    assert err.startswith("error: --set output.x=1: output is str 'out', not a mapping or list") and err.count("\n") == 1
    assert _error(facekit_cli("validate", cfg, "--set", "detector.threshold")).startswith(
        "error: --set detector.threshold: give KEY=VALUE")
    assert _error(facekit_cli("validate", cfg, "--set", "sinks.0={plugin: mxrec")).startswith(
        "error: --set sinks.0={plugin: mxrec: the value is not YAML")
    # both at once: the --set's error names it, the file's own (sinks[1]'s unknown key) its line
    bad = cfg.read_text().replace("path: aligned}", "path: aligned, colour: red}")
    cfg.write_text(bad)
    err = _error(facekit_cli("validate", cfg, "--set", "sinks.0={plugin: mxrec, path: r, shards: x}"))
    line = bad.splitlines().index(next(x for x in bad.splitlines() if "colour" in x)) + 1
    assert f"{cfg}:{line}: sinks[1] (folders): unknown parameter 'colour'" in err, err
    assert "--set sinks.0={plugin: mxrec, path: r, shards: x}: sinks[0] (mxrec): parameter 'shards'" in err, err


def test_set_leaves_yaml_aliases_alone():
    """issue 27 part 3: a --set below a mapping the YAML shares through an alias changes it
    only where the key points."""
    data = yaml.safe_load("a: &x {k: 1, m: {n: 2}}\nb: *x\n")
    placed = apply_overrides(data, [parse_set("b.m.n=3"), parse_set("b.k=[1, 2]")])
    assert data == {"a": {"k": 1, "m": {"n": 2}}, "b": {"k": [1, 2], "m": {"n": 3}}}
    assert placed == [(("b", "m", "n"), "--set b.m.n=3"), (("b", "k"), "--set b.k=[1, 2]")]
    with pytest.raises(ConfigError, match=r"^--set b\.k\.0\.z=1: b\.k\.0 is int 1, not a mapping or list"):
        apply_overrides(data, [parse_set("b.k.0.z=1")])


@pytest.mark.slow
def test_init_writes_a_starter_that_validates_and_runs(tmp_path, data_dir, has_mtcnn):
    """issue 27 part 3: `facekit init` writes a commented starter config (and an empty
    photos/ for it to read) that `facekit validate` accepts as written, refuses to overwrite
    it, and runs on the shared identities once source.root names them."""
    r = _ok(facekit_cli("init", cwd=tmp_path))
    cfg = tmp_path / "facekit.yaml"
    text = cfg.read_text()
    assert "wrote facekit.yaml" in r.stdout and (tmp_path / "photos").is_dir()
    data = yaml.safe_load(text)
    assert set(data) == {"output", "source", "detector", "aligner", "sinks"}
    for key in ("output:", "source:", "detector:", "aligner:", "sinks:"):  # each key says what it does
        above = text.split(f"\n{key}")[0].rstrip().splitlines()[-1]
        assert above.startswith("# "), (key, above)
    assert "facekit models get scrfd_500m" in text and "model: scrfd_500m" in text
    _ok(facekit_cli("validate", "facekit.yaml", cwd=tmp_path))
    # never overwritten
    err = _error(facekit_cli("init", cwd=tmp_path), status=1)
    assert err == "error: facekit.yaml exists; facekit init never overwrites a file (give another PATH)\n"
    assert cfg.read_text() == text
    # the user fills the source path, and it runs
    ids = link_identities(data_dir, tmp_path / "ids", FEW)
    r = _ok(facekit_cli("run", "facekit.yaml", "-q", "--set", f"source.root={ids}", cwd=tmp_path))
    assert "identities written 3 (dropped: 2)" in r.stdout, r.stdout
    assert (tmp_path / "facekit-out" / "rec" / "train.idx").stat().st_size > 0
    # --source writes that folder (relative to the config when inside its folder), no photos/
    sub = tmp_path / "sub"
    sub.mkdir()
    _ok(facekit_cli("init", sub / "p.yaml", "--source", ids, cwd=tmp_path))
    assert yaml.safe_load((sub / "p.yaml").read_text())["source"]["root"] == str(ids)
    assert not (sub / "photos").exists()
    _ok(facekit_cli("validate", sub / "p.yaml"))
    _ok(facekit_cli("init", "q.yaml", "--source", "ids", cwd=tmp_path))
    assert yaml.safe_load((tmp_path / "q.yaml").read_text())["source"]["root"] == "ids"
    # a missing folder for PATH: one line, nothing made
    err = _error(facekit_cli("init", "nope/p.yaml", cwd=tmp_path), status=1)
    assert err.startswith("error: nope/p.yaml: cannot write it: ") and err.count("\n") == 1
    assert not (tmp_path / "nope").exists()
    assert os.listdir(sub) == ["p.yaml"]
