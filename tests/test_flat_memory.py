"""Memory that stays flat with the number of records (issue 13, item 5).

Python heap measured with ``tracemalloc`` (deterministic, no timing): what a writer still
holds after N records must not grow with N. The process-level peak RSS at 1k / 50k / 1M
records is measured by ``benchmarks/bench_detect_align.py --rss`` (too slow for the suite).
"""

from __future__ import annotations

import tracemalloc

from facekit.formats.recordio import IndexedRecordIOWriter, load_idx


def _held_after(tmp_path, n: int, mode: str) -> int:
    """Bytes of Python heap still allocated by an open writer after ``n`` records."""
    payload = b"x" * 16
    tracemalloc.start()
    try:
        w = IndexedRecordIOWriter(tmp_path / f"{mode}{n}.idx", tmp_path / f"{mode}{n}.rec")
        base = tracemalloc.get_traced_memory()[0]
        if mode == "one":
            for k in range(1000, 1000 + n):
                w.write_idx(k, payload)
        else:
            for start in range(1000, 1000 + n, 500):
                keys = list(range(start, min(start + 500, 1000 + n)))
                w.write_many_idx(keys, [payload] * len(keys))
            del keys
        held = tracemalloc.get_traced_memory()[0] - base
        w.close()
    finally:
        tracemalloc.stop()
    keys, offs = load_idx(tmp_path / f"{mode}{n}.idx")
    assert len(keys) == n and keys[0] == 1000 and keys[-1] == 999 + n  # the idx is complete
    return held


def test_indexed_writer_holds_no_per_record_state(tmp_path):
    # the old writer kept every key in a list (~36 B a record): 20k records held ~700 kB more
    for mode in ("one", "many"):
        small = _held_after(tmp_path, 2_000, mode)
        large = _held_after(tmp_path, 20_000, mode)
        assert large - small < 32 * 1024, (mode, small, large)
    w = IndexedRecordIOWriter(tmp_path / "k.idx", tmp_path / "k.rec")
    w.close()
    assert not hasattr(w, "keys")
