"""Review of this round's issue 30 fixes (items 4-10 of the review): a failed report publish
keeps the previous report, a reused shard is not read into memory whole, ``facekit report``
prints normalised paths, ``facekit pairs`` refuses folds it cannot fill, external data of an
ONNX model not named ``.onnx`` is fingerprinted, the pairs parser reads ASCII numbers only.
(Review item 10, the coarse-ctime flake, is fixed in tests/test_resume_stale.py.)"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import facekit_cli


# --------------------------------------------------------------------------- report publish


def _run_output(out: Path, n_ids: int = 3, per: int = 2) -> Path:
    """A small synthetic ``facekit run`` output (results table, summary, one crop file)."""
    from facekit.pipeline.results import SCHEMA

    (out / "faces" / "0").mkdir(parents=True)
    cv2.imwrite(str(out / "faces" / "0" / "a.jpg"), np.full((112, 112, 3), 128, np.uint8))
    names = [f"person_{i:02d}" for i in range(n_ids) for _ in range(per)]
    rows = len(names)
    cols = {f.name: [None] * rows for f in SCHEMA}
    cols.update(path=[f"/nowhere/{n}/{k}.jpg" for k, n in enumerate(names)], identity=names,
                label=[i // per for i in range(rows)], face=[0] * rows, score=[0.9] * rows,
                box=[[10.0, 10.0, 60.0, 70.0]] * rows, outputs=[[None, "0/a.jpg"]] * rows)
    pq.write_table(pa.table(cols, schema=SCHEMA), out / "results.parquet")
    (out / "summary.json").write_text(json.dumps({
        "images_read": rows, "faces_kept": rows, "identities_written": n_ids, "identities_dropped": 0,
        "rejects": {}, "output": str(out),
        "sinks": {"sinks[0] (mxrec)": {"path": str(out / "rec")}, "sinks[1] (folders)": {"path": str(out / "faces")}},
        "identities": {f"person_{i:02d}": {"label": i, "kept": per, "rejected": 0} for i in range(n_ids)}}))
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fail_publishing_move(monkeypatch, exc: BaseException) -> list:
    """Make the move of a report's staging folder onto its place raise ``exc`` (the move of
    the previous report aside still works); returns the list of moves that failed."""
    real = Path.rename
    failed = []

    def rename(self, target):
        if self.name.endswith(".partial") and Path(target).name == "report":
            failed.append(self)
            raise exc
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    return failed


@pytest.mark.parametrize("exc", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()],
                         ids=["io-error", "interrupted"])
def test_a_failed_publish_moves_the_previous_report_back(tmp_path, monkeypatch, exc):
    """issue 30 review item 4: the previous report is moved aside, then the new one fails to
    move in (an I/O error, or Ctrl-C/SIGTERM between the two moves): the previous report is
    back in place, byte for byte, and no staging or old copy is left."""
    from facekit.report.staging import ReportStaging

    dest = tmp_path / "report"
    dest.mkdir()
    (dest / "index.html").write_text("<p>the previous report</p>")
    (dest / "img").mkdir()
    (dest / "img" / "a.jpg").write_bytes(b"\xff\xd8 previous")
    before = _snapshot(dest)
    failed = _fail_publishing_move(monkeypatch, exc)
    with pytest.raises(type(exc)), ReportStaging(dest) as stage:
        (stage.path / "index.html").write_text("<p>the new report</p>")
        stage.publish()
    assert failed, "the publishing move was not attempted"
    assert _snapshot(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_report_command_says_unchanged_and_it_is(tmp_path, monkeypatch):
    """issue 30 review item 4: ``facekit report`` whose publishing move fails says "any
    previous report is unchanged" (one line, exit 1), and the previous report is there."""
    from click.testing import CliRunner

    from facekit.cli.report import report_command
    from facekit.report.build import build_report

    out = _run_output(tmp_path / "out")
    build_report(out)
    before = _snapshot(out / "report")
    assert "index.html" in before
    _fail_publishing_move(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    handler = signal.getsignal(signal.SIGTERM)
    try:
        r = CliRunner().invoke(report_command, [str(out), "--per-page", "1"])
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert r.exit_code == 1, r.output
    assert r.output.count("\n") == 1 and "previous report is unchanged" in r.output, r.output
    assert _snapshot(out / "report") == before
    assert not [p.name for p in out.iterdir() if p.name.startswith(".report.")]


# --------------------------------------------------------------------------- report paths


def test_report_prints_normalised_paths(tmp_path):
    """issue 30 review item 6: ``facekit report configs/../o2`` prints ``o2/report/index.html``
    (as ``facekit run`` prints its paths); a ``..`` after a symbolic link keeps its spelling,
    since ``lnk/../o2`` is then not ``o2``."""
    _run_output(tmp_path / "o2")
    (tmp_path / "configs").mkdir()
    r = facekit_cli("report", "configs/../o2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{Path('o2') / 'report' / 'index.html'}: "), r.stdout
    r = facekit_cli("report", "o2", "-o", "configs/../o2/rep2", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("o2/rep2/index.html: "), r.stdout + r.stderr

    (tmp_path / "deep" / "sub").mkdir(parents=True)
    _run_output(tmp_path / "deep" / "o2")
    os.symlink("deep/sub", tmp_path / "lnk")
    r = facekit_cli("report", "lnk/../o2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("lnk/../o2/report/index.html: "), r.stdout
    assert (tmp_path / "deep" / "o2" / "report" / "index.html").is_file()


# --------------------------------------------------------------------------- reused shards


def _kept_shard(tmp_path: Path):
    from facekit.pipeline.shards import Outcome, Shard, ShardResult
    from facekit.pipeline.work import WorkFolder
    from facekit.stages import Sample

    items = [Sample(i, f"a/{i}.jpg", "a", data=bytes([i]) * 1000) for i in range(3)]
    work = WorkFolder(tmp_path, {"p": 1})
    work.open(7)
    work.save(ShardResult(0, [Outcome("a", [s], [], 1) for s in items]), "d")
    again = WorkFolder(tmp_path, {"p": 1})
    again.open(7)
    return again, Shard(0, items), work.dir / "shard-000000.parquet"


def test_a_reused_shard_is_hashed_in_blocks_not_read_whole(tmp_path, monkeypatch):
    """issue 30 review item 5: reusing a kept shard never reads its Parquet file into one
    bytes object (which doubled the memory of each reused shard): the loader works with
    ``Path.read_bytes`` unusable on it, and still gives the kept faces."""
    work, shard, _ = _kept_shard(tmp_path)
    real = Path.read_bytes

    def read_bytes(self):
        if self.suffix == ".parquet":
            raise MemoryError(f"{self}: read whole into memory")
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    loader = work.reuse(shard, "d")
    assert loader is not None
    res = loader()
    assert res.reused and work.reused == 1 and work.run_again == 0
    assert [oc.samples[0].data for oc in res.outcomes] == [bytes([i]) * 1000 for i in range(3)]


def test_a_kept_shard_rewritten_while_it_is_read_runs_again(tmp_path, monkeypatch):
    """issue 30 review item 5: the file is hashed, then parsed: a file replaced between the
    two (here: by a copy of itself, so every byte still matches) is told by its stamp and the
    shard runs again rather than trusting bytes that were not the ones hashed."""
    import facekit.pipeline.work as work_mod
    from facekit.pipeline.executor import ShardFailed

    work, shard, parquet = _kept_shard(tmp_path)
    real = work_mod.sha256_file

    def hash_then_replace(path):
        digest = real(path)
        shutil.copyfile(parquet, parquet.with_name("copy"))
        os.replace(parquet.with_name("copy"), parquet)
        return digest

    monkeypatch.setattr(work_mod, "sha256_file", hash_then_replace)
    loader = work.reuse(shard, "d")
    with pytest.raises(ShardFailed, match="changed while it was read"):
        loader()
    assert work.run_again == 1 and work.reuse(shard, "d") is None


# --------------------------------------------------------------------------- pairs folds


def test_pairs_refuses_fewer_pairs_than_two_per_fold(tmp_path, data_dir):
    """issue 30 review item 7: ``--max-pairs 3`` gave "2 pairs ... in 10 folds" (eight folds
    empty, the others one kind each): refused in one line, exit 2, saying the minimum; a tree
    with fewer positive pairs than folds is refused too (exit 1); enough pairs are written."""
    root = data_dir / "images" / "identities"
    out = tmp_path / "p.txt"
    r = facekit_cli("pairs", root, "-o", out, "--max-pairs", "3")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "at least 20 pairs" in r.stderr and "--folds" in r.stderr and not out.exists()
    r = facekit_cli("pairs", root, "-o", out, "--max-pairs", "19")
    assert r.returncode == 2 and "at least 20" in r.stderr
    r = facekit_cli("pairs", root, "-o", out, "--max-pairs", "3", "--folds", "1")
    assert r.returncode == 0 and r.stdout.strip().endswith("2 pairs (1 positive, 1 negative) in 1 folds"), r.stdout
    r = facekit_cli("pairs", root, "-o", out, "--max-pairs", "20")
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 20
    assert all({lines[2 * f][-1], lines[2 * f + 1][-1]} == {"0", "1"} for f in range(10))

    small = tmp_path / "small"
    big = [d for d in sorted(root.iterdir()) if len(list(d.iterdir())) >= 3][:2]
    assert len(big) == 2
    for d in big:
        (small / d.name).mkdir(parents=True)
        for f in sorted(d.iterdir())[:3]:
            os.symlink(f, small / d.name / f.name)  # 3 images each: 6 positive pairs
    r = facekit_cli("pairs", small, "-o", out, "--folds", "10")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "6 positive pair(s) for 10 folds" in r.stderr and "use 6 fold(s) or fewer" in r.stderr
    r = facekit_cli("pairs", small, "-o", out, "--folds", "6")
    assert r.returncode == 0 and "12 pairs (6 positive, 6 negative) in 6 folds" in r.stdout, r.stdout + r.stderr


# --------------------------------------------------------------------------- model digests


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_external_data_of_a_model_not_named_onnx_is_fingerprinted(tmp_path, scrfd_model, monkeypatch):
    """issue 30 review item 8: SCRFD saved as ``det.bin`` with its weights in ``det.data``:
    the fingerprint lists ``det.data`` and follows its content; files that are not models
    (a JPEG, a text file, an empty file, whatever their name) are not parsed at all."""
    import onnx

    from facekit.pipeline import fingerprint

    folder = tmp_path / "m"
    folder.mkdir()
    model = onnx.load_model(str(scrfd_model))
    onnx.save_model(model, str(folder / "det.bin"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="det.data")
    got = fingerprint.model_file_digests("model", folder / "det.bin")
    assert set(got) == {"model", "model:det.data"}
    data = folder / "det.data"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF  # other weights, det.bin unchanged
    data.write_bytes(bytes(raw))
    again = fingerprint.model_file_digests("model", folder / "det.bin")
    assert again["model"] == got["model"] and again["model:det.data"] != got["model:det.data"]
    data.unlink()
    assert fingerprint.model_file_digests("model", folder / "det.bin")["model:det.data"] == "missing"

    parsed = []
    real = onnx.load_model
    monkeypatch.setattr(onnx, "load_model", lambda *a, **k: parsed.append(a[0]) or real(*a, **k))
    others = {"photo.bin": cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes(),
              "notes.txt": b"\x08 not a model\n", "empty.dat": b"", "weights.npy": _npy(np.ones((4, 4), np.float32))}
    for name, content in others.items():
        (tmp_path / name).write_bytes(content)
        assert fingerprint.model_file_digests("p", tmp_path / name).keys() == {"p"}
    assert parsed == []


# --------------------------------------------------------------------------- pairs numbers


@pytest.mark.parametrize("tok, message", [
    ("１", "image number '１' is not an integer"),  # fullwidth digit one
    ("1_000", "image number '1_000' is not an integer"),
    ("٣", "image number '٣' is not an integer"),  # Arabic-Indic three
    ("1e30", "image number '1e30' is too large"),
    ("10000000000000001", "image number '10000000000000001' is too large"),
    ("-1.", "image number '-1.' is negative"),
])
def test_pairs_numbers_are_ascii_whole_numbers_with_plain_messages(tmp_path, tok, message):
    """issue 30 review item 9: image numbers in an LFW pairs file: ASCII digits only (``int()``
    took fullwidth digits and ``1_000``), a whole number too large is said to be too large
    (``1e30`` was "not an integer"), a negative one is quoted like the others."""
    from facekit.formats.pairs import PairsError, read_pairs

    p = tmp_path / "pairs.txt"
    p.write_text(f"1 1\nAnn {tok} 2\nAnn 1 Bob 1\n", encoding="utf-8")
    with pytest.raises(PairsError) as e:
        read_pairs(p, "lfw")
    assert str(e.value) == f"{p}:2: {message}" or str(e.value).startswith(f"{p}:2: {message} ("), str(e.value)


def test_pairs_numbers_written_as_floats_still_read(tmp_path):
    """issue 30 review item 9: what stays accepted: ``70``, ``+70``, ``70.``, ``70.0``,
    ``7e1``, ``0e5``; a label ``１`` is refused like any label other than 0/1."""
    from facekit.formats.pairs import PairsError, read_pairs

    p = tmp_path / "pairs.txt"
    p.write_text("1. 5\n" + "".join(f"Ann {t} 1\n" for t in ("70", "+70", "70.", "70.0", "7e1"))
                 + "".join(f"Ann 0e5 Bob {t}\n" for t in ("1", "2", "3", "4", "5")), encoding="utf-8")
    pairs = read_pairs(p)
    assert [x.a for x in pairs[:5]] == ["Ann/Ann_0070.jpg"] * 5 and pairs[5].a == "Ann/Ann_0000.jpg"
    q = tmp_path / "list.txt"
    q.write_text("a.jpg b.jpg １\n", encoding="utf-8")
    with pytest.raises(PairsError, match="label '１' must be 1"):
        read_pairs(q, "list")
