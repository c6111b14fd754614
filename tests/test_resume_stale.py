"""A resume never reuses a stale shard (issue 30 item 1): each reproduction is a run
killed (SIGKILL) part-way, a change a size + mtime check or a code digest of the stage's
own module cannot see, and a rerun of the same pipeline, which must publish what an
uninterrupted run of the changed pipeline publishes.

- a helper module the plugin's stage imports (in its package, or beside it in its
  distribution) is edited;
- an ONNX model's external-data file gets other weights (the ``.onnx`` file unchanged);
- an input image is rewritten with the same size and its old mtime (``touch -r``);
- two kept shards' Parquet files are swapped (their done files then describe the other).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import link_aligned_112, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run

NAMES = ("deepface_id04", "deepface_id05", "deepface_id06")  # 4 photos each: one shard each
SIZE = 256

# Run a pipeline and SIGKILL the process right after shard ``argv[2]`` is kept.
KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from facekit.pipeline import work
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run

    save = work.WorkFolder.save

    def save_then_die(self, result, digest):
        save(self, result, digest)
        if result.index >= int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)

    work.WorkFolder.save = save_then_die
    run(load_config(sys.argv[1]), progress=False)
    """
)


def _killed_after(cfg: Path, shard: int, env=None) -> list[str]:
    """Run ``cfg`` (output: ``out`` beside it) in a process SIGKILLed once shard ``shard``
    is kept; the done files left."""
    r = subprocess.run([sys.executable, "-c", KILLED, str(cfg), str(shard)], capture_output=True, text=True, env=env)
    assert r.returncode == -signal.SIGKILL, r.stderr
    out = cfg.parent / "out"
    return sorted(p.name for p in (out / ".facekit" / "shards").glob("*.done.json"))


def _tree(out: Path) -> dict[str, bytes]:
    """The folders sink's files and rejects.tsv, by relative path."""
    files = {"rejects.tsv": (out / "rejects.tsv").read_bytes()}
    for f in sorted((out / "faces").rglob("*")):
        if f.is_file():
            files[str(f.relative_to(out))] = f.read_bytes()
    return files


def _config(tmp_path: Path, root: Path, model: Path, out: str = "out", name: str = "p.yaml") -> Path:
    return write_config(
        tmp_path,
        f"""
        output: {tmp_path / out}
        executor: {{plugin: inprocess}}
        shard_size: 1
        source: {{plugin: folders, root: {root}}}
        detector: {{plugin: retinaface, model: {model}}}
        aligner: {{plugin: arcface, size: 112}}
        sinks: [{{plugin: folders, path: faces}}]
        """,
        name,
    )


@pytest.fixture(scope="module")
def png_photos(data_dir, tmp_path_factory) -> Path:
    """Three identities of real photos as uncompressed PNGs of one size: a photo rewritten
    with another's pixels keeps its file size exactly."""
    import cv2

    from facekit.vision.images import decode_image

    root = tmp_path_factory.mktemp("png") / "root"
    for name in NAMES:
        (root / name).mkdir(parents=True)
        for f in sorted((data_dir / "images" / "identities" / name).iterdir()):
            img = cv2.resize(decode_image(f.read_bytes()), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(root / name / (f.stem + ".png")), img, [cv2.IMWRITE_PNG_COMPRESSION, 0])
    return root


@pytest.fixture(scope="module")
def reference(png_photos, scrfd_model, tmp_path_factory):
    """An uninterrupted run of the PNG photos: its summary and outputs."""
    tmp = tmp_path_factory.mktemp("ref")
    summary = run(load_config(_config(tmp, png_photos, scrfd_model)), progress=False)
    assert summary.shards["count"] == len(NAMES)
    return _tree(tmp / "out")


# --------------------------------------------------------------------------- input files


