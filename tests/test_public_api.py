"""facekit's public API: the built-in plugins (``plugins/``, package ``facekit_plugins``) are
written as a third-party plugin would be, so they import only from ``facekit`` and the
packages ``facekit.formats``, ``facekit.vision``, ``facekit.eval``, ``facekit.pipeline``
(each name in that package's ``__all__``), never from a module below them. Every name a
package exports exists, and importing the packages stays cheap (no onnxruntime, no torch)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import types

import pytest

from conftest import REPO

PUBLIC = ("facekit", "facekit.formats", "facekit.vision", "facekit.eval", "facekit.pipeline", "facekit.clean")
PLUGIN_FILES = sorted((REPO / "plugins").glob("*.py"))


def _exports(package: str) -> set:
    return set(importlib.import_module(package).__all__)


def _dotted(node: ast.AST):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def _public_chain(name: str) -> bool:
    """``facekit.X...`` reads only exported names: ``facekit.<in facekit.__all__>`` or
    ``facekit.<public package>.<in its __all__>``."""
    parts = name.split(".")
    if ".".join(parts[:2]) in PUBLIC:
        return len(parts) == 2 or parts[2] in _exports(".".join(parts[:2]))
    return parts[1] in _exports("facekit")


def private_uses(source: str, filename: str = "<plugin>") -> list[str]:
    """Every use of facekit below its public packages in ``source``, as ``line N: ...``:
    an ``import``/``from`` (module level or inside a function) of a facekit module that is
    not one of :data:`PUBLIC`; a name imported from a public package that is not in its
    ``__all__`` (a submodule, say); an attribute chain such as ``facekit.vision.align.x``.
    Relative imports and ``facekit_plugins`` (the plugins' own modules) are allowed."""
    tree = ast.parse(source, filename)
    inner = set()  # attribute nodes that are part of a longer chain: only the outermost is checked
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            inner.add(id(node.value))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "facekit" and a.name not in PUBLIC:
                    bad.append(f"line {node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level or mod.split(".")[0] != "facekit":
                continue
            if mod not in PUBLIC:
                bad.append(f"line {node.lineno}: from {mod} import ...")
                continue
            for a in node.names:
                if a.name not in _exports(mod):
                    bad.append(f"line {node.lineno}: from {mod} import {a.name} (not in {mod}.__all__)")
        elif isinstance(node, ast.Attribute) and id(node) not in inner:
            name = _dotted(node)
            if name and name.startswith("facekit.") and not _public_chain(name):
                bad.append(f"line {node.lineno}: {name}")
    return bad


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: p.name)
def test_plugin_imports_only_the_public_api(path):
    bad = private_uses(path.read_text(encoding="utf-8"), str(path))
    assert not bad, f"{path.name} uses facekit below its public packages:\n" + "\n".join(bad)


def test_the_check_catches_private_imports():
    """The checker itself: each way of reaching below the public packages is caught, the
    public ones are not."""
    src = """
import facekit
import facekit.vision
import facekit.vision.align
from facekit.formats.recordio import pack
from facekit.vision import onnxdet, template_for
from facekit_plugins.mxrec import MxrecSink
from . import mxrec

def f():
    from facekit.eval.recognition import OnnxEmbedder
    return facekit.vision.align.template_for(112), facekit.vision.template_for(112), facekit.Detector
"""
    bad = private_uses(src)
    assert bad == [
        "line 4: import facekit.vision.align",
        "line 5: from facekit.formats.recordio import ...",
        "line 6: from facekit.vision import onnxdet (not in facekit.vision.__all__)",
        "line 11: from facekit.eval.recognition import ...",
        "line 12: facekit.vision.align.template_for",
    ], bad


@pytest.mark.parametrize("package", PUBLIC)
def test_every_exported_name_exists(package):
    mod = importlib.import_module(package)
    names = mod.__all__
    assert len(names) == len(set(names)), f"{package}.__all__ has duplicates"
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{package}.__all__ names missing attributes: {missing}"
    modules = [n for n in names if isinstance(getattr(mod, n), types.ModuleType)]
    assert not modules, f"{package}.__all__ exports modules (export their names instead): {modules}"
    assert set(names) <= set(dir(mod))


def test_unknown_name_is_an_attribute_error():
    import facekit.vision

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        facekit.vision.nope  # noqa: B018
    with pytest.raises(ImportError):
        exec("from facekit.formats import nope", {})


def test_importing_the_public_packages_is_cheap():
    """``import facekit`` and the package ``__init__``s import neither onnxruntime nor torch
    nor any submodule of formats/vision/eval beyond what the core itself needs."""
    code = (
        "import sys; import facekit, facekit.formats, facekit.vision, facekit.eval, facekit.pipeline; "
        "print(' '.join(m for m in ('onnxruntime', 'torch', 'onnx', 'tensorflow', 'facekit.eval.recognition', "
        "'facekit.vision.onnxdet', 'facekit.vision.masks', 'facekit.formats.evalbin') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"importing facekit's packages loaded: {r.stdout.strip()}"


def test_cli_start_imports_no_model_runtime():
    """The command line loads every plugin to call its ``register_commands`` hook: neither
    that nor facekit's commands import onnxruntime, onnx, torch or TensorFlow."""
    code = (
        "import sys; from facekit.cli.main import main; "
        "print(' '.join(main.list_commands(None))); "
        "print(' '.join(m for m in ('onnxruntime', 'onnx', 'torch', 'tensorflow') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    commands, loaded = (r.stdout.splitlines() + [""])[:2]
    assert commands == "align eval init inspect mask-sheet models overlap pairs plugins reindex report run show validate verify"
    assert loaded == "", f"the command line's start loaded {loaded}"


def test_plugins_load_once_when_a_pipeline_loads_them_first():
    """The engine and every worker process load the plugins (get_registry) before any
    command line exists; the built-in commands plugin imports ``facekit.cli``, which must not
    load the plugins again from inside that import (it did: two loads, every plugin's
    ``register_*`` hooks called twice, ~0.15 s more per process). The command line then
    adds the plugins' commands from the same registry."""
    code = (
        "import facekit.plugins as P\n"
        "calls = []\n"
        "orig = P.load_registry\n"
        "P.load_registry = lambda *a, **k: calls.append(1) or orig(*a, **k)\n"
        "reg = P.get_registry()\n"
        "import sys\n"
        "assert 'facekit.cli.commands' in sys.modules\n"
        "from facekit.cli.main import main\n"
        "print(len(calls), ' '.join(main.list_commands(None)), len(calls))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    first, *commands, after = r.stdout.split()
    assert (first, after) == ("1", "1"), f"plugins loaded {first} time(s), {after} after the command line started"
    assert " ".join(commands) == "align eval init inspect mask-sheet models overlap pairs plugins reindex report run show validate verify"
