"""The README's main job: configs/quickstart.yaml on the embedded sample photos."""

from __future__ import annotations

import json

import pytest

from conftest import REPO, facekit_cli


@pytest.mark.slow
def test_quickstart_runs_and_mxnet_reads_it(tmp_path, has_mtcnn, run_mxnet):
    out = tmp_path / "qs"
    r = facekit_cli("run", "-q", REPO / "configs" / "quickstart.yaml", "--output", out)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    # t1.jpg: six people, one identity each; Tom Hanks; the astronaut. Two face-free images.
    assert summary["images_read"] == 5
    assert summary["faces_kept"] == 8 and summary["identities_written"] == 8
    assert summary["rejects"] == {"no_face": 2}
    rej = (out / "rejects.tsv").read_text()
    assert "mask_white.jpg" in rej and "chelsea.png" in rej
    got = json.loads(
        run_mxnet(
            """
            import sys, json, mxnet as mx
            d = sys.argv[1]
            r = mx.recordio.MXIndexedRecordIO(d + '/train.idx', d + '/train.rec', 'r')
            h0, _ = mx.recordio.unpack(r.read_idx(0))
            shapes = [mx.image.imdecode(mx.recordio.unpack(r.read_idx(k))[1]).shape
                      for k in range(1, int(h0.label[0]))]
            print(json.dumps({"label": list(map(float, h0.label)), "shapes": [list(s) for s in shapes]}))
            """,
            out / "rec",
        )
    )
    assert got["label"] == [9.0, 17.0]
    assert got["shapes"] == [[112, 112, 3]] * 8
    assert len(list((out / "aligned").glob("id_*/*.jpg"))) == 8
    assert (out / "rec" / "property").read_text() == "8,112,112\n"
