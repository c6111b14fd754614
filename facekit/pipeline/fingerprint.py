"""The fingerprint of a pipeline: what a finished shard's product depends on.

Used by the work folder (:mod:`facekit.pipeline.work`) to reuse only shards made by the
same pipeline: the source, detector, aligner and augmenters (plugin, plugin version and
parameters), the content of every file those parameters name (model files: SHA-256), the
encode settings, the shard size and facekit's version. The output folder, the executor
and the sinks are left out: they do not change a shard's product.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from facekit.pipeline.config import PipelineSpec, StageConfig
from facekit.pipeline.work import file_digest
from facekit.plugins import get_registry


def _version() -> str:
    try:
        return importlib.metadata.version("facekit")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def _stage(sc: StageConfig) -> dict:
    reg = get_registry()
    plugin = reg.owner.get((sc.kind, sc.name))
    info = reg.plugins.get(plugin) if plugin else None
    files = {}
    for k in type(sc.params).model_fields:
        v = getattr(sc.params, k)
        if isinstance(v, Path) and v.is_file():
            files[k] = file_digest(v)
    return {
        "kind": sc.kind,
        "plugin": sc.name,
        "version": info.version if info else "",
        "class": f"{sc.cls.__module__}.{sc.cls.__qualname__}",
        "params": sc.params.model_dump(mode="json"),
        "files": files,
    }


def pipeline_fingerprint(spec: PipelineSpec, shard_size: int) -> dict:
    """A JSON-able dict describing everything that shapes a shard's product (see the module
    docstring). Model files are read once to hash them (about 0.1 s per 100 MB)."""
    stages = [spec.source, spec.detector, spec.aligner, spec.recognizer, *spec.augmenters]
    return {
        "facekit": _version(),
        "shard_size": shard_size,
        "quality": spec.quality,
        "stages": [_stage(sc) for sc in stages if sc is not None],
    }
