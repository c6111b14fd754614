"""A plugin package made here, with its own pyproject.toml and a `facekit` entry point,
installed with pip, is listed by `facekit plugins` and used by a pipeline that names it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import install_plugin, link_aligned_112, write_config

PLUGIN = '''
"""A detector that trusts pre-aligned 112x112 chips: the ArcFace template points."""
import numpy as np
from pydantic import Field
import facekit
from facekit.vision.align import template_for


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

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "facekit-template-detector"
version = "0.3.1"
dependencies = []

[project.entry-points.facekit]
template = "facekit_template_detector"
"""


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
    params = {x["name"]: x for x in stage["params"]}
    assert params["scale"]["default"] == 1.0 and params["select"]["default"] == "largest_central"
    # built-ins are listed through the very same entry-point group
    assert {"folders", "mxrec", "retinaface", "mtcnn", "haar", "arcface"} <= set(listing)
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
