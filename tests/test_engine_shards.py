"""The engine on shards with real photos: outputs byte-identical for every executor and
shard size, the results table, resume after SIGKILL at several points."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import link_identities, write_config
from facekit.formats.recordio import unpack
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run

OUTPUTS = ("rec", "aligned", "rejects.tsv", "results.parquet")


@pytest.fixture(scope="module")
def photos(data_dir, tmp_path_factory) -> Path:
    """The 94 real identity photos plus the face-free negatives as one more folder."""
    root = link_identities(data_dir, tmp_path_factory.mktemp("photos") / "root")
    os.symlink(data_dir / "images" / "negatives", root / "zz_negatives")
    return root


def _config(tmp_path: Path, root: Path, scrfd_model: Path, executor: str = "", shard_size=None, name="p.yaml", extra=""):
    lines = [f"output: {tmp_path / 'out'}"]
    if executor:
        lines.append(f"executor: {executor}")
    if shard_size:
        lines.append(f"shard_size: {shard_size}")
    return write_config(
        tmp_path,
        "\n".join(lines)
        + f"""
source: {{plugin: folders, root: {root}}}
detector: {{plugin: retinaface, model: {scrfd_model}{extra}}}
aligner: {{plugin: arcface, size: 112}}
sinks:
  - {{plugin: mxrec, path: rec}}
  - {{plugin: folders, path: aligned, prefix: "id_"}}
