"""Sink ``embeddings``: each kept face's recognizer embedding, as Parquet parts a user loads
with pyarrow or numpy (:mod:`facekit.formats.embeddings`: record id or path, identity,
label, face, norm before normalisation, the L2-normalised vector as float16 or float32).

Needs a ``recognizer`` in the pipeline: after an aligner, or on an already aligned source
(a ``mxrec`` source, folders of aligned crops with no detector)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import facekit
from facekit.formats import EmbeddingsWriter


class EmbeddingsSinkParams(facekit.Params):
    path: facekit.OutputPath = Field(description="output folder (replaced atomically at the end of the run)")
    dtype: Literal["float16", "float32"] = Field(
        "float32", description="stored precision of the L2-normalised embeddings (float16 halves the size)"
    )
    rows_per_part: int = Field(1_000_000, ge=1, description="faces per part-NNNNN.parquet file")


class EmbeddingsSink(facekit.Sink):
    """The recognizer's embeddings of the kept faces, in the run's output order."""

    name = "embeddings"
    description = "face embeddings (L2-normalised, float16/32) as Parquet parts, keyed by record id or path"
    Params = EmbeddingsSinkParams
    needs_embeddings = True

    def open(self, publication):
        p = self.params
        self.dir = publication.dir(p.path)
        self.writer = EmbeddingsWriter(self.dir.staging, p.dtype, p.rows_per_part)

    def write_many(self, samples):
        w = self.writer
        return [
            w.add(s.embedding, record=s.record_key, path=s.path, identity=s.identity, label=s.label,
                  face=s.face_id, norm=s.embedding_norm)
            for s in samples
        ]

    def write(self, sample):
        return self.write_many([sample])[0]

    def close(self):
        meta = self.writer.close()
        return {"path": str(self.params.path), "faces": meta["rows"], "dim": meta["dim"], "dtype": meta["dtype"],
                "parts": len(meta["parts"])}

    def abort(self):
        if hasattr(self, "writer"):
            self.writer.abort()


@facekit.hookimpl
def register_stages(register):
    register(EmbeddingsSink)
