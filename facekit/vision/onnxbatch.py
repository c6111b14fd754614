"""Make an ONNX model exported with a fixed batch of 1 take any batch size.

Many face models are exported with their batch dimension fixed to 1 (the shared
MobileFaceNet: input ``1x3x112x112``, a ``Reshape`` to ``[1, -1]`` before its last layer),
so onnxruntime runs them one image per call. :func:`batchable` rewrites such a graph: the
batch dimension of its inputs and outputs becomes symbolic, a ``Reshape`` whose constant
shape starts with 1 keeps the input's batch instead (0, "copy this dimension", ONNX's
``allowzero=0`` rule), and the intermediate shapes the exporter recorded are dropped
(onnxruntime infers them). The rewrite is then checked: the rewritten model on a batch of
two inputs must give what the original gives one input at a time; a graph that cannot be
rewritten (another op bakes in the batch) is left as it is, and the caller is told why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np


def _rewrite(model) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto``) in place; returns the number of
    ``Reshape`` shapes changed."""
    from onnx import numpy_helper

    for t in list(model.graph.input) + list(model.graph.output):
        dims = t.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    del model.graph.value_info[:]
    consts = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    consts[node.output[0]] = a.t
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in consts:
            continue
        if any(a.name == "allowzero" and a.i == 1 for a in node.attribute):
            continue
        t = consts[node.input[1]]
        shape = numpy_helper.to_array(t)
        if shape.ndim == 1 and len(shape) >= 1 and shape[0] == 1:
            shape = shape.copy()
            shape[0] = 0
            t.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), t.name))
            changed += 1
    return changed


def batchable(path: Path, probe_shape: tuple[int, ...], providers: list[str], options=None) -> tuple[Optional[bytes], str]:
    """``(model bytes, "")`` of ``path`` rewritten to take any batch, checked against the
    original; or ``(None, why)`` when it cannot be (the caller keeps one image a call).

    Args:
        path: the ``.onnx`` file (its batch dimension fixed to 1).
        probe_shape: one input's shape without the batch, e.g. ``(3, 112, 112)``.
        providers, options: onnxruntime providers and SessionOptions of the check.
    """
    import onnx
    import onnxruntime as ort

    try:
        model = onnx.load(str(path), load_external_data=True)
        if len(model.graph.input) != 1:
            return None, "the model has several inputs"
        _rewrite(model)
        data = model.SerializeToString()
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (2, *probe_shape)).astype(np.float32)
        orig = ort.InferenceSession(str(path), options, providers=providers)
        new = ort.InferenceSession(data, options, providers=providers)
        name = orig.get_inputs()[0].name
        one = np.concatenate([np.asarray(orig.run(None, {name: x[i : i + 1]})[0]) for i in range(2)])
        two = np.asarray(new.run(None, {name: x})[0])
    except Exception as e:  # noqa: BLE001 - any failure: keep the original model
        return None, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    if one.shape != two.shape:
        return None, f"a batch of 2 gave shape {two.shape}, one at a time {one.shape}"
    scale = float(np.abs(one).max()) or 1.0
    if not np.allclose(one, two, rtol=1e-4, atol=1e-5 * scale):
        return None, f"a batch of 2 differs from one at a time by {float(np.abs(one - two).max()):.3g}"
    return data, ""
