"""facekit.torch.FaceRecDataset: arcface_torch MXFaceDataset semantics checked against the
real mxnet (keys from the header, label = scalar or first element, RGB pixels equal to
mx.image.imdecode), flip and normalisation, DataLoader workers (fork and spawn), shards."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the optional extra 'torch': pip install 'facekit[torch]'")

from facekit.formats.recordio import IndexedRecordIOWriter, IRHeader, pack  # noqa: E402
from facekit.torch import FaceRecDataset  # noqa: E402

# MXFaceDataset.__init__/__getitem__ minus torchvision, run under mxnet: image keys, labels,
# decoded RGB images.
MX_FACE_DATASET = """
import json, numbers, sys, numpy as np, mxnet as mx
d = sys.argv[1]
rec = mx.recordio.MXIndexedRecordIO(d + '/train.idx', d + '/train.rec', 'r')
header, _ = mx.recordio.unpack(rec.read_idx(0))
if header.flag > 0 and sys.argv[2] == 'header':
    imgidx = np.array(range(1, int(header.label[0])))
else:
    imgidx = np.array(list(rec.keys))
labels, imgs = [], []
for idx in imgidx:
    h, img = mx.recordio.unpack(rec.read_idx(int(idx)))
    label = h.label
    if not isinstance(label, numbers.Number):
        label = label[0]
    labels.append(int(label))
    imgs.append(mx.image.imdecode(img).asnumpy())
