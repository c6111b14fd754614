"""A plugin package made here, with its own pyproject.toml and a `facekit` entry point,
installed with pip, is listed by `facekit plugins` and used by a pipeline that names it; a
plugin that adds a command (`register_commands(cli)`) is in `facekit --help`, runs and is
listed; a plugin whose `register_commands` fails, or takes a command's name, or plugins
that cannot be loaded at all leave the command line working."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import facekit_cli, faces_root, install_plugin, link_aligned_112, plugin_pyproject, write_config

PLUGIN = '''
"""A detector that trusts pre-aligned 112x112 chips: the ArcFace template points."""
import numpy as np
from pydantic import Field
import facekit
from facekit.vision import template_for


class TemplateParams(facekit.DetectorParams):
    scale: float = Field(1.0, gt=0, description="multiply the template by this")


class TemplateDetector(facekit.Detector):
    name = "template"
    Params = TemplateParams
    description = "landmarks of the ArcFace template, scaled to the image"

    def detect(self, image):
        h, w = image.shape[:2]
        lmk = template_for(112) * np.array([w / 112, h / 112], np.float32) * self.params.scale
        box = np.array([[0, 0, w, h]], np.float32)
        return facekit.Detections(box, np.ones(1, np.float32), lmk[None].astype(np.float32))


@facekit.hookimpl
def register_stages(register):
    register(TemplateDetector)
'''

PYPROJECT = plugin_pyproject("facekit-template-detector", "template", "facekit_template_detector", "0.3.1")


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    return install_plugin(tmp_path_factory, PYPROJECT, "facekit_template_detector", PLUGIN)


def test_listed_by_facekit_plugins(installed_plugin):
    r = subprocess.run([sys.executable, "-m", "facekit.cli", "plugins", "--json"],
                       capture_output=True, text=True, env=installed_plugin)
    assert r.returncode == 0, r.stderr
    listing = {p["name"]: p for p in json.loads(r.stdout)}
    p = listing["template"]
    assert p["version"] == "0.3.1" and p["distribution"] == "facekit-template-detector"
    assert p["error"] is None
    (stage,) = p["stages"]
    assert stage["kind"] == "detector" and stage["name"] == "template"
    assert p["executors"] == [] and p["commands"] == []
    params = {x["name"]: x for x in stage["params"]}
    assert params["scale"]["default"] == 1.0 and params["select"]["default"] == "largest_central"
    # built-ins are listed through the very same entry-point group
    assert {"folders", "mxrec", "retinaface", "mtcnn", "haar", "arcface", "executors", "commands"} <= set(listing)
    # executors and commands are listed apart from the stages
    assert listing["executors"]["stages"] == []
    assert {e["name"] for e in listing["executors"]["executors"]} == {"threads", "inprocess", "processes"}
    assert all(e["kind"] == "executor" for e in listing["executors"]["executors"])
    assert {c["name"] for c in listing["commands"]["commands"]} == {
        "align", "eval", "init", "pairs", "mask-sheet", "models", "overlap", "report", "show", "inspect", "verify", "reindex"
    }
    r = subprocess.run([sys.executable, "-m", "facekit.cli", "plugins"], capture_output=True, text=True,
                       env=installed_plugin)
    assert "template 0.3.1" in r.stdout and "detector template" in r.stdout


def test_pipeline_uses_third_party_detector(tmp_path, installed_plugin, data_dir):
    root = tmp_path / "root"
    link_aligned_112(data_dir, root)
    cfg = write_config(
        tmp_path,
        """
        output: out
        source: {plugin: folders, root: root}
        detector: {plugin: template}
        aligner: {plugin: arcface}
        sinks: [{plugin: folders, path: faces}]
        """,
    )
    r = subprocess.run([sys.executable, "-m", "facekit.cli", "run", "-q", str(cfg)],
                       capture_output=True, text=True, env=installed_plugin)
    assert r.returncode == 0, r.stderr
    assert "faces kept         8" in r.stdout
    lmk = (tmp_path / "out" / "faces" / "landmarks.txt").read_text().splitlines()
    assert len(lmk) == 8 and lmk[0].split(" ")[2:4] == ["38.295", "51.696"]
    # without the plugin on the path the same config is refused, listing what is installed
    r = subprocess.run([sys.executable, "-m", "facekit.cli", "validate", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown detector plugin 'template'" in r.stderr


COMMAND_PLUGIN = '''
"""A plugin that adds a command to the facekit command line."""
import click
import facekit


@facekit.hookimpl
def register_commands(cli):
    @cli.command()
    @click.argument("name")
    @click.option("--shout", is_flag=True, help="upper case")
    def hello(name, shout):
        """Greet NAME from a third-party plugin."""
        msg = f"hello {name} from facekit-hello"
        click.echo(msg.upper() if shout else msg)
'''

COMMAND_PYPROJECT = plugin_pyproject("facekit-hello", "hello", "facekit_hello", "1.2.0")

BROKEN_PLUGIN = '''
"""register_commands adds a command, then fails: nothing of it may stay."""
import click
import facekit


@facekit.hookimpl
def register_commands(cli):
    @cli.command()
    def half():
        """Added before the hook failed."""
    raise RuntimeError("cannot set up\\nthe commands")
'''

CLASH_PLUGIN = '''
"""register_commands replaces facekit's `run` and a built-in `eval`, and adds `clash-ok`."""
import click
import facekit