def test_an_input_rewritten_with_its_old_size_and_mtime_is_not_reused(tmp_path, png_photos, scrfd_model):
    """issue 30 item 1: a photo rewritten in place with the same size, then ``touch -r``
    (its old mtime): the shard holding it runs again (its ctime changed), the other kept
    shard is reused, and the outputs are those of an uninterrupted run on the new photos."""
    root = tmp_path / "root"
    shutil.copytree(png_photos, root)
    cfg = _config(tmp_path, root, scrfd_model)
    assert len(_killed_after(cfg, 1)) == 2
    photo = sorted((root / NAMES[0]).iterdir())[0]
    other = sorted((root / NAMES[1]).iterdir())[0]  # another person's face, same size
    st = photo.stat()
    new = other.read_bytes()
    assert len(new) == st.st_size and new != photo.read_bytes()
    photo.write_bytes(new)  # in place: same inode
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r
    after = photo.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)

    summary = run(load_config(cfg), progress=False)
    assert summary.shards["reused"] == 1  # shard 1 only: shard 0's input changed
    fresh = run(load_config(_config(tmp_path, root, scrfd_model, out="fresh", name="fresh.yaml")), progress=False)
    assert fresh.faces_kept == summary.faces_kept
    assert _tree(tmp_path / "out") == _tree(tmp_path / "fresh")


def test_file_stamp_tells_a_same_size_rewrite_with_the_old_mtime(tmp_path):
    """issue 30 item 1: the input digest of a shard sees a rewrite that keeps size and mtime."""
    from facekit.pipeline.shards import Shard
    from facekit.stages import Sample

    f = tmp_path / "a.jpg"
    f.write_bytes(b"one")
    st = f.stat()
    shard = Shard(0, [Sample(0, str(f), "a")])
    before = shard.digest()
    # a kernel whose file times are coarse (a timer tick) can give the rewrite the ctime of
    # the first write: rewrite until the ctime has advanced (bounded: 2 s)
    deadline = time.monotonic() + 2.0
    while True:
        f.write_bytes(b"two")
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        if f.stat().st_ctime_ns != st.st_ctime_ns or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert f.stat().st_ctime_ns != st.st_ctime_ns, "the file system's ctime did not advance in 2 s"
    assert (f.stat().st_size, f.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert shard.digest() != before


# --------------------------------------------------------------------------- kept shards


def test_swapped_parquet_files_are_not_reused(tmp_path, png_photos, scrfd_model, reference):
    """issue 30 item 1: shards 0 and 1 (4 photos each) kept, then their Parquet files
    swapped: each done file now describes the other's Parquet file, so both shards run
    again (``run_again``) instead of publishing one identity's faces under the other's label."""
    cfg = _config(tmp_path, png_photos, scrfd_model)
    assert len(_killed_after(cfg, 1)) == 2
    work = tmp_path / "out" / ".facekit" / "shards"
    a, b = work / "shard-000000.parquet", work / "shard-000001.parquet"
    assert a.read_bytes() != b.read_bytes()
    tmp = work / "swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)

    summary = run(load_config(cfg), progress=False)
    assert summary.shards["reused"] == 0 and summary.shards["run_again"] == 2
    assert _tree(tmp_path / "out") == reference


def test_a_kept_shard_damaged_in_place_runs_again(tmp_path):
    """issue 30 item 1: a Parquet file whose bytes changed but which still parses (same
    size, another row's value) does not match the SHA-256 its done file records."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from facekit.pipeline.executor import ShardFailed
    from facekit.pipeline.shards import Outcome, Shard, ShardResult
    from facekit.pipeline.work import WorkFolder
    from facekit.stages import Sample

    items = [Sample(i, f"a/{i}.jpg", "a", data=b"x" * 10) for i in range(3)]
    shard = Shard(0, items)
    work = WorkFolder(tmp_path, {"p": 1})
    work.open(7)
    work.save(ShardResult(0, [Outcome("a", [s], [], 1) for s in items]), "d")
    path = work.dir / "shard-000000.parquet"
    size = path.stat().st_size
    t = pq.read_table(path)
    t = t.set_column(t.schema.get_field_index("identity"), "identity", pa.array([b"b"] * 3, pa.binary()))
    pq.write_table(t, path, compression="none", write_page_checksum=True)
    assert path.stat().st_size == size  # a whole, readable file: only its bytes tell
    again = WorkFolder(tmp_path, {"p": 1})
    again.open(7)
    loader = again.reuse(shard, "d")
    with pytest.raises(ShardFailed, match="SHA-256"):
        loader()
    assert again.run_again == 1 and again.reuse(shard, "d") is None  # forgotten: it runs again


# --------------------------------------------------------------------------- models


def _external(model, folder: Path) -> Path:
    """``model`` saved as ``folder/det.onnx`` with its weights (tensors of 1 kB or more) in
    ``folder/det.data``."""
    import onnx

    folder.mkdir()
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # saving moves the weights out of the proto it is given
    onnx.save_model(copy, str(folder / "det.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="det.data")
    return folder / "det.onnx"


def test_changed_onnx_external_data_is_not_reused(tmp_path, png_photos, scrfd_model, reference):
    """issue 30 item 1: SCRFD saved with its weights in ``det.data``; the landmark heads'
    weights changed in ``det.data`` only (``det.onnx`` byte-identical): no kept shard is
    reused and the outputs are those of the new weights."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load_model(str(scrfd_model))
    det = _external(model, tmp_path / "model")
    for t in model.graph.initializer:
        if t.name.startswith("bbox_head.stride_kps.") and t.name.endswith(".weight"):
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(1.1), t.name))
    changed = _external(model, tmp_path / "changed")
    assert changed.read_bytes() == det.read_bytes()
    assert (changed.parent / "det.data").read_bytes() != (det.parent / "det.data").read_bytes()

    cfg = _config(tmp_path, png_photos, det)
    assert len(_killed_after(cfg, 1)) == 2
    shutil.copyfile(changed.parent / "det.data", det.parent / "det.data")
    summary = run(load_config(cfg), progress=False)
    assert summary.shards["reused"] == 0
    got = _tree(tmp_path / "out")
    assert got != reference  # the new weights move the landmarks, so the crops
    run(load_config(_config(tmp_path, png_photos, changed, out="fresh", name="fresh.yaml")), progress=False)
    assert got == _tree(tmp_path / "fresh")


