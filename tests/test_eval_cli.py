"""``facekit eval`` on several bins at once, some of which cannot be scored fully: a bin of
positive pairs only (or negative only) still gets its accuracy, with TAR@FAR reported as
undefined and why (JSON null); a bin that fails (truncated, too few pairs for the folds) is
reported by name after the results of the others, and the exit status says so. Real photos
(the pre-aligned 112x112 faces) and the real MobileFaceNet."""

from __future__ import annotations

import itertools
import json

import pytest

from conftest import facekit_cli
from facekit.formats.evalbin import dumps_bin, save_bin


@pytest.fixture(scope="module")
def bins(tmp_path_factory, data_dir):
    """mixed.bin (12 pairs in blocks of 2 positives + 1 negative), allpos.bin, allneg.bin (12 pairs each),
    broken.bin (truncated), tiny.bin (3 pairs: fewer than the folds asked for)."""
    tmp = tmp_path_factory.mktemp("evalcli")
    faces = sorted((data_dir / "aligned_112").glob("*.jpg"))
    by_id: dict[str, list[bytes]] = {}
    for f in faces:
        by_id.setdefault(f.stem.rsplit("_", 1)[0], []).append(f.read_bytes())
    (man, woman) = by_id.values()
    pos = [(a, b) for imgs in (man, woman) for a, b in itertools.combinations(imgs, 2)]  # 12
    neg = [(a, b) for a in man for b in woman][:12]

    def write(name, pairs, issame):
        save_bin(tmp / name, [x for p in pairs for x in p], issame)
        return tmp / name

    mixed = [p for i in range(4) for p in (pos[2 * i], pos[2 * i + 1], neg[3 * i])]
    out = {
        "mixed": write("mixed.bin", mixed, [True, True, False] * 4),
        "allpos": write("allpos.bin", pos, [True] * 12),
        "allneg": write("allneg.bin", neg, [False] * 12),
        "tiny": write("tiny.bin", pos[:3], [True] * 3),
    }
    out["broken"] = tmp / "broken.bin"
    out["broken"].write_bytes(dumps_bin([x for p in pos[:4] for x in p], [True] * 4)[:-40])
    return out


def test_one_class_bins_report_accuracy_and_undefined_tar(bins, rec_model, tmp_path):
    js = tmp_path / "scores.json"
    r = facekit_cli("eval", "-m", rec_model, "--folds", "2", "-q", "--json", js, bins["allpos"], bins["allneg"])
    assert r.returncode == 0, r.stderr
    doc = json.loads(js.read_text())
    pos, neg = doc["results"]
    assert doc["errors"] == []
    assert pos["pairs"] == pos["positives"] == 12 and neg["positives"] == 0
    assert pos["tar"] is None and pos["tar_std"] is None and pos["far"] is None
    assert pos["tar_undefined"] == "no negative pairs: FAR is undefined"
    assert neg["tar"] is None and neg["tar_undefined"] == "no positive pairs: TAR is undefined"
    # accuracy is measured (one class: the training folds' first best threshold takes all of
    # their pairs, a test pair beyond it is wrong)
    assert 0.5 < pos["accuracy"] <= 1 and 0.5 < neg["accuracy"] <= 1 and pos["xnorm"] > 0
    assert pos["accuracy"] == sum(pos["fold_accuracies"]) / 2 and len(neg["fold_thresholds"]) == 2
    lines = r.stdout.splitlines()
    row = next(ln for ln in lines if ln.startswith("allpos.bin"))
    assert "undefined: no negative pairs: FAR is undefined" in row and " 12 " in row
    assert next(ln for ln in lines if ln.startswith("allneg.bin")).count("undefined: no positive pairs") == 1


