"""Shared pieces of the ONNX face detectors (SCRFD, RetinaFace exports): onnxruntime
sessions (threads, providers, fixed input size), top-left letterbox, greedy NMS, and the
validate-time check that a model's inputs/outputs fit a detector.

Everything here matches insightface's ``model_zoo.scrfd`` bit for bit where it overlaps
(letterbox, NMS), so facekit's SCRFD decoding gives identical boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import cv2
import numpy as np

from pydantic import Field, field_validator

from facekit.params import Params
from facekit.vision.detection import DetectorParams

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def check_providers(providers: Sequence[str]) -> list[str]:
    """Return ``providers`` as a list if onnxruntime has them all.

    Raises:
        ValueError: an empty list, or a provider this onnxruntime build lacks (the message
            names the installed ones).
    """
    import onnxruntime as ort

    providers = list(providers)
    if not providers:
        raise ValueError("providers: give at least one onnxruntime execution provider")
    installed = ort.get_available_providers()
    missing = [p for p in providers if p not in installed]
    if missing:
        raise ValueError(
            f"onnxruntime execution provider {', '.join(missing)} is not available; installed: {', '.join(installed)}"
        )
    return providers


def _load_error(path: Path, e: Exception) -> ValueError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return ValueError(f"{path} is not an ONNX model onnxruntime can load: {first[:200]}")


def session_options(threads: int = 0):
    """onnxruntime ``SessionOptions``: ``threads`` intra-op threads (0 = onnxruntime's
    default), one inter-op thread, sequential execution, and idle threads that sleep
    instead of spinning (spinning threads take the CPU from the decoding, alignment and
    other workers between two inferences: measured on MTCNN, 2.4x the CPU time)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


