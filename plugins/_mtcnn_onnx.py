"""MTCNN on onnxruntime, with the weights of the installed ``mtcnn`` wheel and no TensorFlow.

The ``mtcnn`` package (ipazc/mtcnn 1.0.0) ships its P/R/O-Net weights as
``mtcnn/assets/weights/{pnet,rnet,onet}.lz4`` (joblib + lz4; lists of float32 arrays in
Keras ``get_weights`` order). Its modules import TensorFlow, so this module never imports
them: it finds the files through the distribution's metadata
(:func:`importlib.metadata.distribution`), builds the three networks as ONNX graphs (once
per process, cached in memory) and runs them on onnxruntime. The pre- and post-processing
(image pyramid, TensorFlow's ``resize`` AREA and ``crop_and_resize`` bilinear, the package's
NMS variant, box calibration, square boxes, landmark mapping, clipping to the image) mirror
``mtcnn/stages/*.py`` and ``mtcnn/utils/*.py`` of mtcnn 1.0.0 step by step in numpy; the
function names below say which of the package's functions each one follows.

One deliberate difference: the package builds pyramid levels down to ~0.36 *
(12 / min_face_size) * 12 pixels; when a level is under 12 pixels (``min_face_size`` above
about 24), PNet cannot run on it, TensorFlow raises and the package returns no face at all
for the image. Here such levels are skipped (they cannot hold a 12x12 proposal anyway).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

WEIGHT_FILES = {name: f"mtcnn/assets/weights/{name}.lz4" for name in ("pnet", "rnet", "onet")}
OPSET = 13
IR_VERSION = 8  # readable by onnxruntime >= 1.10


class MtcnnWeightsError(RuntimeError):
    """The ``mtcnn`` wheel (and its weight files) is not installed or unreadable."""


# --------------------------------------------------------------------------- weights


def load_weights(name: str) -> list[np.ndarray]:
    """The ``mtcnn`` wheel's weights for ``name`` in ``("pnet", "rnet", "onet")``.

    Returns the list of float32 arrays in Keras ``get_weights`` order (conv kernels
    ``(kh, kw, in, out)``, PReLU alphas ``(1, 1, C)`` or ``(C,)``, dense kernels
    ``(in, out)``). Read with ``joblib`` from the installed distribution's files, without
    importing the ``mtcnn`` package (which imports TensorFlow).
    Raises :class:`MtcnnWeightsError` if the distribution or the file is missing.
    """
    try:
        dist = importlib.metadata.distribution("mtcnn")
    except importlib.metadata.PackageNotFoundError:
        raise MtcnnWeightsError(
            "the mtcnn detector uses the weights of the 'mtcnn' package, which is not installed: pip install mtcnn"
        ) from None
    path = dist.locate_file(WEIGHT_FILES[name])
    if not path.is_file():
        raise MtcnnWeightsError(f"mtcnn weights not found: {path} (reinstall the 'mtcnn' package)")
    import joblib  # a dependency of the mtcnn wheel

    try:
        weights = joblib.load(str(path))
    except Exception as e:  # noqa: BLE001 - a corrupt install: say which file
        raise MtcnnWeightsError(f"cannot read mtcnn weights {path}: {type(e).__name__}: {e}") from None
    return [np.asarray(w, np.float32) for w in weights]


# --------------------------------------------------------------------------- ONNX graphs


class _Graph:
    """A tiny NCHW graph builder over ``onnx.helper`` for Keras layers."""

    def __init__(self, weights):
        import onnx.helper  # noqa: F401 - fail here, not halfway

        self.w = list(weights)
        self.nodes, self.inits, self.n = [], [], 0

    def _name(self, prefix):
        self.n += 1
        return f"{prefix}{self.n}"

    def _const(self, array):
        from onnx import numpy_helper

        name = self._name("w")
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def node(self, op, inputs, **attrs):
        from onnx import helper

        out = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x):
        """Keras Conv2D, padding 'valid', stride 1: kernel (kh, kw, in, out) -> (out, in, kh, kw)."""
        k, b = self.w.pop(0), self.w.pop(0)
        return self.node("Conv", [x, self._const(k.transpose(3, 2, 0, 1)), self._const(b)], kernel_shape=list(k.shape[:2]))

    def prelu(self, x):
        """Keras PReLU: alpha ``(1, 1, C)`` (shared over H, W) -> ``(C, 1, 1)``; ``(C,)`` after Dense.
        (Rewriting it as ``a*x + (1-a)*relu(x)``, faster on onnxruntime, rounds differently
        by ~1e-7, enough to change which PNet proposals survive on some photos.)"""
        a = self.w.pop(0)
        return self.node("PRelu", [x, self._const(a.reshape(-1, 1, 1) if a.ndim == 3 else a)])

    def maxpool(self, x, k, s, same):
        """Keras MaxPooling2D: 'same' is TensorFlow's SAME (extra padding at the end)."""
        return self.node("MaxPool", [x], kernel_shape=[k, k], strides=[s, s], auto_pad="SAME_UPPER" if same else "VALID")

    def face_probability(self, x, dense: bool):
        """The face score of a 2-way softmax layer (conv 1x1 or Dense): ``Softmax`` over the
        two classes, class 1 sliced out. Shape ``(N, 1[, h, w])``. (``sigmoid(z1 - z0)``
        is the same function but rounds differently, which changed one photo's PNet proposals.)"""
        z = self.dense(x) if dense else self.conv(x)
        p = self.node("Softmax", [z], axis=1)
        return self.node("Slice", [p, self._const_i64([1]), self._const_i64([2]), self._const_i64([1])])

    def _const_i64(self, values):
        from onnx import numpy_helper

        name = self._name("i")
        self.inits.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def dense(self, x):
        k, b = self.w.pop(0), self.w.pop(0)
        return self.node("Gemm", [x, self._const(k), self._const(b)])

    def keras_flatten(self, x):
        """Keras ``Permute((2, 1, 3))`` + ``Flatten`` of an NHWC tensor, from NCHW: order (W, H, C)."""
        return self.node("Flatten", [self.node("Transpose", [x], perm=[0, 3, 2, 1])], axis=1)

    def model(self, inputs_shape, outputs):
        from onnx import TensorProto, helper

        assert not self.w, f"{len(self.w)} weight arrays left unused"
        graph = helper.make_graph(
            self.nodes,
            "mtcnn",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, inputs_shape)],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
            self.inits,
        )
        # rename the outputs' producers to the outputs' names
        renames = dict(zip(outputs.values(), outputs))
        for node in graph.node:
            node.output[:] = [renames.get(o, o) for o in node.output]
            node.input[:] = [renames.get(i, i) for i in node.input]
        for vi, name in zip(graph.output, outputs):
            vi.name = name
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facekit")
        m.ir_version = IR_VERSION
        return m


