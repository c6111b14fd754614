"""NVIDIA DALI (isolated env, CPU-only pipelines) judges the plain-layout files facekit
writes: ``fn.readers.mxnet`` + ``fn.decoders.image(device='cpu')`` over a shard set through
the combined index ``<prefix>.dali.idx`` (DALI takes exactly one index file for a list of
``.rec`` files, as byte offsets into their concatenation)."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from conftest import link_identities, resized_identities, write_config
from facekit.pipeline.config import load_config
from facekit.pipeline.engine import run
from facekit.formats.facerec import FaceRec
from facekit.formats.recordio import IndexedRecordIOReader, unpack

# Every sample of one epoch, in reader order: label, sha256 of the raw record image bytes
# (the reader's first output), shape of the decoded image. argv: out folder, then the
# index files (default: <folder>/train.dali.idx). path = the set's non-empty shards (DALI
# cannot map an empty file), in shard order.
DALI_READ = """
import glob, hashlib, json, os, sys
import numpy as np
from nvidia.dali import fn, pipeline_def
d = sys.argv[1]
index = sys.argv[2:] or [os.path.join(d, 'train.dali.idx')]
recs = [f for f in sorted(glob.glob(os.path.join(d, 'train-*-of-*.rec'))) if os.path.getsize(f)]

@pipeline_def(batch_size=8, num_threads=1, device_id=None)
def pipe():
    jpegs, labels = fn.readers.mxnet(path=recs, index_path=index, random_shuffle=False, name='r')
    return jpegs, labels, fn.decoders.image(jpegs, device='cpu')

p = pipe()
p.build()
n = p.epoch_size('r')
rows = []
while len(rows) < n:
    jpegs, labels, images = p.run()
    for j, l, im in zip(jpegs, labels, images):
        if len(rows) < n:
            rows.append([float(np.array(l).reshape(-1)[0]), hashlib.sha256(np.array(j).tobytes()).hexdigest(), list(np.array(im).shape)])
print(json.dumps({'epoch_size': n, 'rows': rows}))
"""


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture(scope="module")
def shard_sets(tmp_path_factory, data_dir):
    """The 94 real photos of 21 identities (as 112x112 JPEGs: a rec holds one image size) as
    plain shard sets: 3 shards, 3 shards shuffled, and 30 shards (more than the identities
    allow: empty shards)."""
    tmp = tmp_path_factory.mktemp("dali")
    root = resized_identities(data_dir, tmp / "root")
    cfg = write_config(
        tmp,
        f"""
        output: out
        source: {{plugin: folders, root: {root}, min_images: 1}}
        sinks:
          - {{plugin: mxrec, path: s3, layout: plain, shards: 3}}
          - {{plugin: mxrec, path: s3shuf, layout: plain, shards: 3, shuffle: true, seed: 11}}
          - {{plugin: mxrec, path: s30, layout: plain, shards: 30}}
        """,
    )
    s = run(load_config(cfg), progress=False)
    assert s.faces_kept == 94
    assert s.sinks["sinks[2] (mxrec)"]["images_per_file"].count(0) > 1  # consecutive empty shards included
    return tmp / "out"


def _expected(d) -> list:
    """(label, sha256, decoded shape) of every image of the set, in shard order (facekit)."""
    out = []
    for _, h, img in FaceRec(d):
        im = cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_COLOR)
        out.append([float(h.label), _sha(img), list(im.shape)])
    return out


@pytest.mark.parametrize("name", ["s3", "s3shuf", "s30"])
def test_dali_reads_every_image_of_a_plain_shard_set(shard_sets, run_dali, name):
    """DALI over all shards with the one combined index: 94 samples, each the record's
    original image bytes with its label, decoding to the same shape as OpenCV's decode."""
    d = shard_sets / name
    got = json.loads(run_dali(DALI_READ, d))
    want = _expected(d)
    assert got["epoch_size"] == len(want) == 94
    assert got["rows"] == want


