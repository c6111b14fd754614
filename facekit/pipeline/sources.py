"""Several sources in one pipeline (issue 26 part 4): ``sources:`` in a config.

Each source keeps its identities whole; the run reads them one after the other, in the
order the config lists them. Two datasets may use the same identity names for different
people (class ids of two RecordIO sets always collide), so each source has a ``name`` and
its identities are called ``<name>/<identity>`` in the run (``results.parquet``,
``rejects.tsv``, ``summary.json``, the report). Labels are numbered by the identity gate
from ``start_id`` along that order; a source's own class ids (``mxrec`` ``labels: keep``)
are not kept, since two sets' ids overlap. A source's ``exclude:`` list names identities as
that source names them (without the prefix). Only the dataset-level ``merge`` step joins
identities, on the evidence of their faces' embeddings, never on their names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

from facekit.stages import Reject, Sample, Source, SourceParams

#: a source's name: what prefixes its identities (no ``/``, no control characters)
NAME_RE = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,64}$")


def default_name(params) -> str:
    """The name a source gets when the config gives none: the stem of its input (its
    first path parameter: ``faces_webface`` for ``root: faces_webface/``, ``train`` for
    ``path: a/train.rec``), or "" (the config must then give one)."""
    for k in type(params).model_fields:
        v = getattr(params, k)
        if isinstance(v, Path):
            return v.stem
    return ""


class MultiSource(Source):
    """The items of several sources, one source after the other, identities prefixed with
    the source's name, keys renumbered to stay in source order, labels left to the gate.

    Not a plugin: the engine builds it from ``sources:`` (:class:`PipelineSpec`
    ``extra_sources``). ``params``: the first source's ``start_id`` and ``min_images``
    (they apply to the whole run); ``exclude``, ``sample`` and ``max_images`` are applied
    per source, inside."""

    kind = "source"
    name = "sources"

    def __init__(self, names: list[str], sources: list[Source]):
        first = sources[0].params
        self.params = SourceParams(start_id=first.start_id, min_images=first.min_images)
        self.names = names
        self.sources = sources

    def __iter__(self) -> Iterator[Sample | Reject]:
        from facekit.pipeline.engine import excluding
        from facekit.pipeline.sampling import limit

        offset = 0
        for name, src in zip(self.names, self.sources):
            ex = getattr(src.params, "exclude", None)
            items = limit(excluding(src, ex) if ex else src, src.params)
            top = -1
            for it in items:
                if isinstance(it, Sample):
                    top = max(top, it.key)
                    yield it.replace(identity=f"{name}/{it.identity}", label=-1, key=it.key + offset)
                else:
                    yield Reject(it.path, it.reason, it.detail, f"{name}/{it.identity}" if it.identity else "",
                                 it.required, it.face)
            offset += top + 1

    def count(self) -> Optional[int]:
        """The sum of the sources' counts, or None when one cannot say."""
        total = 0
        for s in self.sources:
            n = s.count()
            if n is None:
                return None
            total += n
        return total
