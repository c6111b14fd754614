"""Face-recognition models on onnxruntime: encoded images -> embeddings.

Preprocessing follows insightface (``eval/verification.py`` ``load_bin`` + ``test``, and
``python-package/insightface/model_zoo/arcface_onnx.py``): decode, resize when the image
size differs from the model input, colour order (RGB for insightface models), ``(x - mean)
/ std`` per channel value, NCHW float32. Settings not given are read from the model:

- input size and layout from the model's input shape (``N x 3 x H x W`` or ``N x H x W x 3``);
- ``mean``/``std``/``color`` from the model's metadata (keys ``input_mean``, ``input_std``,
  ``color`` = ``RGB``/``BGR``) when present; otherwise insightface's rule: a ``Sub`` and a
  ``Mul`` node among the first 8 graph nodes mean the model normalises itself (mean 0, std
  1), else mean 127.5, std 127.5 (arcface_torch's ``(x/255 - 0.5)/0.5``); colour RGB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import cv2
import numpy as np

from facekit.errors import FacekitError, SampleRejected
from facekit.vision.images import decode_image
from facekit.vision.onnxdet import DEFAULT_PROVIDERS, check_providers, session_options


class ModelError(FacekitError):
    """A recognition model cannot be loaded or has an unsupported input/output."""


@dataclass
class Preprocess:
    """How images become model input. ``size`` = (width, height) in pixels; ``mean``/``std``
    applied to 0..255 channel values; ``color`` ``RGB`` or ``BGR``; ``layout`` ``NCHW`` or
    ``NHWC``; ``source``: where each setting came from."""

    size: tuple[int, int]
    mean: float
    std: float
    color: str
    layout: str
    source: dict


def _graph_normalises_itself(model_path: Path) -> Optional[bool]:
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx comes with insightface
        return None
    graph = onnx.load(str(model_path), load_external_data=False).graph
    names = [n.name for n in graph.node[:8]]
    sub = any(n.startswith("Sub") or n.startswith("_minus") for n in names)
    mul = any(n.startswith("Mul") or n.startswith("_mul") for n in names)
    return sub and mul


class OnnxEmbedder:
    """An ONNX face-recognition model on onnxruntime.

    Args:
        model: the ``.onnx`` file.
        input_size: model input side (square) or (width, height); default from the model.
        mean, std: normalisation ``(x - mean) / std`` of 0..255 values; default from the model.
        color: ``RGB`` or ``BGR`` channel order the model expects; default from the model.
        providers: onnxruntime execution providers in order of preference (default
            ``["CPUExecutionProvider"]``), checked with
            :func:`facekit.vision.onnxdet.check_providers`; ``self.providers`` are those the
            session uses.
        threads: intra-op threads (0: onnxruntime's default; one inter-op thread,
            :func:`facekit.vision.onnxdet.session_options`).
        rebatch: a model exported with a fixed batch of 1 is rewritten to take any batch
            (:func:`facekit.vision.onnxbatch.batchable`, checked against the original), so
            :meth:`run` embeds a batch in one call; ``self.rebatched`` says whether it was,
            ``self.rebatch_note`` why not.
    Raises:
        ValueError: an empty ``providers`` or one this onnxruntime lacks (one line naming
            the installed ones), before the model is read.
        ModelError: unreadable model, input that is not one image tensor with 3 channels,
            or an input size that neither the model nor the arguments give.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        input_size: int | tuple[int, int] | None = None,
        mean: float | None = None,
        std: float | None = None,
        color: str | None = None,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        rebatch: bool = False,
    ):
        import onnxruntime as ort

        self.path = Path(model)
        providers = check_providers(DEFAULT_PROVIDERS if providers is None else providers)
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads), providers=providers)
        except Exception as e:
            raise ModelError(f"{self.path}: cannot load ONNX model: {e}") from None
        self.providers = list(self.session.get_providers())
        self.threads = int(threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelError(f"{self.path}: expected one 4-d image input, found {[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        src: dict = {}
        if shape[1] == 3:
            layout, h, w = "NCHW", shape[2], shape[3]
        elif shape[3] == 3:
            layout, h, w = "NHWC", shape[1], shape[2]
        else:
            raise ModelError(f"{self.path}: input {shape} has no 3-channel axis")
        if input_size is not None:
            w, h = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
            src["size"] = "given"
        elif isinstance(w, int) and isinstance(h, int):
            src["size"] = "model input shape"
        else:
            raise ModelError(f"{self.path}: input {shape} has no fixed size: give input_size")
        self.batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.rebatched, self.rebatch_note = False, ""
        if rebatch and self.batch == 1 and isinstance(w, int) and isinstance(h, int):
            from facekit.vision.onnxbatch import batchable

            probe = (3, int(h), int(w)) if layout == "NCHW" else (int(h), int(w), 3)
            data, self.rebatch_note = batchable(self.path, probe, self.providers, session_options(threads))
            if data is not None:
                self.session = ort.InferenceSession(data, session_options(threads), providers=self.providers)
                self.batch, self.rebatched = None, True
        meta = self.session.get_modelmeta().custom_metadata_map or {}
        self_norm = None
        if mean is None or std is None:
            self_norm = _graph_normalises_itself(self.path) if "input_mean" not in meta else None

        def pick(name, given, meta_key, default):
            if given is not None:
                src[name] = "given"
                return given
            if meta_key in meta:
                src[name] = "model metadata"
                return meta[meta_key]
            src[name] = (
                "insightface rule: the graph normalises itself"
                if self_norm and name != "color"
                else "insightface default"
            )
            return default

        dm, ds = (0.0, 1.0) if self_norm else (127.5, 127.5)
        self.pre = Preprocess(
            size=(int(w), int(h)),
            mean=float(pick("mean", mean, "input_mean", dm)),
            std=float(pick("std", std, "input_std", ds)),
            color=str(pick("color", color, "color", "RGB")).upper(),
            layout=layout,
            source=src,
        )
        if self.pre.color not in ("RGB", "BGR"):
            raise ModelError(f"{self.path}: colour order {self.pre.color!r} is not RGB or BGR")
        if self.pre.std == 0:
            raise ModelError(f"{self.path}: std 0")

    # ------------------------------------------------------------------ images

    def prepare(self, image_bgr: np.ndarray) -> np.ndarray:
        """One decoded image ``(H, W, 3)`` uint8 BGR -> ``(h, w, 3)`` uint8 in the model's
        colour order and size. A differently sized image is resized as insightface's
        ``load_bin`` (shorter side to the input size, bicubic), then centre-cropped."""
        w, h = self.pre.size
        ih, iw = image_bgr.shape[:2]
        if (iw, ih) != (w, h):
            s = max(w / iw, h / ih)
            nw, nh = max(w, round(iw * s)), max(h, round(ih * s))
            image_bgr = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_CUBIC)
            x0, y0 = (nw - w) // 2, (nh - h) // 2
            image_bgr = image_bgr[y0 : y0 + h, x0 : x0 + w]
        return image_bgr[:, :, ::-1] if self.pre.color == "RGB" else image_bgr

    def to_tensor(self, images: np.ndarray) -> np.ndarray:
        """``(N, h, w, 3)`` uint8 in model colour order -> normalised float32 model input."""
        x = (images.astype(np.float32) - np.float32(self.pre.mean)) / np.float32(self.pre.std)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.pre.layout == "NCHW" else x)

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Forward pass on a prepared batch; returns ``(N, D)`` float32 raw embeddings. Runs
        in chunks of the model's fixed batch size when it has one."""
        step = self.batch or len(tensor)
        outs = []
        for i in range(0, len(tensor), step):
            chunk = tensor[i : i + step]
            if self.batch and len(chunk) < self.batch:  # fixed batch: pad the last chunk
                pad = np.zeros((self.batch - len(chunk),) + chunk.shape[1:], chunk.dtype)
                out = self.session.run(None, {self.input_name: np.concatenate([chunk, pad])})[0][: len(chunk)]
            else:
                out = self.session.run(None, {self.input_name: chunk})[0]
            outs.append(np.asarray(out, np.float32).reshape(len(chunk), -1))
        return np.concatenate(outs)

    def embed_encoded(
        self, encoded: Iterable[bytes], flip: bool = True, names: Sequence[str] | None = None
    ) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Embeddings of encoded images (one batch) and of their horizontal flips.

        Args:
            encoded: encoded image bytes (JPEG, PNG, ...). flip: also embed the flips.
            names: for error messages, one per image (e.g. ``lfw.bin[17]``).
        Returns:
            ``(emb, emb_flip)``: ``(N, D)`` float32 raw model outputs (not normalised);
            ``emb_flip`` None when ``flip`` is False.
        Raises:
            FacekitError: an image cannot be decoded (names it).
        """
        imgs = []
        for k, data in enumerate(encoded):
            try:
                imgs.append(self.prepare(decode_image(data)))
            except SampleRejected as e:
                name = names[k] if names is not None else f"image {k}"
                raise FacekitError(f"{name}: cannot decode: {e}") from None
        batch = np.stack(imgs)
        emb = self.run(self.to_tensor(batch))
        emb_flip = self.run(self.to_tensor(batch[:, :, ::-1])) if flip else None
        return emb, emb_flip