def test_dali_refuses_one_index_per_shard(shard_sets, run_dali):
    """Why the combined index exists: DALI's readers.mxnet takes exactly one index file."""
    d = shard_sets / "s3"
    idx = sorted(str(p) for p in d.glob("train-*-of-*.idx"))
    with pytest.raises(AssertionError, match="supports only a single index file"):
        run_dali(DALI_READ, d, *idx)


@pytest.mark.parametrize("name", ["s3", "s3shuf", "s30"])
def test_combined_index_is_the_idx_of_the_concatenated_shards(shard_sets, tmp_path, name):
    """train.dali.idx = keys 0..N-1 in shard order, offsets into `cat` of the shards:
    an indexed reader over the concatenation sees the set's records, in order."""
    d = shard_sets / name
    shards = sorted(d.glob("train-*-of-*.rec"))
    cat = tmp_path / "all.rec"
    cat.write_bytes(b"".join(p.read_bytes() for p in shards))
    r = IndexedRecordIOReader(d / "train.dali.idx", cat)
    assert r.keys == list(range(94))
    got = [unpack(r.read_idx(k)) for k in r.keys]
    want = [(h, img) for _, h, img in FaceRec(d)]
    assert [(h.label, h.id, _sha(img)) for h, img in got] == [(h.label, h.id, _sha(img)) for h, img in want]
    r.close()


def test_no_combined_index_where_it_does_not_apply(shard_sets, tmp_path, data_dir):
    """Only plain shard sets get one: a single file has its own idx; an insightface set
    has header and identity records DALI would turn into samples."""
    root = link_identities(data_dir, tmp_path / "root", ["John_Salley", "John_Savage"])
    cfg = write_config(
        tmp_path,
        f"""
        output: out
        source: {{plugin: folders, root: {root}, min_images: 1}}
        sinks:
          - {{plugin: mxrec, path: one, layout: plain}}
          - {{plugin: mxrec, path: face, shards: 2}}
        """,
    )
    s = run(load_config(cfg), progress=False)
    assert not list((tmp_path / "out").glob("*/*.dali.idx"))
    assert s.sinks["sinks[0] (mxrec)"]["dali_index"] is None and s.sinks["sinks[1] (mxrec)"]["dali_index"] is None


def test_dali_turns_insightface_header_and_identity_records_into_samples(tmp_path, data_dir, run_dali):
    """Why DALI needs layout: plain (README): on an insightface file readers.mxnet makes a
    sample of every record: the images, plus the header and one record per identity,
    which have no image bytes (nothing a decoder can decode; decoding them fails)."""
    root = link_identities(data_dir, tmp_path / "root", ["John_Salley", "John_Savage"])
    cfg = write_config(
        tmp_path, f"output: out\nsource: {{plugin: folders, root: {root}, min_images: 1}}\nsinks: [{{plugin: mxrec, path: face}}]\n"
    )
    s = run(load_config(cfg), progress=False)
    d = tmp_path / "out" / "face"
    got = json.loads(
        run_dali(
            """
            import json, sys
            import numpy as np
            from nvidia.dali import fn, pipeline_def
            d = sys.argv[1]

            @pipeline_def(batch_size=4, num_threads=1, device_id=None)
            def pipe():
                jpegs, labels = fn.readers.mxnet(path=[d + '/train.rec'], index_path=[d + '/train.idx'], name='r')
                return jpegs, labels

            p = pipe()
            p.build()
            n = p.epoch_size('r')
            sizes = []
            while len(sizes) < n:
                jpegs, _ = p.run()
                sizes += [int(np.array(j).size) for j in jpegs][: n - len(sizes)]
            print(json.dumps(sizes))
            """,
            d,
        )
    )
    assert len(got) == s.faces_kept + 1 + 2
    assert sum(1 for n in got if n == 0) == 1 + 2
