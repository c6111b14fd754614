"""``facekit overlap``: training identities found in verification bins (issue 12 item 4),
then the dataset written without them through a source's ``exclude:``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import facekit_cli, write_config
from facekit.formats.evalbin import save_bin
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run

pytestmark = pytest.mark.slow

BOTH = ["John_Savage", "deepface_id01"]  # in the training set and in the bin
BIN_ONLY = ["John_Salley", "deepface_id02"]
TRAIN_ONLY = ["John_Shimkus", "deepface_id03"]


def _link(root: Path, ids: Path, names, half: int) -> Path:
    """root/<name>/: the first (half 0) or second (half 1) half of each identity's photos."""
    for n in names:
        files = sorted((ids / n).iterdir())
        k = len(files) // 2
        (root / n).mkdir(parents=True)
        for f in files[:k] if half == 0 else files[k:]:
            os.symlink(f, root / n / f.name)
    return root


def _pipeline(tmp_path, root, scrfd_model, sink, name):
    cfg = write_config(tmp_path, f"""
        output: {name}
        source: {{plugin: folders, root: {root}}}
        detector: {{plugin: retinaface, model: {scrfd_model}}}
        aligner: {{plugin: arcface}}
        sinks: [{sink}]
        """, f"{name}.yaml")
    return run(load_config(cfg), progress=False)


@pytest.fixture(scope="module")
def sets(data_dir, scrfd_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("overlap")
    ids = data_dir / "images" / "identities"
    train = _link(tmp / "train_photos", ids, BOTH + TRAIN_ONLY, 0)
    test = _link(tmp / "test_photos", ids, BOTH + BIN_ONLY, 1)
    summary = _pipeline(tmp, train, scrfd_model, "{plugin: mxrec, path: rec}", "train")
    _pipeline(tmp, test, scrfd_model, "{plugin: folders, path: faces}", "test")
    crops = sorted((tmp / "test" / "faces").rglob("*.jpg"))
    crops = crops[: len(crops) // 2 * 2]
    save_bin(tmp / "test.bin", [c.read_bytes() for c in crops], [i % 2 == 0 for i in range(len(crops) // 2)])
    return tmp, summary


@pytest.fixture(scope="module")
def overlap(sets, rec_model):
    """``facekit overlap`` of the training RecordIO against the test bin, run once for the
    tests that need it (each of them runs alone too): its ``--json`` report; it writes the
    exclude list ``exclude.txt`` beside the sets."""
    tmp, _ = sets
    r = facekit_cli("overlap", tmp / "train" / "rec", "--against", tmp / "test.bin", "--model", rec_model,
                    "--json", "--exclude", tmp / "exclude.txt")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_overlap_reports_exactly_the_shared_identities(sets, overlap, rec_model):
    tmp, summary = sets
    label_of = {name: v["label"] for name, v in summary.identities.items()}
    out = overlap
    assert out["compared"] == 4
    found = {int(m["identity"]) for m in out["overlap"]}
    assert found == {label_of[n] for n in BOTH}
    assert all(m["images"] and m["images"][0][0].startswith("test.bin[") for m in out["overlap"])
    assert sorted((tmp / "exclude.txt").read_text().split()) == sorted(str(label_of[n]) for n in BOTH)
    # the same on the aligned crops as identity folders (names instead of class ids)
    r = facekit_cli("overlap", tmp / "test" / "faces", "--against", tmp / "test.bin", "--model", rec_model, "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["overlap"]) == 4  # every test identity is in its own bin


def test_dataset_written_without_the_overlap(sets, overlap, tmp_path):
    """The exclude list ``facekit overlap`` wrote (the ``overlap`` fixture: this test does
    not depend on the one above having run, issue 30 item 19) leaves the shared identities
    out of a repacked dataset, each of their records an ``excluded`` reject."""
    tmp, summary = sets
    assert overlap["overlap"]  # the list is not empty
    cfg = write_config(tmp_path, f"""
        output: clean
        source: {{plugin: mxrec, path: {tmp / 'train' / 'rec'}, labels: renumber, exclude: {tmp / 'exclude.txt'}}}
        sinks: [{{plugin: mxrec, path: rec}}]
        """)
    s = run(load_config(cfg), progress=False)
    kept = {n: v for n, v in summary.identities.items() if v["label"] >= 0}
    assert s.identities_written == len(kept) - len(BOTH)
    assert s.rejects == {"excluded": sum(kept[n]["kept"] for n in BOTH)}
    assert sorted(v["label"] for v in s.identities.values() if v["label"] >= 0) == [0, 1]


def test_overlap_errors_are_one_line(tmp_path, rec_model, data_dir):
    (tmp_path / "bad.bin").write_bytes(b"not a pickle")
    (tmp_path / "ds").mkdir()
    r = facekit_cli("overlap", tmp_path / "ds", "--against", tmp_path / "bad.bin", "--model", rec_model)
    assert r.returncode == 1 and "bad.bin" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # a training image that is not one: the error names that file
    from facekit.formats.evalbin import save_bin

    crop = sorted((data_dir / "aligned_112").glob("*.jpg"))
    save_bin(tmp_path / "ok.bin", [crop[0].read_bytes()] * 2, [True])
    (tmp_path / "ds" / "someone").mkdir()
    (tmp_path / "ds" / "someone" / "fake.jpg").write_text("not an image")
    r = facekit_cli("overlap", tmp_path / "ds", "--against", tmp_path / "ok.bin", "--model", rec_model)
    assert r.returncode == 1 and "fake.jpg" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
