"""The fingerprint of a pipeline: what a finished shard's product depends on.

Used by the work folder (:mod:`facekit.pipeline.work`) to reuse only shards made by the
same pipeline: the source (less the settings only the identity gate reads: ``min_images``,
``start_id``), detector, aligner, recognizer and augmenters (plugin, plugin version and
parameters), the content of every file and folder those parameters name (model files,
texture folders: SHA-256), the encode settings and the code that makes the shards (a
digest of facekit's and the stages' source files, so an edited install does not reuse
shards its old code made). The output folder, the executor, the shard size (the work
folder records it) and the sinks are left out: they do not change a shard's product.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
from pathlib import Path

import facekit.pipeline
from facekit.pipeline.config import PipelineSpec, StageConfig
from facekit.pipeline.work import HASH_LIMIT, file_digest
from facekit.plugins import get_registry

#: source settings that only the identity gate reads
GATE_ONLY = ("min_images", "start_id")
#: a folder parameter's files are hashed up to this many bytes in all, then known by size
#: and modification time
FOLDER_HASH_LIMIT = HASH_LIMIT


def _version() -> str:
    try:
        return importlib.metadata.version("facekit")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def folder_digest(path: Path) -> str:
    """A digest of a folder's files (relative names and contents, sorted; past
    :data:`FOLDER_HASH_LIMIT` bytes, sizes and modification times)."""
    h = hashlib.sha256()
    budget = FOLDER_HASH_LIMIT
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(str(f.relative_to(path)).encode("utf-8", "surrogateescape") + b"\0")
        if st.st_size <= budget:
            budget -= st.st_size
            h.update(f.read_bytes())
        else:
            h.update(f"{st.st_size} {st.st_mtime_ns}".encode())
    return h.hexdigest()


def code_digest(classes) -> str:
    """SHA-256 of facekit's own source files and of the modules defining ``classes``."""
    root = Path(facekit.pipeline.__file__).resolve().parent.parent
    files = sorted(root.rglob("*.py"))
    for cls in classes:
        src = inspect.getsourcefile(cls)
        if src:
            files.append(Path(src))
    h = hashlib.sha256()
    for f in files:
        try:
            h.update(f.read_bytes())
        except OSError:
            h.update(str(f).encode())
    return h.hexdigest()


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
        v = getattr(sc.params, k)
        if isinstance(v, Path) and v.is_file():
            files[k] = file_digest(v)
        elif isinstance(v, Path) and v.is_dir() and sc.kind != "source":  # a source's folder: the shards' input digests
            files[k] = folder_digest(v)
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
    stages = [sc for sc in (spec.source, spec.detector, spec.aligner, spec.recognizer, *spec.augmenters) if sc is not None]
    return {
        "facekit": _version(),
        "code": code_digest([sc.cls for sc in stages]),
        "quality": spec.quality,
        "stages": [_stage(sc) for sc in stages],
    }
