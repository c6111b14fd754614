"""The fingerprint of a pipeline: what a finished shard's product depends on.

Used by the work folder (:mod:`facekit.pipeline.work`) to reuse only shards made by the
same pipeline: the source (less the settings only the identity gate reads: ``min_images``,
``start_id``), detector, aligner, recognizer and augmenters (plugin, plugin version and
parameters), the content of every file and folder those parameters name (model files,
texture folders: SHA-256; an ONNX model's external-data files too), the encode settings
and the code that makes the shards (:func:`code_digest`: facekit's source files and every
file of each stage's plugin package and distribution, helper modules included, so an
edited install does not reuse shards its old code made) and the installed versions of the
libraries facekit and the plugins require (:func:`library_versions`: onnxruntime, OpenCV,
the ``mtcnn`` wheel's weights...). The output folder, the executor,
the shard size (the work folder records it) and the sinks are left out: they do not change
a shard's product.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.metadata
import re
import sys
from itertools import chain
from pathlib import Path
from typing import Iterator

import facekit.pipeline
from facekit.pipeline.config import PipelineSpec, StageConfig
from facekit.pipeline.shards import file_stamp
from facekit.pipeline.work import HASH_LIMIT, file_digest
from facekit.plugins import get_registry

#: source settings that only the identity gate reads
GATE_ONLY = ("min_images", "start_id")
#: a folder parameter's files are hashed up to this many bytes in all, then known by their
#: :func:`~facekit.pipeline.shards.file_stamp`; the code digest's files likewise
FOLDER_HASH_LIMIT = HASH_LIMIT
#: the files of a distribution that are code (a package folder's files are all hashed)
CODE_SUFFIXES = tuple(importlib.machinery.SOURCE_SUFFIXES + importlib.machinery.EXTENSION_SUFFIXES)
#: facekit's own distribution: its packages are hashed folder by folder (in a source
#: checkout its file list also names the tests)
FACEKIT_DIST = "facekit"


def _version() -> str:
    try:
        return importlib.metadata.version("facekit")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def _hash_files(h, named: dict[str, Path]) -> None:
    """Feed ``h`` each file's name and content, sorted by name; past
    :data:`FOLDER_HASH_LIMIT` bytes in all, its stamp (size, times, inode) instead."""
    budget = FOLDER_HASH_LIMIT
    for name in sorted(named):
        h.update(name.encode("utf-8", "surrogateescape") + b"\0")
        f = named[name]
        try:
            size = f.stat().st_size
            if size <= budget:
                budget -= size
                h.update(f.read_bytes())
            else:
                h.update(file_stamp(f).encode())
        except OSError as e:
            h.update(f"unreadable {e.errno}".encode())
        h.update(b"\0")


def folder_digest(path: Path) -> str:
    """A digest of a folder's files (relative names and contents, sorted; past
    :data:`FOLDER_HASH_LIMIT` bytes, their stamps)."""
    h = hashlib.sha256()
    _hash_files(h, {str(f.relative_to(path)): f for f in path.rglob("*") if f.is_file()})
    return h.hexdigest()


def _package_files(top: str) -> dict[str, Path]:
    """Every file of the imported top-level package ``top`` (a folder: all its files but
    bytecode; a single module: its file), by name relative to the folder holding it."""
    mod = sys.modules.get(top)
    out: dict[str, Path] = {}
    if mod is None:
        return out
    for d in getattr(mod, "__path__", None) or ():  # a package, namespace packages too
        base = Path(d)
        for f in base.rglob("*"):
            if "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo") and f.is_file():
                out[f"{top}/{f.relative_to(base)}"] = f
    if not hasattr(mod, "__path__") and getattr(mod, "__file__", None):
        out[Path(mod.__file__).name] = Path(mod.__file__)
    return out


def _distribution_files(dist: str) -> dict[str, Path]:
    """The code files (:data:`CODE_SUFFIXES`) the installed distribution ``dist`` lists,
    by their name in it: a plugin's helper modules outside its package."""
    if not dist or dist == FACEKIT_DIST:
        return {}
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    return {f"{dist}:{f}": Path(f.locate()) for f in files if str(f).endswith(CODE_SUFFIXES)}


def code_digest(classes, modules=(), distributions=()) -> str:
    """SHA-256 of the code that makes the shards: facekit's own source files, every file of
    the top-level package of each of ``classes``' modules and of ``modules`` (the plugin
    modules that registered them; e.g. all of ``facekit_plugins`` for
    ``facekit_plugins.mtcnn``, its helper ``_mtcnn_onnx`` included), and the code files of
    ``distributions`` (the plugins' installed distributions: a helper module beside the
    plugin's package). A file that cannot be read counts by its errno."""
    root = Path(facekit.pipeline.__file__).resolve().parent.parent
    named = {f"facekit/{f.relative_to(root)}": f for f in root.rglob("*.py")}
    tops = {m.partition(".")[0] for m in (*(c.__module__ for c in classes), *modules)}
    for top in sorted(tops - {"facekit", "builtins", *sys.stdlib_module_names}):
        named.update(_package_files(top))
    seen = {f.resolve() for f in named.values()}
    for dist in sorted(set(distributions)):  # files not met in a package folder above
        named.update({k: f for k, f in _distribution_files(dist).items() if f.resolve() not in seen})
    h = hashlib.sha256()
    _hash_files(h, named)
    return h.hexdigest()