def build_pnet(weights):
    """PNet as ONNX: input ``(1, 3, H, W)`` float32 -> ``reg (1, 4, h, w)``, ``prob (1, 1, h, w)``
    (face probability), ``h = ceil((H - 2) / 2) - 4`` (mtcnn/network/pnet.py)."""
    g = _Graph(weights)
    x = g.maxpool(g.prelu(g.conv("input")), 2, 2, same=True)
    x = g.prelu(g.conv(g.prelu(g.conv(x))))
    reg = g.conv(x)
    prob = g.face_probability(x, dense=False)
    return g.model([1, 3, "h", "w"], {"reg": reg, "prob": prob})


def build_rnet(weights):
    """RNet as ONNX: ``(N, 3, 24, 24)`` -> ``reg (N, 4)``, ``prob (N, 1)`` (mtcnn/network/rnet.py)."""
    g = _Graph(weights)
    x = g.maxpool(g.prelu(g.conv("input")), 3, 2, same=True)
    x = g.maxpool(g.prelu(g.conv(x)), 3, 2, same=False)
    x = g.prelu(g.dense(g.keras_flatten(g.prelu(g.conv(x)))))
    reg = g.dense(x)
    prob = g.face_probability(x, dense=True)
    return g.model(["n", 3, 24, 24], {"reg": reg, "prob": prob})