@facekit.hookimpl
def register_commands(cli):
    @cli.command("run")
    def my_run():
        """Not facekit's run."""
        click.echo("hijacked")

    cli.add_command(click.Command("eval", callback=lambda: click.echo("hijacked")))

    @cli.command("clash-ok")
    def ok():
        """A new name: kept."""
        click.echo("clash-ok ran")
'''

DUPLICATE_PLUGIN = '''
"""Registers a source named like the built-in `folders`: the plugins cannot be loaded."""
import facekit


class Folders(facekit.Source):
    name = "folders"
    Params = facekit.SourceParams

    def __iter__(self):
        return iter(())


@facekit.hookimpl
def register_stages(register):
    register(Folders)
'''


def _commands(help_text: str) -> set:
    """The command names of a ``--help`` text's ``Commands:`` section."""
    return set(re.findall(r"^  (\S+)", help_text.split("\nCommands:\n", 1)[1], re.M))


def _first_path(env: dict) -> str:
    return env["PYTHONPATH"].split(os.pathsep)[0]


@pytest.fixture(scope="module")
def command_plugin(tmp_path_factory):
    return install_plugin(tmp_path_factory, COMMAND_PYPROJECT, "facekit_hello", COMMAND_PLUGIN)


@pytest.fixture(scope="module")
def odd_plugins(tmp_path_factory, command_plugin):
    """The command plugin together with a plugin whose hook fails and one that takes
    facekit's command names."""
    broken = install_plugin(
        tmp_path_factory, plugin_pyproject("facekit-broken", "broken", "facekit_broken", "1.2.0"), "facekit_broken", BROKEN_PLUGIN
    )
    clash = install_plugin(
        tmp_path_factory, plugin_pyproject("facekit-clash", "aaa_clash", "facekit_clash", "1.2.0"), "facekit_clash", CLASH_PLUGIN
    )
    env = dict(command_plugin)
    env["PYTHONPATH"] = os.pathsep.join([_first_path(broken), _first_path(clash), command_plugin["PYTHONPATH"]])
    return env


def test_plugin_command_in_help_runs_and_is_listed(command_plugin):
    r = facekit_cli("--help", env=command_plugin)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^  hello +Greet NAME from a third-party plugin", r.stdout, re.M), r.stdout
    r = facekit_cli("hello", "world", "--shout", env=command_plugin)
    assert r.returncode == 0 and r.stdout == "HELLO WORLD FROM FACEKIT-HELLO\n", r.stderr
    r = facekit_cli("hello", env=command_plugin)  # its own usage errors, as click gives them
    assert r.returncode == 2 and "Missing argument 'NAME'" in r.stderr
    r = facekit_cli("plugins", "--json", env=command_plugin)
    assert r.returncode == 0, r.stderr
    p = {x["name"]: x for x in json.loads(r.stdout)}["hello"]
    assert p["version"] == "1.2.0" and p["error"] is None and p["stages"] == [] and p["executors"] == []
    assert p["commands"] == [{"name": "hello", "description": "Greet NAME from a third-party plugin."}]
    r = facekit_cli("plugins", env=command_plugin)
    assert "hello 1.2.0  (facekit_hello)\n  command hello: Greet NAME from a third-party plugin." in r.stdout


def test_failing_register_commands_leaves_the_cli_working(odd_plugins, tmp_path):
    r = facekit_cli("--help", env=odd_plugins)
    assert r.returncode == 0, r.stderr
    assert _commands(r.stdout) == {
        "align", "clash-ok", "eval", "hello", "init", "inspect", "mask-sheet", "models", "overlap", "pairs", "plugins", "reindex", "report", "run", "show", "validate", "verify"
    }, r.stdout
    # the failed hook's half-made command is not there; the others work
    r = facekit_cli("half", env=odd_plugins)
    assert r.returncode == 2 and "No such command 'half'" in r.stderr
    assert facekit_cli("hello", "x", env=odd_plugins).stdout == "hello x from facekit-hello\n"
    assert facekit_cli("clash-ok", env=odd_plugins).stdout == "clash-ok ran\n"
    # facekit's run and the built-in eval were not replaced
    r = facekit_cli("run", "--help", env=odd_plugins)
    assert r.returncode == 0 and "Run a pipeline" in r.stdout and "hijacked" not in r.stdout
    r = facekit_cli("eval", "--help", env=odd_plugins)
    assert r.returncode == 0 and "Score an ONNX recognition model" in r.stdout
    faces_root(tmp_path)
    cfg = write_config(tmp_path, "output: out\nsource: {plugin: folders, root: faces}\nsinks: [{plugin: folders, path: f}]\n")
    r = facekit_cli("validate", cfg, env=odd_plugins)
    assert r.returncode == 0 and f"{cfg}: OK" in r.stdout, r.stderr
    # each problem is one line of `facekit plugins`
    r = facekit_cli("plugins", env=odd_plugins)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    i = lines.index("broken 1.2.0  (facekit_broken)")
    assert lines[i + 1] == "  ERROR: register_commands failed: RuntimeError: cannot set up the commands"
    assert not lines[i + 2].startswith("  "), lines[i + 2]  # no command listed for it
    i = lines.index("aaa_clash 1.2.0  (facekit_clash)")
    assert lines[i + 1] == (
        "  ERROR: command 'eval' not replaced: it is commands's; command 'run' not replaced: it is facekit's"
    )
    assert lines[i + 2] == "  command clash-ok: A new name: kept."
    listing = {p["name"]: p for p in json.loads(facekit_cli("plugins", "--json", env=odd_plugins).stdout)}
    assert listing["broken"]["commands"] == [] and "cannot set up the commands" in listing["broken"]["error"]
    assert [c["name"] for c in listing["aaa_clash"]["commands"]] == ["clash-ok"]
    assert listing["hello"]["error"] is None and listing["commands"]["error"] is None


def test_plugins_that_cannot_load_leave_facekits_own_commands(tmp_path_factory, command_plugin):
    """Two plugins registering the same stage name: no plugin loads (`facekit run` refuses
    the config), `--help` still works and says why the plugin commands are missing."""
    dup = install_plugin(
        tmp_path_factory, plugin_pyproject("facekit-dup", "dup", "facekit_dup", "1.2.0"), "facekit_dup", DUPLICATE_PLUGIN
    )
    env = dict(command_plugin)
    env["PYTHONPATH"] = os.pathsep.join([_first_path(dup), command_plugin["PYTHONPATH"]])
    why = "source 'folders' is registered by both plugin 'dup' and plugin 'folders'"
    r = facekit_cli("--help", env=env)
    assert r.returncode == 0, r.stderr
    assert _commands(r.stdout) == {"plugins", "run", "validate"}, r.stdout
    assert f"Plugin commands were not loaded: {why}" in " ".join(r.stdout.split())
    r = facekit_cli("hello", "x", env=env)
    assert r.returncode == 2 and f"No such command 'hello' (plugin commands were not loaded: {why})" in r.stderr
    r = facekit_cli("plugins", env=env)
    assert r.returncode == 2 and r.stderr == f"error: {why}\n"
