"""Verification ``.bin`` files in pipelines: source ``evalbin`` (reads a public bin safely),
sink ``evalbin`` (writes ``(bins, issame_list)`` as insightface does) and augmenter
``reencode`` (decode + baseline JPEG at ``encode.quality``, for bins other decoders reject).

- ``lfw2pack`` style: source ``pairs``, no detector -> sink ``evalbin`` (original bytes).
- ``build_eval_pack`` style: source ``pairs`` -> detector -> aligner ``arcface`` -> sink
  ``evalbin`` (aligned crops encoded at ``encode.quality``).
- bin -> folder: source ``evalbin`` -> sink ``pairs``; bin -> re-encoded bin: source
  ``evalbin`` -> augmenter ``reencode`` -> sink ``evalbin``. Pair order and flags unchanged.
"""

from __future__ import annotations

import pickle

from pydantic import Field

import facekit
from facekit.formats import (
    DEFAULT_PROTOCOL,
    DROP_PAIR,
    PairCollector,
    PairSourceParams,
    load_bin,
    pair_identity,
    pair_required,
    save_bin,
)


class EvalbinSourceParams(PairSourceParams):
    path: facekit.InputPath = Field(description="verification .bin (pickled (bins, issame_list); loaded safely)")


class EvalbinSource(facekit.Source):
    """The images of a verification .bin in pair order with their same/different flag."""

    description = "verification .bin (restricted unpickler) -> pair images in order with their flags"
    name = "evalbin"
    Params = EvalbinSourceParams

    def __init__(self, params):
        super().__init__(params)
        self.bins, self.issame = load_bin(params.path)  # EvalBinError before any work starts
        self.where = {pair_identity(i): f"{params.path}[pair {i}]" for i in range(len(self.issame))}

    def count(self):
        """The bin's images: two per pair (the bin is loaded at construction)."""
        return len(self.bins)

    def __iter__(self):
        drop = self.params.on_missing_face == DROP_PAIR
        total = len(self.issame)
        path = self.params.path
        for i, same in enumerate(self.issame):
            ident = pair_identity(i)
            required = pair_required(self.where[ident], self.params.on_missing_face)
            for side in (0, 1):
                k = 2 * i + side
                ref = facekit.PairRef(i, side, same, total, self.where[ident], drop)
                yield facekit.Sample(
                    key=k, path=f"{path}[{k}]", identity=ident, data=self.bins[k], pair=ref, required=required
                )


class EvalbinSinkParams(facekit.Params):
    path: facekit.OutputPath = Field(description="output .bin file (written atomically at the end of the run)")
    protocol: int = Field(
        DEFAULT_PROTOCOL,
        ge=2,
        le=pickle.HIGHEST_PROTOCOL,
        description="pickle protocol: 2 for Python 2 readers, 4 for Python >= 3.4, 5 for >= 3.8",
    )


class EvalbinSink(facekit.Sink):
    """Pairs into a verification .bin: ``pickle((bins, issame_list))``, bins a0, b0, a1, b1, ..."""

    description = "pairs -> verification .bin: pickle((bins, issame_list)), pair order a0, b0, a1, b1, ..."
    name = "evalbin"
    Params = EvalbinSinkParams

    def open(self, publication):
        self.staged = publication.file(self.params.path)
        self.bins: list[bytes] = []
        self.issame: list[bool] = []
        self.pairs = PairCollector(f"sink evalbin ({self.params.path})")

    def write(self, s):
        ref = self.pairs.add(s)
        self.bins.append(bytes(s.data))
        if ref.side == 1:
            self.issame.append(bool(ref.issame))

    def close(self):
        stats = self.pairs.finish()
        save_bin(self.staged, self.bins, self.issame, self.params.protocol)
        return {"path": str(self.params.path), "protocol": self.params.protocol, **stats}


class ReencodeParams(facekit.Params):
    pass


class ReencodeAugmenter(facekit.Augmenter):
    """Decode each image and re-encode it as baseline JPEG at ``encode.quality`` (OpenCV, as
    ``build_eval_pack``): for bins whose JPEGs some decoders (``tf.image.decode_jpeg``) reject."""

    description = "decode + re-encode as baseline JPEG at encode.quality (images some decoders reject)"
    name = "reencode"
    Params = ReencodeParams

    def augment(self, sample):
        return [sample.replace(data=None)]


@facekit.hookimpl
def register_stages(register):
    register(EvalbinSource)
    register(EvalbinSink)
    register(ReencodeAugmenter)
