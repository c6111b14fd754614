"""issue 29 part 4: per-identity caps (``max_images``) and a seeded identity subset
(``sample``) on any source: deterministic, by name, every image left out a reject."""

from __future__ import annotations

import pyarrow.parquet as pq

from conftest import config_error, link_identities, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.pipeline.sampling import NOT_SAMPLED, OVER_MAX_IMAGES, capped, sampled
from facekit.stages import Reject, Sample


def _items(spec):
    """Samples of identities ``{name: n}`` in order, with a source reject in the middle."""
    out, key = [], 0
    for ident, n in spec.items():
        for i in range(n):
            out.append(Sample(key=key, path=f"/d/{ident}/{i:03d}.jpg", identity=ident))
            key += 1
            if ident == "b" and i == 1:
                out.append(Reject(f"/d/{ident}/junk.txt", "not_an_image", "", ident))
    return out


def test_capped_keeps_a_seeded_choice_in_source_order():
    """issue 29 part 4: at most N per identity, the same N on every call, in source
    order; the rest ``over_max_images``; a smaller identity and the source's own rejects
    pass unchanged; another seed chooses others."""
    items = _items({"a": 10, "b": 3, "c": 7})
    out = list(capped(items, 4, seed=0))
    assert len(out) == len(items)  # one item out for each in
    kept = [it for it in out if isinstance(it, Sample)]
    assert [sum(1 for it in kept if it.identity == x) for x in "abc"] == [4, 3, 4]
    assert [it.key for it in kept] == sorted(it.key for it in kept)
    over = [it for it in out if isinstance(it, Reject) and it.reason == OVER_MAX_IMAGES]
    assert len(over) == 6 + 3 and "has 10 images > max_images 4" in over[0].detail
    assert [it.path for it in out if isinstance(it, Reject) and it.reason == "not_an_image"] == ["/d/b/junk.txt"]
    assert [it.path for it in capped(items, 4, seed=0)] == [it.path for it in out]
    again = [it.path for it in capped(items, 4, seed=1) if isinstance(it, Sample)]
    assert again != [it.path for it in kept]
    # the choice of an identity does not depend on the others
    alone = [it.path for it in capped(_items({"a": 10}), 4) if isinstance(it, Sample)]
    assert alone == [it.path for it in kept if it.identity == "a"]


def test_sampled_is_nested_and_seeded():
    """issue 29 part 4: ``sample`` keeps about the fraction of identities, a larger
    fraction every identity a smaller one kept; left-out images are ``not_sampled``."""
    items = _items({f"id{i:03d}": 2 for i in range(400)})
    kept = {f: {it.identity for it in sampled(items, f) if isinstance(it, Sample)} for f in (0.1, 0.5)}
    assert 20 <= len(kept[0.1]) <= 60 and 160 <= len(kept[0.5]) <= 240
    assert kept[0.1] <= kept[0.5]
    left = [it for it in sampled(items, 0.1) if isinstance(it, Reject)]
    assert len(left) == 2 * (400 - len(kept[0.1])) and left[0].reason == NOT_SAMPLED
    assert kept[0.1] != {it.identity for it in sampled(items, 0.1, seed=3) if isinstance(it, Sample)}


def test_caps_and_sample_in_a_real_run(tmp_path, data_dir, scrfd_model):
    """issue 29 part 4 in the pipeline: max_images and sample on the shared identities
    give the same dataset whatever the executor; each image left out is a reject row."""
    link_identities(data_dir, tmp_path / "root")
    outs = {}
    for name, extra, size in (("a", "workers: 0", ""), ("b", "workers: 2", "shard_size: 7")):
        cfg = write_config(tmp_path, f"""
            output: out-{name}
            source: {{plugin: folders, root: root, min_images: 1, max_images: 2, sample: 0.6, seed: 7}}
            detector: {{plugin: retinaface, model: {scrfd_model}}}
            aligner: {{plugin: arcface}}
            sinks: [{{plugin: mxrec, path: rec}}]
            {extra}
            {size}
            """, f"{name}.yaml")
        s = run(load_config(cfg), progress=False)
        outs[name] = (tmp_path / f"out-{name}" / "rec" / "train.rec").read_bytes()
        rows = pq.read_table(tmp_path / f"out-{name}" / "results.parquet").to_pylist()
        assert s.rejects.get(NOT_SAMPLED, 0) > 0 and s.rejects.get(OVER_MAX_IMAGES, 0) > 0
        per = {}
        for r in rows:
            if r["reason"] not in (NOT_SAMPLED, OVER_MAX_IMAGES):
                per.setdefault(r["identity"], set()).add(r["path"])
        assert max(len(v) for v in per.values()) <= 2
        assert all(r["reason"] == NOT_SAMPLED for r in rows if r["identity"] not in per)
    assert outs["a"] == outs["b"]


def test_bad_caps_are_config_errors(tmp_path):
    (tmp_path / "r").mkdir()
    msg = config_error(tmp_path, """
        output: out
        source: {plugin: folders, root: r, sample: 0}
        sinks: [{plugin: folders, path: f}]
        """)
    assert "sample" in msg and ":3:" in msg
    msg = config_error(tmp_path, """
        output: out
        source: {plugin: folders, root: r, max_images: 0}
        sinks: [{plugin: folders, path: f}]
        """)
    assert "max_images" in msg
