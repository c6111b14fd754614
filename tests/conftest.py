"""Shared fixtures: the real test material in ../shared/data and the isolated mxnet env.

- ``FACEKIT_TEST_DATA`` overrides the data folder (default: ``<repo>/../shared/data``).
- ``FACEKIT_MXNET_PYTHON`` overrides the python of the isolated mxnet 1.9.1 environment
  (default: ``<repo>/.ci-venv-mxnet/bin/python``, which ``.ci/run`` creates).
- ``FACEKIT_DALI_PYTHON`` likewise for the isolated NVIDIA DALI environment
  (default: ``<repo>/.ci-venv-dali/bin/python``, made by ``.ci/dali-env.sh``).
- ``FACEKIT_MTCNN_TF_PYTHON`` overrides the python of the isolated mtcnn 1.0.0 + TensorFlow
  reference environment (default: ``<repo>/.ci-venv-mtcnn-tf/bin/python``, made by
  ``.ci/mtcnn-tf-env.sh``).

Where a component is absent (a user's clone without ../shared, no mxnet env), tests that
need it skip with the reason; under CI (``CI=true``) its absence is a failure instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _missing(reason: str):
    if IN_CI:
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = Path(os.environ.get("FACEKIT_TEST_DATA", REPO.parent / "shared" / "data"))
    if not (d / "images").is_dir():
        _missing(f"test material not found at {d} (set FACEKIT_TEST_DATA)")
    return d


def _model(data_dir: Path, rel: str) -> Path:
    p = data_dir / "models" / rel
    if not p.exists():
        _missing(f"{p} missing")
    return p


@pytest.fixture(scope="session")
def scrfd_model(data_dir) -> Path:
    """The shared SCRFD-500M detector (InsightFace output convention, 5 landmarks)."""
    return _model(data_dir, "detection/scrfd_500m_bnkps.onnx")


@pytest.fixture(scope="session")
def rec_model(data_dir) -> Path:
    """The shared MobileFaceNet recognition model (112x112 RGB, 128-d)."""
    return _model(data_dir, "recognition/photo_analyze_mobilefacenet_128d.onnx")


@pytest.fixture(scope="session")
def mxnet_python() -> str:
    """Path of a python that imports the real mxnet 1.9.1 (isolated env, .ci/mxnet-env.sh)."""
    return _env_python("FACEKIT_MXNET_PYTHON", ".ci-venv-mxnet", "mxnet-env.sh", "mxnet")


def _env_python(variable: str, venv: str, script: str, what: str) -> str:
    """The python of an isolated judge env: ``$variable``, else ``<repo>/<venv>/bin/python``
    (made by ``.ci/<script>``); missing: skip, or fail under CI."""
    py = os.environ.get(variable, str(REPO / venv / "bin" / "python"))
    if not Path(py).exists():
        _missing(f"isolated {what} env not found at {py}: create it with 'bash .ci/{script}'")
    return py


def _snippet_runner(python: str, what: str):
    """``run(code, *args, timeout=600) -> stdout``: a Python snippet under ``python``;
    a non-zero exit fails the test with the snippet's output."""

    def run(code: str, *args: str, timeout: int = 600) -> str:
        r = subprocess.run(
            [python, "-c", textwrap.dedent(code), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            raise AssertionError(f"{what} snippet failed (rc={r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r.stdout

    return run


@pytest.fixture(scope="session")
def run_mxnet(mxnet_python):
    """Run a Python snippet under the real mxnet; returns its stdout. Fails on non-zero exit."""
    return _snippet_runner(mxnet_python, "mxnet")


@pytest.fixture(scope="session")
def dali_python() -> str:
    """Path of a python that imports the real NVIDIA DALI (isolated env, CPU-only use)."""
    return _env_python("FACEKIT_DALI_PYTHON", ".ci-venv-dali", "dali-env.sh", "DALI")


@pytest.fixture(scope="session")
def run_dali(dali_python):
    """Run a Python snippet under the real DALI; returns its stdout. Fails on non-zero exit."""
    return _snippet_runner(dali_python, "DALI")


@pytest.fixture(scope="session")
def has_mtcnn():
    """The ``mtcnn`` wheel's weights (a default dependency; facekit runs them on onnxruntime)."""
    import importlib.metadata

    try:
        importlib.metadata.distribution("mtcnn")
    except importlib.metadata.PackageNotFoundError:
        _missing("the mtcnn package (its weights) is not installed: pip install -e .")
    return True


@pytest.fixture(scope="session")
def mtcnn_tf_python() -> str:
    """Path of a python with the reference mtcnn 1.0.0 on TensorFlow (isolated env)."""
    return _env_python("FACEKIT_MTCNN_TF_PYTHON", ".ci-venv-mtcnn-tf", "mtcnn-tf-env.sh", "mtcnn/TensorFlow")


@pytest.fixture(scope="session")
def run_mtcnn_tf(mtcnn_tf_python):
    """Run a Python snippet in the reference mtcnn/TensorFlow env; returns its stdout."""

    def run(code: str, *args: str, timeout: int = 1200) -> str:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH="")
        r = subprocess.run(
            [mtcnn_tf_python, "-c", textwrap.dedent(code), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if r.returncode != 0:
            raise AssertionError(f"mtcnn/TensorFlow snippet failed (rc={r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r.stdout

    return run


def write_config(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def facekit_cli(*args, env=None, cwd=None):
    """Run the facekit CLI in a subprocess (as a user would)."""
    return subprocess.run(
        [sys.executable, "-m", "facekit.cli", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd
    )


def link_identities(data_dir: Path, root: Path, names=None) -> Path:
    """``root/<identity>`` symlinks to shared identity folders (all, or ``names``)."""
    root.mkdir(parents=True, exist_ok=True)
    src = data_dir / "images" / "identities"
    for name in names if names is not None else sorted(p.name for p in src.iterdir()):
        os.symlink(src / name, root / name)
    return root


def link_aligned_112(data_dir: Path, root: Path) -> Path:
    """The eight pre-aligned faces as ``root/<identity>/<file>`` (identities adaface_man,
    adaface_woman), linked, not copied."""
    for p in sorted((data_dir / "aligned_112").glob("*.jpg")):
        ident = p.stem.rsplit("_", 1)[0]
        (root / ident).mkdir(parents=True, exist_ok=True)
        os.symlink(p, root / ident / p.name)
    return root


def resized_identities(data_dir: Path, root: Path, size: int = 112) -> Path:
    """``root/<identity>/<image>.jpg``: the 94 real identity photos resized to ``size`` x
    ``size`` JPEGs (datasets of one image size, as the mxrec sink requires)."""
    import cv2

    from facekit.vision.images import decode_image, encode_jpeg

    for d in sorted((data_dir / "images" / "identities").iterdir()):
        (root / d.name).mkdir(parents=True)
        for f in sorted(d.iterdir()):
            img = cv2.resize(decode_image(f.read_bytes()), (size, size), interpolation=cv2.INTER_AREA)
            (root / d.name / (f.stem + ".jpg")).write_bytes(encode_jpeg(img))
    return root


def plugin_pyproject(dist: str, entry: str, module: str, version: str) -> str:
    """The ``pyproject.toml`` of a one-module plugin package ``dist`` (``version``) whose
    ``facekit`` entry point ``entry`` names ``module``, for :func:`install_plugin`."""
    return f"""
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "{version}"
dependencies = []

[project.entry-points.facekit]
{entry} = "{module}"
"""


def install_plugin(tmp_path_factory, pyproject: str, module_name: str, source: str) -> dict:
    """Build and ``pip install --target`` a one-module plugin package (its own pyproject with
    a ``facekit`` entry point), as a third party would ship one. Returns an environment with
    it on ``PYTHONPATH``, for subprocesses."""
    src = tmp_path_factory.mktemp(f"{module_name}-src")
    (src / "pyproject.toml").write_text(pyproject)
    (src / f"{module_name}.py").write_text(source)
    target = tmp_path_factory.mktemp(f"{module_name}-site")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(src)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    env.pop("FACEKIT_DEBUG", None)
    return env


def faces_root(tmp_path: Path) -> Path:
    """``tmp_path/faces`` with one empty identity folder: a source root configs can name."""
    r = tmp_path / "faces"
    (r / "a").mkdir(parents=True)
    return r


def config_error(tmp_path: Path, text: str) -> str:
    """The ConfigError message ``load_config`` gives for the config ``text`` (fails if valid)."""
    from facekit.pipeline.config import load_config
    from facekit.errors import ConfigError

    cfg = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    return str(e.value)