_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def library_versions(distributions=()) -> dict[str, str]:
    """The installed versions of the libraries that make the shards: the run-time
    requirements (extras left out) of facekit and of each of ``distributions`` (the stages'
    plugin distributions), e.g. ``{"onnxruntime": "1.20.1", "opencv-python": "4.11.0.86",
    "mtcnn": "1.0.0", ...}``; ``absent`` for one not installed under that name. An upgrade
    between a crash and a resume (a new onnxruntime, new MTCNN weights in the ``mtcnn``
    wheel) makes the kept shards run again."""
    out: dict[str, str] = {}
    for dist in sorted({FACEKIT_DIST, *(d for d in distributions if d)}):
        try:
            reqs = importlib.metadata.requires(dist) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for req in reqs:
            m = _REQ_NAME.match(req)
            if not m or "extra" in req.partition(";")[2]:  # an optional extra's requirement
                continue
            name = m.group(1).lower()
            try:
                out[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                out[name] = "absent"
    return dict(sorted(out.items()))


def _tensors(graph) -> Iterator:
    """Every tensor of an ONNX graph: initializers, sparse initializers and node
    attributes, subgraphs (``If``, ``Loop``, ``Scan`` bodies) included."""
    yield from graph.initializer
    for sp in graph.sparse_initializer:
        yield sp.values
        yield sp.indices
    yield from _node_tensors(graph.node)


def _node_tensors(nodes) -> Iterator:
    """The tensors of ONNX nodes' attributes, their subgraphs' included."""
    for node in nodes:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _tensors(g)


def onnx_external_files(path: Path) -> list[str]:
    """The external-data files (``location`` entries, as written, sorted) an ONNX model's
    tensors name, read from its graph without loading any weights; [] for a model without
    external data or a file that is not an ONNX model (its stage reports that)."""
    try:
        import onnx

        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not a model: the stage that loads it says why
        return []
    found = set()
    for t in chain(_tensors(model.graph), *(_node_tensors(f.node) for f in model.functions)):
        for entry in t.external_data:
            if entry.key == "location":
                found.add(entry.value)
    return sorted(found)


#: the tags a serialized ONNX ModelProto goes on with after its ``ir_version`` (fields 2-8
#: and 14: producer, domain, model version, doc string, graph, opset, metadata)
_MODEL_NEXT_TAGS = frozenset(b"\x12\x1a\x22\x28\x32\x3a\x42\x72")


def _may_be_onnx(path: Path) -> bool:
    """Whether ``path`` is worth parsing as an ONNX model: named ``.onnx``, or opening as a
    serialized ModelProto does (field 1 ``ir_version``, a one-byte varint, then another
    ModelProto field: what ``onnx.save_model`` writes) and at most :data:`HASH_LIMIT`
    bytes. Reads 3 bytes, so a photo, a table or a weights file of another kind costs no parse."""
    if path.suffix.lower() == ".onnx":
        return True
    try:
        if path.stat().st_size > HASH_LIMIT:
            return False
        with open(path, "rb") as f:
            head = f.read(3)
    except OSError:
        return False
    return len(head) == 3 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] in _MODEL_NEXT_TAGS


def model_file_digests(name: str, path: Path) -> dict[str, str]:
    """The digests of a file a stage parameter ``name`` names: its own (SHA-256) and, for
    an ONNX model with external data, each external-data file's under ``name:location``
    (``missing`` when the file is not there: the stage's load then fails and says so). A
    model is known by its content, whatever its name (``det.bin``; see :func:`_may_be_onnx`)."""
    out = {name: file_digest(path)}
    if _may_be_onnx(path):
        for loc in onnx_external_files(path):
            f = path.parent / loc
            out[f"{name}:{loc}"] = file_digest(f) if f.is_file() else "missing"
    return out


def _named_paths(name: str, value) -> Iterator[tuple[str, Path]]:
    """``(name, path)`` for each path in a parameter value (lists and mappings walked)."""
    if isinstance(value, Path):
        yield name, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _named_paths(f"{name}[{i}]", v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _named_paths(f"{name}[{k}]", v)


def _stage(sc: StageConfig) -> dict:
    reg = get_registry()
    plugin = reg.owner.get((sc.kind, sc.name))
    info = reg.plugins.get(plugin) if plugin else None
    params = sc.params.model_dump(mode="json")
    if sc.kind == "source":
        for k in GATE_ONLY:
            params.pop(k, None)
    files = {}
    for k in type(sc.params).model_fields:
        for name, v in _named_paths(k, getattr(sc.params, k)):
            if v.is_file():
                files.update(model_file_digests(name, v))
            elif v.is_dir() and sc.kind != "source":  # a source's folder: the shards' input digests
                files[name] = folder_digest(v)
    return {
        "kind": sc.kind,
        "plugin": sc.name,
        "version": info.version if info else "",
        "class": f"{sc.cls.__module__}.{sc.cls.__qualname__}",
        "params": params,
        "files": files,
    }


def pipeline_fingerprint(spec: PipelineSpec) -> dict:
    """A JSON-able dict describing everything that shapes a shard's product (see the module
    docstring). Model files are read once to hash them (about 0.1 s per 100 MB)."""
    stages = [
        sc
        for sc in (
            *spec.sources, spec.detector, spec.aligner, spec.recognizer, spec.face_quality, spec.cleaner, *spec.augmenters
        )
        if sc is not None
    ]
    reg = get_registry()
    infos = [reg.plugins.get(reg.owner.get((sc.kind, sc.name), "")) for sc in stages]
    return {
        "facekit": _version(),
        "code": code_digest(
            [sc.cls for sc in stages],
            [i.module for i in infos if i is not None and i.module],
            [i.distribution for i in infos if i is not None],
        ),
        "libraries": library_versions([i.distribution for i in infos if i is not None]),
        "quality": spec.quality,
        "stages": [_stage(sc) for sc in stages],
    }