""",
        name,
    )


def _tree(out: Path) -> dict[str, bytes]:
    """Every output file's bytes by relative path (the run's own state folder left out)."""
    files = {}
    for name in OUTPUTS:
        p = out / name
        if p.is_file():
            files[name] = p.read_bytes()
        else:
            for f in sorted(p.rglob("*")):
                if f.is_file():
                    files[str(f.relative_to(out))] = f.read_bytes()
    return files


@pytest.fixture(scope="module")
def reference(photos, scrfd_model, tmp_path_factory):
    """The default run (the ``threads`` executor, one per core; the default shard size):
    the outputs every other must equal."""
    tmp = tmp_path_factory.mktemp("ref")
    summary = run(load_config(_config(tmp, photos, scrfd_model)), progress=False)
    return summary, _tree(tmp / "out")


@pytest.mark.slow
@pytest.mark.parametrize(
    "executor,shard_size",
    [
        ("{plugin: inprocess}", 1),
        ("{plugin: inprocess}", 7),
        ("{plugin: inprocess}", 1000),
        ("{plugin: threads, workers: 1}", 7),
        ("{plugin: threads, workers: 3}", 1),
        ("{plugin: threads, workers: 2}", 7),
        ("{plugin: processes, workers: 1}", 7),
        ("{plugin: processes, workers: 2}", 1),
        ("{plugin: processes, workers: 2}", 7),
        ("{plugin: processes, workers: 2}", 1000),
    ],
)
def test_outputs_are_byte_identical_for_every_executor_and_shard_size(
    tmp_path, photos, scrfd_model, reference, executor, shard_size
):
    ref_summary, ref = reference
    s = run(load_config(_config(tmp_path, photos, scrfd_model, executor, shard_size)), progress=False)
    got = _tree(tmp_path / "out")
    assert sorted(got) == sorted(ref)
    assert [k for k in ref if got[k] != ref[k]] == []
    assert s.faces_kept == ref_summary.faces_kept > 80
    # 22 folders (21 identities and the negatives): one shard each at size 1; at 1000 the
    # whole job is its own end for 2 workers, so the shards shrink to a quarter of it and less
    # (cut_shards' taper), the same bytes all the same; on one worker it stays one shard
    if shard_size == 1:
        assert s.shards["count"] == 22
    elif shard_size == 7:
        assert 7 <= s.shards["count"] <= 14
    elif "inprocess" in executor:  # one worker: no taper, the whole job is one shard
        assert s.shards["count"] == 1
    else:
        assert 5 <= s.shards["count"] <= 14


def test_results_table_accounts_for_every_image(reference, photos, data_dir):
    summary, files = reference
    import io

    table = pq.read_table(io.BytesIO(files["results.parquet"])).to_pylist()
    sources = {os.path.join(d, f) for d, _, fs in os.walk(photos, followlinks=True) for f in fs}
    assert {r["path"] for r in table} == sources  # every source image has a row
    kept = [r for r in table if r["reason"] is None]
    assert len(kept) == summary.faces_kept
    rejected = [r for r in table if r["reason"] is not None]
    assert len(rejected) == sum(summary.rejects.values())
    rec = files["rec/train.rec"]
    idx = {int(k): int(v) for k, v in (ln.split("\t") for ln in files["rec/train.idx"].decode().splitlines())}
    for r in kept:
        assert r["label"] >= 0 and len(r["box"]) == 4 and len(r["landmarks"]) == 10 and len(r["aligned"]) == 10
        assert len(r["transform"]) == 6 and 0 < r["score"] <= 1
        rid, path = r["outputs"]
        header, img = unpack(_record(rec, idx[int(rid)]))
        assert int(header.label) == r["label"]
        assert img == files[f"aligned/{path}"]  # the same crop in both sinks
    too_small = [r for r in rejected if r["reason"] == "identity_too_small"]
    assert {r["identity"] for r in too_small} >= {"Amy_Adams", "Nathalie_Baye"}
    assert all(r["box"] is not None and r["label"] == -1 for r in too_small)
    assert all(r["box"] is None for r in rejected if r["reason"] == "no_face")


def _record(rec: bytes, offset: int) -> bytes:
    import struct

    magic, lrec = struct.unpack_from("<II", rec, offset)
    return rec[offset + 8 : offset + 8 + (lrec & ((1 << 29) - 1))]


def test_summary_has_per_identity_counts_and_the_label_map(tmp_path, reference):
    summary, files = reference
    ids = summary.identities
    assert ids["Amy_Adams"] == {"label": -1, "kept": 0, "rejected": 1}
    kept = {k: v for k, v in ids.items() if v["label"] >= 0}
    assert len(kept) == summary.identities_written
    assert sorted(v["label"] for v in kept.values()) == list(range(len(kept)))
    assert sum(v["kept"] for v in ids.values()) == summary.faces_kept


def _done(out: Path) -> int:
    return len(list((out / ".facekit" / "shards").glob("shard-*.done.json")))


def _kill_when(cfg: Path, out: Path, shards_done: int) -> int:
    """Start `facekit run`, SIGKILL it once ``shards_done`` shards are finished (or at
    start when 0); returns how many finished shards the work folder then holds."""
    p = subprocess.Popen(
        [sys.executable, "-m", "facekit.cli", "run", "-q", str(cfg)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while p.poll() is None and time.monotonic() < deadline:
            if (out / ".facekit" / "shards").is_dir() and _done(out) >= shards_done:
                break
            time.sleep(0.02)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert p.returncode == -signal.SIGKILL, "the run ended before it was killed"
    return _done(out)


@pytest.mark.slow
def test_resume_after_sigkill_reuses_finished_shards_and_equals_an_uninterrupted_run(
    tmp_path, photos, scrfd_model, reference
):
    _, ref = reference
    cfg = _config(tmp_path, photos, scrfd_model, "{plugin: processes, workers: 2}", 7)
    out = tmp_path / "out"
    finished = []
    for point in (0, 2, 6):  # at start, early, later: each run goes on from the last
        finished.append(_kill_when(cfg, out, point))
        assert not (out / "rec").exists()  # nothing published by a killed run
    assert finished[-1] >= 6
    r = subprocess.run([sys.executable, "-m", "facekit.cli", "run", "-q", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards"]["reused"] >= finished[-1]  # finished shards were not redone
    assert summary["shards"]["reused"] < summary["shards"]["count"]
    got = _tree(out)
    assert [k for k in ref if got.get(k) != ref[k]] == [] and sorted(got) == sorted(ref)
    assert not (out / ".facekit" / "shards").exists()  # published: the work folder is gone


@pytest.mark.slow
def test_a_changed_pipeline_does_not_reuse_stale_shards(tmp_path, photos, scrfd_model):
    cfg = _config(tmp_path, photos, scrfd_model, "{plugin: processes, workers: 2}", 7)
    out = tmp_path / "out"
    assert _kill_when(cfg, out, 3) >= 3
    changed = _config(tmp_path, photos, scrfd_model, "{plugin: processes, workers: 2}", 7, name="changed.yaml", extra=", min_size: 30")
    s = run(load_config(changed), progress=False)
    assert s.shards["reused"] == 0
    # while the same pipeline on another executor reuses them
    assert _kill_when(cfg, out, 3) >= 3
    same = _config(tmp_path, photos, scrfd_model, "{plugin: inprocess}", 7, name="q.yaml")
    s = run(load_config(same), progress=False)
    assert s.shards["reused"] >= 3
    # resume: false reuses nothing and keeps nothing
    assert _kill_when(cfg, out, 3) >= 3
    spec = load_config(same)
    spec.resume = False
    assert run(spec, progress=False).shards["reused"] == 0
    assert not (out / ".facekit" / "shards").exists()