def test_a_failing_bin_does_not_hide_the_others(bins, rec_model, tmp_path):
    js = tmp_path / "scores.json"
    order = ["broken", "mixed", "tiny", "allpos"]
    r = facekit_cli("eval", "-m", rec_model, "--folds", "4", "-q", "--json", js, *(bins[k] for k in order))
    assert r.returncode == 1
    # the results of the bins that could be scored, in order
    rows = [ln.split()[0] for ln in r.stdout.splitlines() if ln.split()[0].endswith(".bin")]
    assert rows == ["mixed.bin", "allpos.bin"], r.stdout
    doc = json.loads(js.read_text())
    assert [x["bin"] for x in doc["results"]] == [str(bins["mixed"]), str(bins["allpos"])]
    mixed = doc["results"][0]
    assert mixed["tar"] is not None and mixed["tar_undefined"] is None and mixed["accuracy"] > 0.8
    # then one line per failed bin, each naming it
    errs = r.stderr.strip().splitlines()
    assert len(errs) == 2, r.stderr
    assert errs[0].startswith(f"error: {bins['broken']}: not a readable pickle"), errs[0]
    assert errs[1] == f"error: {bins['tiny']}: cannot split 3 pairs into 4 folds", errs[1]
    assert [e["bin"] for e in doc["errors"]] == [str(bins["broken"]), str(bins["tiny"])]
    # the mixed bin's numbers do not depend on its neighbours
    alone = tmp_path / "alone.json"
    r = facekit_cli("eval", "-m", rec_model, "--folds", "4", "-q", "--json", alone, bins["mixed"])
    assert r.returncode == 0
    got = json.loads(alone.read_text())["results"][0]
    assert {k: v for k, v in got.items() if k != "seconds"} == {k: v for k, v in mixed.items() if k != "seconds"}


def test_providers_default_and_given(bins, rec_model, tmp_path):
    """The recognition model runs on ``--providers`` (default CPUExecutionProvider) with
    ``--threads``; both are written to the JSON and the numbers do not depend on them."""
    js = tmp_path / "default.json"
    r = facekit_cli("eval", "-m", rec_model, "--folds", "4", "-q", "--json", js, bins["mixed"])
    assert r.returncode == 0, r.stderr
    assert "providers CPUExecutionProvider" in r.stdout.splitlines()[0]
    default = json.loads(js.read_text())
    assert default["providers"] == ["CPUExecutionProvider"] and default["threads"] == 0
    given = tmp_path / "given.json"
    r = facekit_cli(
        "eval", "-m", rec_model, "--folds", "4", "-q", "--providers", " CPUExecutionProvider ", "--threads", "1",
        "--json", given, bins["mixed"],
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(given.read_text())
    assert doc["providers"] == ["CPUExecutionProvider"] and doc["threads"] == 1
    strip = lambda rows: [{k: v for k, v in x.items() if k != "seconds"} for x in rows]  # noqa: E731
    assert strip(doc["results"]) == strip(default["results"])


@pytest.mark.parametrize(
    "value, message",
    [
        ("NoSuchExecutionProvider", "onnxruntime execution provider NoSuchExecutionProvider is not available; installed: "),
        (
            "CPUExecutionProvider,NoSuchExecutionProvider",
            "onnxruntime execution provider NoSuchExecutionProvider is not available; installed: ",
        ),
        (" , ", "give at least one onnxruntime execution provider"),
    ],
)
def test_bad_provider_is_one_line_before_the_model_is_read(bins, rec_model, tmp_path, value, message):
    import onnxruntime as ort

    js = tmp_path / "scores.json"
    r = facekit_cli("eval", "-m", rec_model, "-q", "--providers", value, "--json", js, bins["mixed"])
    assert r.returncode == 2
    assert r.stdout == "" and not js.exists()
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"error: --providers: {message}"), line
    if "installed" in message:
        assert line.endswith(", ".join(ort.get_available_providers())), line


def test_embedder_checks_providers(rec_model):
    from facekit.eval import OnnxEmbedder

    with pytest.raises(ValueError, match=r"provider NoSuchExecutionProvider is not available; installed: .*CPUExecutionProvider"):
        OnnxEmbedder(rec_model, providers=["NoSuchExecutionProvider"])
    emb = OnnxEmbedder(rec_model, threads=1)
    assert emb.providers == ["CPUExecutionProvider"] and emb.threads == 1