def build_onet(weights):
    """ONet as ONNX: ``(N, 3, 48, 48)`` -> ``reg (N, 4)``, ``lmk (N, 10)`` (x1..x5, y1..y5 in box
    units), ``prob (N, 1)`` (mtcnn/network/onet.py)."""
    g = _Graph(weights)
    x = g.maxpool(g.prelu(g.conv("input")), 3, 2, same=True)
    x = g.maxpool(g.prelu(g.conv(x)), 3, 2, same=False)
    x = g.maxpool(g.prelu(g.conv(x)), 2, 2, same=True)
    x = g.prelu(g.dense(g.keras_flatten(g.prelu(g.conv(x)))))
    reg = g.dense(x)
    lmk = g.dense(x)
    prob = g.face_probability(x, dense=True)
    return g.model(["n", 3, 48, 48], {"reg": reg, "lmk": lmk, "prob": prob})


@functools.lru_cache(maxsize=None)
def onnx_models() -> dict[str, bytes]:
    """The three serialized ONNX models, built once per process from the wheel's weights."""
    builders = {"pnet": build_pnet, "rnet": build_rnet, "onet": build_onet}
    return {name: build(load_weights(name)).SerializeToString() for name, build in builders.items()}


# --------------------------------------------------------------------------- TensorFlow ops in numpy


def _area_weights(n_in: int, n_out: int):
    """Source indices and weights of TensorFlow's ``resize_area`` (align_corners=False) along
    one axis: ``(n_out, K)`` int, ``(n_out, K)`` float32, and the axis scale ``n_in / n_out``
    (all in float32, as ``resize_area_op.cc``)."""
    scale = np.float32(n_in) / np.float32(n_out)
    o = np.arange(n_out, dtype=np.float32)
    t0, t1 = o * scale, (o + 1) * scale
    start = np.floor(t0).astype(np.int64)
    end = np.ceil(t1).astype(np.int64)
    k = int((end - start).max())
    i = start[:, None] + np.arange(k)[None, :]
    i_f = i.astype(np.float32)
    t0, t1 = t0[:, None], t1[:, None]
    w = np.where(
        i_f < t0,
        np.where(i_f + 1 > t1, scale, i_f + 1 - t0),
        np.where(i_f + 1 > t1, t1 - i_f, np.float32(1)),
    ).astype(np.float32)
    w[i >= end[:, None]] = 0
    return np.clip(i, 0, n_in - 1), w, scale