np.savez(d + '/mx.npz', *imgs)
print(json.dumps({"keys": imgidx.tolist(), "labels": labels}))
"""


def _face_rec(d, data_dir, size=None):
    """insightface layout: aligned_112 faces + the 150x150 John_* chips, labels 0..K-1;
    with ``size``, every image re-encoded at ``size`` x ``size`` (one size, as the mxrec
    sink requires)."""
    d.mkdir()
    groups = [sorted((data_dir / "aligned_112").glob("adaface_man_*.jpg")), sorted((data_dir / "aligned_112").glob("adaface_woman_*.jpg"))]
    ident = data_dir / "images" / "identities"
    groups += [sorted((ident / n).iterdir()) for n in ("John_Salley", "John_Savage", "Rob_Lowe")]
    files = [(lab, p) for lab, g in enumerate(groups) for p in g]
    n = len(files)

    def data(p):
        if size is None:
            return p.read_bytes()
        import cv2

        from facekit.vision.images import decode_image, encode_jpeg

        return encode_jpeg(cv2.resize(decode_image(p.read_bytes()), (size, size), interpolation=cv2.INTER_AREA))

    with IndexedRecordIOWriter(d / "train.idx", d / "train.rec") as w:
        w.write_idx(0, pack(IRHeader(0, [n + 1.0, n + 1.0 + len(groups)], 0, 0), b""))
        key = 1
        for lab, p in files:
            w.write_idx(key, pack(IRHeader(0, float(lab), key, 0), data(p)))
            key += 1
        start = 1
        for g in groups:
            w.write_idx(key, pack(IRHeader(0, [float(start), float(start + len(g))], 0, 0), b""))
            start += len(g)
            key += 1
    return d


@pytest.fixture(scope="module")
def face_dir(tmp_path_factory, data_dir):
    """Mixed sizes (112x112 and 150x150), as files from elsewhere may hold."""
    return _face_rec(tmp_path_factory.mktemp("torch") / "face", data_dir)


@pytest.fixture(scope="module")
def face112_dir(tmp_path_factory, data_dir):
    """The same images, all 112x112 (what the mxrec sink can re-pack into shards)."""
    return _face_rec(tmp_path_factory.mktemp("torch") / "face112", data_dir, size=112)


@pytest.fixture(scope="module")
def glint_dir(tmp_path_factory, data_dir):
    """plain layout, array labels [class, 1.0] (Glint360K-style), keys from 0."""
    d = tmp_path_factory.mktemp("torch") / "glint"
    d.mkdir()
    with IndexedRecordIOWriter(d / "train.idx", d / "train.rec") as w:
        for key, p in enumerate(sorted((data_dir / "aligned_112").glob("*.jpg"))):
            w.write_idx(key, pack(IRHeader(0, [float(10 + key // 4), 1.0], key, 0), p.read_bytes()))
    return d


def test_matches_mxface_dataset_under_mxnet(face_dir, glint_dir, run_mxnet):
    """On the glint-style file MXFaceDataset itself takes key 0's array label [10, 1] for a
    header and fails (KeyError 8); FaceRecDataset sees image bytes in key 0 and reads every
    key, as MXFaceDataset does for flag 0: compared with that branch."""
    with pytest.raises(AssertionError, match="KeyError: 8"):
        run_mxnet(MX_FACE_DATASET, glint_dir, "header")
    for d, branch in ((face_dir, "header"), (glint_dir, "keys")):
        mx = json.loads(run_mxnet(MX_FACE_DATASET, d, branch))
        ds = FaceRecDataset(d, normalize=False)
        assert len(ds) == len(mx["keys"])
        assert [int(ds.rec.key(i)[1]) for i in range(len(ds))] == mx["keys"]
        ref = np.load(d / "mx.npz")
        for i in range(len(ds)):
            rgb, label = ds.decode(i)
            want = ref[f"arr_{i}"]
            assert label == mx["labels"][i]
            assert rgb.shape == want.shape and rgb.dtype == np.uint8 and np.array_equal(rgb, want)  # RGB, bit-exact
            x, y = ds[i]
            assert x.dtype == torch.float32 and tuple(x.shape) == (3,) + want.shape[:2] and y.dtype == torch.long
            assert torch.allclose(x, torch.from_numpy(want.transpose(2, 0, 1).astype(np.float32) / 255))
    assert sorted({int(FaceRecDataset(glint_dir)[i][1]) for i in range(8)}) == [10, 11]


def test_normalisation_and_flip(face_dir):
    ds = FaceRecDataset(face_dir, flip=True)
    rgb, _ = ds.decode(0)
    base = torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255 - 0.5) / 0.5
    torch.manual_seed(3)
    draws = [torch.rand(1).item() < 0.5 for _ in range(16)]
    torch.manual_seed(3)
    got = [ds[0][0] for _ in range(16)]
    assert any(draws) and not all(draws)
    for flipped, x in zip(draws, got):
        assert torch.allclose(x, base.flip(-1) if flipped else base, atol=1e-6)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    seen = FaceRecDataset(face_dir, transform=lambda a: (a.shape, a.dtype, a.flags["C_CONTIGUOUS"]))[0][0]
    assert seen == ((112, 112, 3), np.uint8, True)


def test_handles_are_per_process(face_dir):
    ds = FaceRecDataset(face_dir)
    ds[0]
    part = ds.rec.parts[0]
    r = part.reader
    assert part.reader is r
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.rec.parts[0]._reader is None and clone[0][1] == ds[0][1]
    part._pid = -1  # as in a forked child: a new handle, never the parent's
    assert part.reader is not r


def _sharded(tmp_path, face_dir):
    from conftest import write_config
    from facekit.pipeline.config import load_config
    from facekit.pipeline.engine import run

    cfg = write_config(
        tmp_path,
        f"output: out\nsource: {{plugin: mxrec, path: {face_dir}}}\nsinks: [{{plugin: mxrec, path: sh, shards: 3}}]\n",
    )
    run(load_config(cfg), progress=False)
    return tmp_path / "out" / "sh"


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_on_shards(tmp_path, face112_dir, context):
    sh = _sharded(tmp_path, face112_dir)
    assert len(list(sh.glob("*.rec"))) == 3
    ds = FaceRecDataset(sh)
    single = FaceRecDataset(face112_dir)
    assert len(ds) == len(single) == 32
    ds[0]  # open a handle in the parent before the workers start
    # batch_size=None: one sample at a time
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context=context)
    got = list(dl)
    assert len(got) == len(single)
    for i, (x, y) in enumerate(got):
        sx, sy = single[i]
        assert torch.equal(x, sx) and int(y) == int(sy)