def test_external_data_files_are_listed_and_a_missing_one_is_said(tmp_path, scrfd_model):
    """issue 30 item 1: the fingerprint lists an ONNX model's external-data file without
    loading the weights; a missing one is a digest entry saying so."""
    import onnx

    from facekit.pipeline.fingerprint import model_file_digests, onnx_external_files

    det = _external(onnx.load_model(str(scrfd_model)), tmp_path / "m")
    assert onnx_external_files(det) == ["det.data"]
    assert onnx_external_files(scrfd_model) == []
    got = model_file_digests("model", det)
    assert set(got) == {"model", "model:det.data"} and len(got["model:det.data"]) == 64
    (tmp_path / "m" / "det.data").unlink()
    assert model_file_digests("model", det)["model:det.data"] == "missing"


# --------------------------------------------------------------------------- plugin code

PLUGIN = '''
"""A detector trusting pre-aligned chips: the ArcFace template points, scaled by a helper."""
import numpy as np
import facekit
from facekit.vision import template_for

import acme_shift
from acme_faces._geom import SCALE


class AcmeTemplate(facekit.Detector):
    name = "acme_template"

    def detect(self, image):
        h, w = image.shape[:2]
        lmk = template_for(112) * np.array([w / 112, h / 112], np.float32) * SCALE + acme_shift.SHIFT
        box = np.array([[0, 0, w, h]], np.float32)
        return facekit.Detections(box, np.ones(1, np.float32), lmk[None].astype(np.float32))


@facekit.hookimpl
def register_stages(register):
    register(AcmeTemplate)
'''

PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "acme-faces"
version = "1.0.0"
dependencies = []

[project.entry-points.facekit]
acme = "acme_faces"