def _weighted_rows(src: np.ndarray, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``out[o] = src[index[o, 0]] * weights[o, 0] + src[index[o, 1]] * weights[o, 1] + ...``,
    summed in that order (k = 0, 1, ...), one multiply and one add per term in float32: the
    order and rounding of TensorFlow's per-cell loops. src ``(N, ...)``; whole rows are
    gathered (contiguous copies), the products made in place."""
    out = src[index[:, 0]]
    out *= weights[:, 0, None, None]
    for k in range(1, index.shape[1]):
        term = src[index[:, k]]
        term *= weights[:, k, None, None]
        out += term
    return out


def transpose_hw(image: np.ndarray) -> np.ndarray:
    """``image.transpose(1, 0, 2)`` as a new contiguous array (``cv2.transpose``: a blocked
    copy, 2x faster than numpy's for 3-channel pixels; the values are copied unchanged)."""
    import cv2

    image = np.ascontiguousarray(image)
    if image.ndim == 3 and image.shape[2] <= 4:
        out = cv2.transpose(image)
        return out if out.ndim == 3 else out[:, :, None]
    return np.ascontiguousarray(image.transpose(1, 0, 2))


def resize_area(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``tf.image.resize(image, (out_h, out_w), method=AREA)`` for one ``(H, W, C)`` image,
    bit for bit: each output pixel is the area-weighted mean of the input pixels its cell
    covers, with TensorFlow's float32 cell bounds and summation order (along x, then y).
    Returns ``(out_h, out_w, C)`` float32."""
    chw = resize_area_chw(transpose_hw(np.asarray(image, np.float32)), out_h, out_w)
    return np.ascontiguousarray(chw.transpose(1, 2, 0))


def resize_area_chw(transposed: np.ndarray, out_h: int, out_w: int, map_parts=map, parts: int = 1) -> np.ndarray:
    """:func:`resize_area` of the image whose transpose ``(W, H, C)`` float32 contiguous is
    given (a pyramid resizes one image many times: it is transposed once), returned planar:
    ``(C, out_h, out_w)`` float32 (the networks' layout).

    The output columns are cut into ``parts`` bands computed independently (each output
    pixel by the same operations in the same order whatever the cut), through ``map_parts``
    (``map``, or a thread pool's: numpy releases the GIL in these loops)."""
    w, h, c = transposed.shape
    ix, wx, sx = _area_weights(w, out_w)
    iy, wy, sy = _area_weights(h, out_h)
    scale = np.float32(1.0) / (sy * sx)
    out = np.empty((c, out_h, out_w), np.float32)

    def band(bounds):
        a, b = bounds
        # gathering whole rows of the (W, H, C) image is ~3x faster than gathering columns
        cols = _weighted_rows(transposed, ix[a:b], wx[a:b])  # (b - a, H, C): the sums along x
        rows = _weighted_rows(transpose_hw(cols), iy, wy)  # (out_h, b - a, C): then along y
        rows *= scale
        out[:, :, a:b] = rows.transpose(2, 0, 1)

    cuts = np.linspace(0, out_w, max(1, min(parts, out_w)) + 1).astype(int)
    for _ in map_parts(band, list(zip(cuts[:-1], cuts[1:]))):
        pass
    return out


def crop_and_resize(
    image: np.ndarray | None, boxes: np.ndarray, size: int, transposed: np.ndarray | None = None
) -> np.ndarray:
    """``tf.image.crop_and_resize(image[None], boxes, zeros, (size, size))`` (bilinear,
    extrapolation value 0) for one ``(H, W, C)`` image.

    boxes: ``(N, 4)`` normalised ``y1, x1, y2, x2`` (pixel / image size); sampled at
    ``y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (size - 1)``. transposed: the image as
    ``(W, H, C)`` float32 instead (then ``image`` is not read: None). Returns
    ``(N, size, size, C)`` float32; samples outside the image are 0.
    """
    if transposed is None:
        transposed = np.asarray(image).astype(np.float32, copy=False).transpose(1, 0, 2)  # a view
    w, h, c = transposed.shape
    n = len(boxes)
    b = boxes.astype(np.float32)
    steps = np.arange(size, dtype=np.float32)
    ys = b[:, 0:1] * np.float32(h - 1) + steps * ((b[:, 2:3] - b[:, 0:1]) * np.float32(h - 1) / np.float32(size - 1))
    xs = b[:, 1:2] * np.float32(w - 1) + steps * ((b[:, 3:4] - b[:, 1:2]) * np.float32(w - 1) / np.float32(size - 1))
    y_ok = (ys >= 0) & (ys <= h - 1)
    x_ok = (xs >= 0) & (xs <= w - 1)
    ys_c, xs_c = np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)
    top, left = np.floor(ys_c).astype(np.intp), np.floor(xs_c).astype(np.intp)
    bottom, right = np.ceil(ys_c).astype(np.intp), np.ceil(xs_c).astype(np.intp)
    ly = (ys_c - top).astype(np.float32)[:, :, None, None]
    lx = (xs_c - left).astype(np.float32)[:, None, :, None]
    t, bm = top[:, :, None], bottom[:, :, None]
    l, r = left[:, None, :], right[:, None, :]
    # pixel (y, x) is transposed[x, y]
    tl, tr, bl, br = transposed[l, t], transposed[r, t], transposed[l, bm], transposed[r, bm]
    topv = tl + (tr - tl) * lx
    botv = bl + (br - bl) * lx
    out = topv + (botv - topv) * ly
    out *= (y_ok[:, :, None] & x_ok[:, None, :])[..., None]
    return out.reshape(n, size, size, c)


# --------------------------------------------------------------------------- box utilities (mtcnn/utils/bboxes.py)


def build_scale_pyramid(width: int, height: int, min_face_size: float, scale_factor: float, min_size: int = 12):
    """Pyramid scales, as ``mtcnn.utils.images.build_scale_pyramid``."""
    min_dim = min(width, height)
    scales_count = round(-((np.log(min_dim / min_size) / np.log(scale_factor)) + 1))
    m = min_size / min_face_size
    return m * scale_factor ** np.arange(scales_count)


def sort_desc(rows: np.ndarray, column: int) -> np.ndarray:
    """``sort_by_scores(..., ascending=False)``: ``argsort`` (numpy's default) reversed."""
    return rows[np.argsort(rows[:, column])[::-1]]


def nms_keep(boxes: np.ndarray, threshold: float, method: str) -> np.ndarray:
    """The package's NMS (``iou`` + ``nms``): box ``j`` is dropped when any earlier box
    (suppressed or not) overlaps it by more than ``threshold``; overlap = intersection over
    union (``"union"``) or over the smaller area (``"min"``), areas ``(x2-x1)*(y2-y1)``.
    Returns the kept indices, ascending. Computed in blocks (memory ``O(N * 1024)``)."""
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.intp)
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(n, bool)
    block = 1024
    with np.errstate(divide="ignore", invalid="ignore"):
        for s in range(0, n, block):
            e = min(n, s + block)
            iw = np.maximum(0, np.minimum(x2[s:e, None], x2[None, :]) - np.maximum(x1[s:e, None], x1[None, :]))
            ih = np.maximum(0, np.minimum(y2[s:e, None], y2[None, :]) - np.maximum(y1[s:e, None], y1[None, :]))
            inter = iw * ih
            if method == "union":
                ov = inter / (area[s:e, None] + area[None, :] - inter)
            else:
                ov = inter / np.minimum(area[s:e, None], area[None, :])
            # only pairs (i, j) with i < j count: rows are i in [s, e), columns j
            fail = ov > threshold
            fail &= np.arange(s, e)[:, None] < np.arange(n)[None, :]
            suppressed |= fail.any(axis=0)
    return np.flatnonzero(~suppressed)


def nms(rows: np.ndarray, threshold: float, method: str = "union", initial_sort: bool = True) -> np.ndarray:
    """``smart_nms_from_bboxes`` for one image: rows ``[image_id, x1, y1, x2, y2, score, ...]``."""
    if initial_sort:
        rows = sort_desc(rows, 5)
    return rows[nms_keep(rows[:, 1:5], threshold, method)]


def resize_to_square(rows: np.ndarray) -> np.ndarray:
    """Square boxes around the same centre, side = the longer side (``resize_to_square``)."""
    rows = rows.copy()
    h = rows[:, 4] - rows[:, 2]
    w = rows[:, 3] - rows[:, 1]
    side = np.maximum(w, h)
    rows[:, 1] = rows[:, 1] + w * 0.5 - side * 0.5
    rows[:, 2] = rows[:, 2] + h * 0.5 - side * 0.5
    rows[:, 3:5] = rows[:, 1:3] + np.tile(side, (2, 1)).T
    return rows


def adjust_bboxes(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Box calibration: ``x1 += dx1 * (x2 - x1 + 1)`` ... (``adjust_bboxes``)."""
    rows = rows.copy()
    w = rows[:, 3] - rows[:, 1] + 1
    h = rows[:, 4] - rows[:, 2] + 1
    rows[:, 1:5] += offsets * np.stack([w, h, w, h], axis=-1)
    return rows


def adjust_landmarks(lmk: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """ONet's box-relative landmarks to image pixels (``adjust_landmarks``): ``x = w * lx + x1 - 1``."""
    lmk = lmk.astype(np.float32).copy()
    w = rows[:, 3:4] - rows[:, 1:2] + 1
    h = rows[:, 4:5] - rows[:, 2:3] + 1
    lmk[:, 0:5] = w * lmk[:, 0:5] + rows[:, 1:2] - 1
    lmk[:, 5:10] = h * lmk[:, 5:10] + rows[:, 2:3] - 1
    return lmk


# --------------------------------------------------------------------------- detector


def normalized_transposed(image: np.ndarray, bgr: bool = False) -> np.ndarray:
    """The package's ``normalize_images`` (``(x - 127.5) / 128``) of an ``(H, W, 3)`` RGB
    (or BGR, ``bgr=True``) image, returned RGB, transposed: ``(W, H, 3)`` float32
    contiguous. Exact in float32 for 0..255 integers, as the package's float64."""
    image = np.asarray(image)
    if bgr:
        image = image[:, :, ::-1]
    if image.dtype != np.uint8:
        image = image.astype(np.float32)
    out = np.subtract(transpose_hw(image), np.float32(127.5), dtype=np.float32)
    out /= np.float32(128)
    return out


@dataclass
class MtcnnSettings:
    """The package's ``detect_faces`` keyword defaults (StagePNet/RNet/ONet.__call__)."""

    min_face_size: float = 20
    scale_factor: float = 0.709
    threshold_pnet: float = 0.6
    threshold_rnet: float = 0.7
    threshold_onet: float = 0.8
    nms_pnet1: float = 0.5
    nms_pnet2: float = 0.7
    nms_rnet: float = 0.7
    nms_onet: float = 0.7


class MtcnnOnnx:
    """The three MTCNN networks on onnxruntime (CPU).

    Args:
        threads: onnxruntime intra-op threads per session (0: onnxruntime's default);
            inter-op threads are 1; idle threads do not spin.
    Raises:
        MtcnnWeightsError: the ``mtcnn`` wheel is not installed.
    """

    def __init__(self, threads: int = 0):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.inter_op_num_threads = 1
        if threads:
            so.intra_op_num_threads = threads
        so.log_severity_level = 3
        # no spin-waiting: between two (small) PNet runs the detector works in numpy on the
        # calling thread, which a spinning worker would compete with for the cores (on a
        # loaded 2-core machine that made the whole detector 2-3x slower)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        models = onnx_models()
        self.sessions = {
            name: ort.InferenceSession(models[name], so, providers=["CPUExecutionProvider"]) for name in models
        }
        # the pyramid's resizes run between the networks' runs, on the same thread budget
        self.resize_threads = threads or os.cpu_count() or 1
        self._pool, self._pool_pid = None, None

    def _resize(self, img, out_h, out_w):
        """One pyramid level, ``(3, out_h, out_w)``; cut in bands over the thread budget when
        it is large enough to pay for the threads' hand-over."""
        parts = self.resize_threads if out_w * img.shape[1] >= 100_000 else 1
        if parts == 1:
            return resize_area_chw(img, out_h, out_w)
        if self._pool_pid != os.getpid():  # made on first use, and again in a forked child
            self._pool, self._pool_pid = ThreadPoolExecutor(self.resize_threads, "mtcnn-resize"), os.getpid()
        return resize_area_chw(img, out_h, out_w, self._pool.map, parts)

    def _run(self, name, x):
        return self.sessions[name].run(None, {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32)})

    def detect_faces(self, rgb: np.ndarray, settings: MtcnnSettings = MtcnnSettings(), bgr: bool = False) -> np.ndarray:
        """Faces in one image, as ``MTCNN().detect_faces(rgb, box_format="xyxy",
        output_type="numpy", ...)`` of mtcnn 1.0.0 (defaults: ``fit_to_image=True``,
        ``limit_boundaries_landmarks=False``).

        Args:
            rgb: ``(H, W, 3)`` uint8 (or float 0..255) **RGB**, or **BGR** with ``bgr=True``
                (the channels are swapped here, in the same pass as the normalisation).
        Returns:
            ``(N, 16)`` float64 rows ``[0, x1, y1, x2, y2, score, lx1..lx5, ly1..ly5]``: boxes in
            pixels clipped to ``[0, W-1] x [0, H-1]``, landmarks in the order left eye, right
            eye, nose, mouth left, mouth right (not clipped), sorted by score (descending).
        """
        s = settings
        height, width = rgb.shape[:2]
        img = normalized_transposed(rgb, bgr)  # (W, H, 3): every stage reads this layout
        rows = self._stage_pnet(img, s)
        if len(rows):
            rows = self._stage_rnet(img, rows, s)
        if len(rows):
            rows = self._stage_onet(img, rows, s)
        if not len(rows):
            return np.empty((0, 16))
        # limit_bboxes(..., limit_landmarks=False)
        rows[:, [1, 3]] = np.clip(rows[:, [1, 3]], 0, width - 1)
        rows[:, [2, 4]] = np.clip(rows[:, [2, 4]], 0, height - 1)
        return rows

    def _stage_pnet(self, img, s):
        w, h = img.shape[:2]
        per_scale = []
        for scale in build_scale_pyramid(w, h, s.min_face_size, s.scale_factor):
            sh, sw = (np.asarray([h, w]) * scale).astype(np.int64)  # tf.image.resize truncates
            if min(sh, sw) < 12:
                continue  # see the module docstring
            scaled = self._resize(img, int(sh), int(sw))
            reg, prob = self.sessions["pnet"].run(None, {"input": scaled[None]})
            conf = prob[0, 0]
            yy, xx = np.nonzero(conf > s.threshold_pnet)
            r = reg[0][:, yy, xx].astype(np.float64)  # (4, n); float64 as the package's
            # generate_bounding_box: cells of 12 pixels at stride 2
            x0, y0 = xx * 2 + 1, yy * 2 + 1
            x1e, y1e = xx * 2 + 12, yy * 2 + 12
            rows = np.stack(
                [np.zeros(len(yy)), x0 + r[0] * 11, y0 + r[1] * 11, x1e + r[2] * 11, y1e + r[3] * 11, conf[yy, xx]],
                axis=0,
            ).T
            rows = sort_desc(rows, 5)
            rows[:, 1:5] = rows[:, 1:5] / scale  # upscale_bboxes
            per_scale.append(nms(rows, s.nms_pnet1, "union", initial_sort=False))
        rows = np.concatenate(per_scale, axis=0) if per_scale else np.empty((0, 6))
        if len(rows):
            rows = nms(rows, s.nms_pnet2, "union", initial_sort=True)
        return resize_to_square(rows)

    def _patches(self, img, rows, size):
        w, h = img.shape[:2]
        coords = rows[:, [2, 1, 4, 3]] / np.asarray([[h, w, h, w]])
        return crop_and_resize(None, coords, size, img)

    def _stage_rnet(self, img, rows, s):
        reg, prob = self._run("rnet", self._patches(img, rows, 24))
        rows = rows.copy()
        rows[:, -1] = prob[:, -1]
        rows = adjust_bboxes(rows, reg)
        rows = rows[rows[:, -1] > s.threshold_rnet]
        if len(rows):
            rows = nms(rows, s.nms_rnet, "union", initial_sort=True)
        return resize_to_square(rows)

    def _stage_onet(self, img, rows, s):
        reg, lmk, prob = self._run("onet", self._patches(img, rows, 48))
        lmk = adjust_landmarks(lmk, rows)
        rows = rows.copy()
        rows[:, -1] = prob[:, -1]
        rows = np.concatenate([adjust_bboxes(rows, reg), lmk], axis=-1)
        rows = rows[rows[:, 5] > s.threshold_onet]
        if len(rows):
            rows = nms(rows, s.nms_onet, "min", initial_sort=True)
        return rows