def make_session(
    path: Path, threads: int = 0, providers: Sequence[str] = DEFAULT_PROVIDERS, input_hw: Optional[tuple] = None
):
    """An onnxruntime ``InferenceSession`` for ``path``.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (0 = onnxruntime default); inter-op threads are 1.
        providers: execution providers, checked with :func:`check_providers`.
        input_hw: ``(height, width)``: where the model's input height/width are dynamic, fix
            them to this size in the graph first (as insightface 2.x does for SCRFD: with the
            shapes known, onnxruntime picks kernels whose float results differ in the last bit
            from the dynamic graph's).
    Raises:
        ValueError: the file does not load, or a provider is missing.
    """
    import onnxruntime as ort

    providers = check_providers(providers)
    source = str(path)
    if input_hw is not None:
        import onnx

        try:
            model = onnx.load_model(str(path), load_external_data=False)
        except Exception as e:  # noqa: BLE001 - protobuf raises several kinds
            raise _load_error(path, e) from None
        dims = model.graph.input[0].type.tensor_type.shape.dim
        if len(dims) == 4 and not (dims[2].dim_value > 0 and dims[3].dim_value > 0):
            if any(init.HasField("data_location") and init.data_location == 1 for init in model.graph.initializer):
                onnx.load_external_data_for_model(model, str(Path(path).parent))
            for d, v in zip((dims[2], dims[3]), input_hw):
                d.ClearField("dim_param")
                d.dim_value = int(v)
            source = model.SerializeToString()
    try:
        return ort.InferenceSession(source, session_options(threads), providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise _load_error(path, e) from None


def input_size_of(session) -> Optional[tuple[int, int]]:
    """``(height, width)`` fixed by the model's first input, or ``None`` if dynamic."""
    shape = session.get_inputs()[0].shape
    if len(shape) == 4 and all(isinstance(v, int) and v > 0 for v in shape[2:]):
        return int(shape[2]), int(shape[3])
    return None


def _fit(shape: tuple, size: tuple[int, int]) -> tuple[int, int, float]:
    """``(new_w, new_h, scale)`` of an image of ``shape`` ``(H, W, ...)`` resized to fit
    ``size`` = ``(width, height)`` keeping its aspect ratio (insightface ``SCRFD.detect``)."""
    w_in, h_in = size
    im_ratio = float(shape[0]) / shape[1]
    if im_ratio > float(h_in) / w_in:
        new_h = h_in
        new_w = int(new_h / im_ratio)
    else:
        new_w = w_in
        new_h = int(new_w * im_ratio)
    return new_w, new_h, float(new_h) / shape[0]


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize ``image`` keeping its aspect ratio to fit ``size`` = ``(width, height)`` and
    paste it at the top-left of a black canvas (insightface ``SCRFD.detect``).

    Args:
        image: ``(H, W, 3)`` uint8, any colour order (kept).
    Returns:
        ``(canvas, scale)``: ``canvas`` ``(height, width, 3)`` uint8; a point ``p`` of the
        canvas is ``p / scale`` in ``image``.
    """
    w_in, h_in = size
    new_w, new_h, scale = _fit(image.shape, size)
    canvas = np.zeros((h_in, w_in, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    return canvas, scale


def letterbox_blob(image: np.ndarray, size: tuple[int, int], mean: float = 127.5, std: float = 128.0) -> tuple[np.ndarray, float]:
    """:func:`letterbox` and ``cv2.dnn.blobFromImage(canvas, 1 / std, size, (mean,) * 3,
    swapRB=True)`` in one step, without the canvas: the resized image is converted plane by
    plane straight into the network input, the black margin is the constant ``-mean / std``.

    The values are bit-identical to ``blobFromImage`` on the letterboxed canvas for the
    mean and std insightface's SCRFD uses (127.5, 128: ``(x - mean) / std`` is exact in
    float32 either way); a quarter of the time on 640x640 inputs.

    Args:
        image: ``(H, W, 3)`` uint8 BGR.
        size: ``(width, height)`` of the network input.
    Returns:
        ``(blob, scale)``: ``blob`` ``(1, 3, height, width)`` float32, RGB planes; a point
        ``p`` of the input is ``p / scale`` in ``image``.
    """
    w_in, h_in = size
    new_w, new_h, scale = _fit(image.shape, size)
    alpha, gamma = 1.0 / std, -mean / std
    blob = np.empty((1, 3, h_in, w_in), np.float32)
    blob[0, :, new_h:] = gamma  # the margins only: the image part is written once, below
    blob[0, :, :new_h, new_w:] = gamma
    planes = cv2.split(cv2.resize(image, (new_w, new_h)))
    for c in range(3):  # RGB planes from BGR, converted straight into the blob (a strided view)
        p = planes[2 - c]
        cv2.addWeighted(p, alpha, p, 0.0, gamma, dst=blob[0, c, :new_h, :new_w], dtype=cv2.CV_32F)
    return blob, scale


def nms(dets: np.ndarray, thresh: float) -> list[int]:
    """Greedy NMS of insightface ``SCRFD.nms`` (boxes in pixels, ``+1`` areas).

    Args:
        dets: ``(N, 5)`` float32 ``x1, y1, x2, y2, score``.
        thresh: IoU above which the lower-scored box is dropped.
    Returns:
        indices of kept rows, highest score first (ties: lower index first).
    """
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        order = rest[np.nonzero(ovr <= thresh)[0]]
    return keep


# --------------------------------------------------------------------------- model check


@dataclass(frozen=True)
class ModelSignature:
    """What a probe run of a model gave: its input and output shapes.

    input_hw: ``(height, width)`` fixed by the model, or ``None`` (dynamic).
    outputs: ``(name, shape)`` per output, shapes from a run on a zero image of
    ``probe_hw``.
    """

    input_hw: Optional[tuple[int, int]]
    probe_hw: tuple[int, int]
    outputs: tuple[tuple[str, tuple[int, ...]], ...]

    def describe(self) -> str:
        """Outputs in words, e.g. ``one 128-d output`` or ``3 outputs [1, 512, 4], ...``."""
        if len(self.outputs) == 1:
            shape = self.outputs[0][1]
            if len(shape) == 2 and shape[0] == 1:
                return f"one {shape[1]}-d output"
            return f"one output of shape {list(shape)}"
        shapes = ", ".join(f"{name} {list(shape)}" for name, shape in self.outputs[:4])
        more = ", ..." if len(self.outputs) > 4 else ""
        return f"{len(self.outputs)} outputs ({shapes}{more})"


def probe(path: Path, probe_side: int = 128) -> ModelSignature:
    """Load ``path`` on the CPU and run it once on a zero image (``probe_side`` square, or
    the model's own fixed size) to learn its output shapes.

    Raises:
        ValueError: not an ONNX model onnxruntime loads, not one image input ``(N, 3, H, W)``,
            or the probe run fails.
    """
    sess = make_session(path)
    inputs = sess.get_inputs()
    shape = inputs[0].shape if inputs else []
    if len(inputs) != 1 or len(shape) != 4:
        desc = ", ".join(f"{i.name} {i.shape}" for i in inputs) or "none"
        raise ValueError(f"{path}: a face detector takes one (N, 3, H, W) image input; this model has inputs {desc}")
    if isinstance(shape[1], int) and shape[1] != 3:
        raise ValueError(f"{path}: a face detector takes a 3-channel image; this model's input is {shape}")
    fixed = input_size_of(sess)
    hw = fixed or (probe_side, probe_side)
    if "float" not in inputs[0].type:
        raise ValueError(f"{path}: input {inputs[0].name} is {inputs[0].type}, not a float image")
    try:
        outs = sess.run(None, {inputs[0].name: np.zeros((1, 3, *hw), np.float32)})
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path}: a test run on a {hw[1]}x{hw[0]} image failed: {first[:200]}") from None
    names = [o.name for o in sess.get_outputs()]
    return ModelSignature(fixed, hw, tuple((n, tuple(np.shape(o))) for n, o in zip(names, outs)))


class OnnxSessionParams(Params):
    """Parameters of a stage that runs an onnxruntime session (detectors, recognizers):
    threads and execution providers (checked against the installed onnxruntime when
    validated)."""

    threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="onnxruntime intra-op threads (0: the executor's per-worker budget, else onnxruntime's default); inter-op 1",
    )
    providers: list[str] = Field(
        list(DEFAULT_PROVIDERS), description="onnxruntime execution providers, in order of preference"
    )

    @field_validator("providers")
    @classmethod
    def _providers(cls, v):
        return check_providers(v)


class OnnxInputParams(Params):
    """How an aligned-face ONNX model (a recognizer, a quality model) wants its input, each
    read from the model when not given (:class:`facekit.eval.recognition.OnnxEmbedder`)."""

    input_size: Optional[int] = Field(None, ge=16, le=1024, description="model input side; default from the model")
    mean: Optional[float] = Field(None, description="normalisation (x - mean) / std; default from the model")
    std: Optional[float] = Field(None, gt=0, description="see mean")
    color: Optional[Literal["RGB", "BGR"]] = Field(None, description="colour order of the model; default from the model")


class OnnxDetectorParams(OnnxSessionParams, DetectorParams):
    """Parameters every ONNX detector plugin shares: input side, onnxruntime threads and
    execution providers."""

    input_size: int = Field(
        640,
        ge=32,
        description="square detector input side (pixels; the image is letterboxed at the top-left; a model with a fixed input size uses its own)",
    )


class OnnxDetectorModel:
    """An ONNX detector on onnxruntime whose image is letterboxed at the top-left of
    ``input_size`` (``(width, height)``; a model that fixes its input size uses its own).

    Args:
        path: the ``.onnx`` file.
        input_size: ``(width, height)`` of the letterboxed network input.
        threshold: score threshold (kept: ``score >= threshold``); None: the class's
            ``THRESHOLD``.
        nms_thresh: NMS IoU threshold; None: the class's ``NMS``.
        threads, providers: see :func:`make_session`.
    Attributes: ``session``, ``input_size``, ``input_name``, ``output_names``,
    ``threshold``, ``nms_thresh``. A subclass sets ``THRESHOLD``/``NMS``, may set
    ``FIX_INPUT`` (fix a dynamic input size in the graph, see :func:`make_session`) and
    builds its decoding tables in :meth:`_prepare`.
    Raises:
        ValueError: the model does not load, a provider is missing, or (``_prepare``) the
            outputs do not fit the decoder.
    """

    THRESHOLD = 0.5
    NMS = 0.4
    FIX_INPUT = False

    def __init__(
        self,
        path: Path,
        input_size: tuple[int, int] = (640, 640),
        threshold: Optional[float] = None,
        nms_thresh: Optional[float] = None,
        threads: int = 0,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
    ):
        hw = (input_size[1], input_size[0]) if self.FIX_INPUT else None
        self.session = make_session(path, threads, providers, input_hw=hw)
        fixed = input_size_of(self.session)
        self.input_size = (fixed[1], fixed[0]) if fixed else tuple(input_size)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.threshold = float(self.THRESHOLD if threshold is None else threshold)
        self.nms_thresh = float(self.NMS if nms_thresh is None else nms_thresh)
        self._prepare(Path(path))

    def _prepare(self, path: Path) -> None:
        """Build what decoding needs once the session exists (anchors, priors)."""