[tool.setuptools]
packages = ["acme_faces"]
py-modules = ["acme_shift"]
"""

FINGERPRINT = (
    "import sys\n"
    "from facekit.pipeline.config import load_config\n"
    "from facekit.pipeline.fingerprint import pipeline_fingerprint\n"
    "print(pipeline_fingerprint(load_config(sys.argv[1]))['code'])\n"
)


@pytest.fixture
def acme_plugin(tmp_path) -> tuple[dict, Path]:
    """A third-party plugin distribution: package ``acme_faces`` (its stage imports the
    helper ``acme_faces/_geom.py``) and a top-level helper module ``acme_shift``, installed
    with pip. Returns an environment using it and the folder it was installed in."""
    src = tmp_path / "acme-src"
    (src / "acme_faces").mkdir(parents=True)
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "acme_faces" / "__init__.py").write_text(PLUGIN)
    (src / "acme_faces" / "_geom.py").write_text("SCALE = 1.0\n")
    (src / "acme_shift.py").write_text("SHIFT = 0.0\n")
    site = tmp_path / "acme-site"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(src)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    env.pop("FACEKIT_DEBUG", None)
    return env, site


def _cli_run(cfg: Path, out: Path, env: dict) -> dict:
    """``facekit run`` of ``cfg`` (output ``out``) with ``env``: its summary."""
    r = subprocess.run([sys.executable, "-m", "facekit.cli", "run", "-q", str(cfg)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads((out / "summary.json").read_text())


def test_an_edited_plugin_helper_module_is_not_reused(tmp_path, acme_plugin, data_dir):
    """issue 30 item 1: the plugin's stage module is unchanged, the helper module it
    imports (``acme_faces/_geom.py``) is edited after a killed run: no kept shard is
    reused (the outputs do not mix old and new code); editing the distribution's other
    module (``acme_shift.py``, beside the package) changes the code digest too."""
    env, site = acme_plugin
    root = link_aligned_112(data_dir, tmp_path / "root")

    def config(out, name):
        return write_config(
            tmp_path,
            f"""
            output: {tmp_path / out}
            executor: {{plugin: inprocess}}
            shard_size: 1
            source: {{plugin: folders, root: {root}}}
            detector: {{plugin: acme_template}}
            aligner: {{plugin: arcface, size: 112}}
            sinks: [{{plugin: folders, path: faces}}]
            """,
            name,
        )

    cfg = config("out", "p.yaml")
    assert _killed_after(cfg, 0, env) == ["shard-000000.done.json"]
    (site / "acme_faces" / "_geom.py").write_text("SCALE = 0.9\n")
    summary = _cli_run(cfg, tmp_path / "out", env)
    assert summary["shards"]["count"] == 2 and summary["shards"]["reused"] == 0
    _cli_run(config("fresh", "fresh.yaml"), tmp_path / "fresh", env)
    assert _tree(tmp_path / "out") == _tree(tmp_path / "fresh")

    def code():
        r = subprocess.run([sys.executable, "-c", FINGERPRINT, str(cfg)], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    before = code()
    (site / "acme_shift.py").write_text("SHIFT = 2.0\n")
    assert code() != before


def test_library_versions_are_in_the_fingerprint(monkeypatch, tmp_path):
    """issue 30 item 1: an upgraded library (onnxruntime, the mtcnn wheel's weights) between
    a crash and a resume changes the fingerprint, so the kept shards run again."""
    import importlib.metadata

    from facekit.pipeline import fingerprint as fpmod

    before = fpmod.library_versions()
    assert "onnxruntime" in before and "mtcnn" in before and "numpy" in before
    assert "torch" not in before and "pytest" not in before  # extras are not run-time requirements
    real = importlib.metadata.version
    monkeypatch.setattr(
        fpmod.importlib.metadata, "version", lambda name: "99.0" if name == "onnxruntime" else real(name)
    )
    after = fpmod.library_versions()
    assert after["onnxruntime"] == "99.0" and after != before
    cfg = tmp_path / "p.yaml"
    cfg.write_text("output: out\nsource: {plugin: samples}\ndetector: {plugin: mtcnn}\naligner: {plugin: arcface}\nsinks: [{plugin: folders, path: a}]\n")
    spec = load_config(cfg)
    assert fpmod.pipeline_fingerprint(spec)["libraries"]["onnxruntime"] == "99.0"
