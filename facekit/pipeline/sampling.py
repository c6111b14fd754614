"""Per-identity caps and identity sampling of any source (issue 29 part 4): ``max_images``
and ``sample`` of :class:`facekit.stages.SourceParams`, applied to the items a source
yields, before the shards are cut.

Both choices are seeded and deterministic, and depend only on names, never on the order
or the count of what came before: an image is chosen by the rank of ``blake2b(seed,
path)`` among its identity's images, an identity by ``blake2b(seed, identity)`` read as a
number in [0, 1). The same source, seed and settings give the same dataset on every run,
any executor, shard size or machine; a larger ``sample`` keeps every identity a smaller
one kept. Nothing is left out silently: an image not chosen is a reject,
``over_max_images`` or ``not_sampled``, with its identity and the rule in the detail.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Optional

from facekit.stages import Reject, Sample

OVER_MAX_IMAGES = "over_max_images"
NOT_SAMPLED = "not_sampled"


def _unit(seed: int, text: str) -> float:
    """``blake2b(seed, text)`` as a number in [0, 1)."""
    h = hashlib.blake2b(f"{seed}\0{text}".encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def sampled(items: Iterable, fraction: float, seed: int = 0) -> Iterator:
    """The items of the identities chosen with probability ``fraction``; the images of
    the others become ``not_sampled`` rejects (a source's own rejects pass unchanged)."""
    chosen: dict[str, bool] = {}
    last = None
    for it in items:
        if isinstance(it, Sample):
            if it.identity != last:
                chosen = {it.identity: _unit(seed, it.identity) < fraction}
                last = it.identity
            if not chosen[it.identity]:
                yield Reject(it.path, NOT_SAMPLED, f"identity {it.identity!r} is not in the sample {fraction:g} "
                             f"(seed {seed})", it.identity, it.required)
                continue
        yield it


def capped(items: Iterable, max_images: int, seed: int = 0) -> Iterator:
    """The items with at most ``max_images`` images per identity: of a larger identity the
    ``max_images`` whose ``blake2b(seed, path)`` ranks lowest are kept, in source order;
    the rest become ``over_max_images`` rejects. Memory: one identity's items at a time
    (identities are contiguous in a source)."""
    buf: list = []
    current: Optional[str] = None

    def flush():
        samples = [i for i, it in enumerate(buf) if isinstance(it, Sample)]
        keep = set(samples)
        if len(samples) > max_images:
            ranked = sorted(samples, key=lambda i: (_unit(seed, buf[i].path), buf[i].path))
            keep = set(ranked[:max_images])
        for i, it in enumerate(buf):
            if isinstance(it, Sample) and i not in keep:
                yield Reject(it.path, OVER_MAX_IMAGES, f"identity {it.identity!r} has {len(samples)} images > "
                             f"max_images {max_images}: not chosen (seed {seed})", it.identity, it.required)
            else:
                yield it

    for it in items:
        ident = it.identity if isinstance(it, Sample) else None
        if ident is not None and ident != current:
            yield from flush()
            buf, current = [], ident
        buf.append(it)
    yield from flush()


def limit(items: Iterable, params) -> Iterable:
    """``items`` with the source's ``sample`` then ``max_images`` applied (either may be
    unset: ``params`` are the source's :class:`~facekit.stages.SourceParams`)."""
    fraction = getattr(params, "sample", None)
    cap = getattr(params, "max_images", None)
    seed = getattr(params, "seed", 0)
    if fraction is not None and fraction < 1:
        items = sampled(items, fraction, seed)
    if cap is not None:
        items = capped(items, cap, seed)
    return items
