"""The isolated judge environments built by the project's own scripts (.ci/*.sh).

The mxnet 1.9.1 env on Python 3.12 (numpy 1.26 + the alias shim + setuptools' distutils)
is built only where a Python 3.12 interpreter runs here: ``FACEKIT_PYTHON312`` or
``python3.12`` on PATH (it can truly be absent, so this skips rather than fails in CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _pythons(version: str) -> list:
    """Candidate interpreters: the env variable, PATH, pyenv's versions, the system's."""
    home = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = sorted(str(p) for p in home.glob(f"versions/{version}*/bin/python{version}"))
    return [shutil.which(f"python{version}"), *found, f"/usr/bin/python{version}"]


def _python312() -> str:
    for py in (os.environ.get("FACEKIT_PYTHON312"), *_pythons("3.12")):
        if py and Path(py).exists() and subprocess.run([py, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"], capture_output=True).returncode == 0:
            return py
    pytest.skip("no runnable Python 3.12 (set FACEKIT_PYTHON312)")


def test_mxnet_env_script_builds_a_working_env_on_python_312(tmp_path):
    """PYTHON=python3.12 bash .ci/mxnet-env.sh VENV: numpy 1.23.5 has no 3.12 wheel, so the
    script pins numpy 1.26.4 and installs the shim; mxnet 1.9.1 then imports and
    round-trips a record, and the restored aliases are the builtins."""
    venv = tmp_path / "mx312"
    r = subprocess.run(
        ["bash", REPO / ".ci" / "mxnet-env.sh", venv],
        env={**os.environ, "PYTHON": _python312()},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "mxnet 1.9.1 numpy 1.26.4 python 3.12" in r.stdout
    code = (
        "import sys, numpy as np, mxnet as mx\n"
        "assert sys.version_info[:2] == (3, 12) and np.bool is bool and np.int is int\n"
        "h = mx.recordio.IRHeader(0, 3.0, 7, 0)\n"
        "h2, s = mx.recordio.unpack(mx.recordio.pack(h, b'abc'))\n"
        "assert (h2.label, h2.id, s) == (3.0, 7, b'abc')\n"
        "print('ok')\n"
    )
    out = subprocess.run([venv / "bin" / "python", "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_mxnet_env_script_refuses_python_313_with_a_one_line_reason(tmp_path):
    """No numpy 1.x exists for 3.13+: the script says so (and what to set) instead of
    failing somewhere inside pip."""
    ok = [
        py
        for py in (os.environ.get("FACEKIT_PYTHON313"), *_pythons("3.13"))
        if py and Path(py).exists()
        and not subprocess.run([py, "-c", "import sys; assert sys.version_info >= (3, 13)"], capture_output=True).returncode
    ]
    if not ok:
        pytest.skip("no runnable Python >= 3.13 (set FACEKIT_PYTHON313)")
    py = ok[0]
    r = subprocess.run(
        ["bash", REPO / ".ci" / "mxnet-env.sh", tmp_path / "mx313"],
        env={**os.environ, "PYTHON": py},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "set PYTHON=python3.12" in r.stderr and not (tmp_path / "mx313").exists()
