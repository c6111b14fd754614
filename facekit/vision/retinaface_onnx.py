"""RetinaFace ONNX exports with ``loc`` / ``conf`` / landmark outputs (biubug6's
Pytorch_Retinaface convention, e.g. RetinaFace-MobileNet0.25), decoded in numpy.

Input: BGR float minus ``(104, 117, 123)``, NCHW. Outputs ``(1, N, 4)`` box offsets,
``(1, N, 2)`` softmax (background, face), ``(1, N, 10)`` landmark offsets (the output is
called ``iou`` in some exports); they are told apart by their last dimension. Priors: for
steps 8/16/32, min sizes [16, 32] / [64, 128] / [256, 512], one prior per min size per
feature-map cell (``ceil(size / step)`` cells), row-major; variances 0.1 / 0.2
(Pytorch_Retinaface ``layers/functions/prior_box.py`` and ``utils/box_utils.py``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from facekit.vision.onnxdet import ModelSignature, OnnxDetectorModel, letterbox, nms

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
MEAN_BGR = (104.0, 117.0, 123.0)


def priors(height: int, width: int) -> np.ndarray:
    """Prior boxes for a ``height`` x ``width`` input: ``(N, 4)`` float32 ``cx, cy, w, h``,
    in pixels, in the exports' output order."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        cy, cx = np.mgrid[:fh, :fw].astype(np.float32)
        cells = np.stack([(cx.ravel() + 0.5) * step, (cy.ravel() + 0.5) * step], axis=1)
        for_cell = [np.hstack([cells, np.full((len(cells), 2), s, np.float32)]) for s in sizes]
        out.append(np.stack(for_cell, axis=1).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def check_signature(sig: ModelSignature) -> tuple[int, int, int]:
    """Indices of the (box, score, landmark) outputs of a probed RetinaFace export, or
    ``ValueError`` if its outputs are not ``(1, N, 4)``, ``(1, N, 2)``, ``(1, N, 10)`` with N
    this prior layout's count."""
    if len(sig.outputs) != 3:
        raise ValueError(f"{len(sig.outputs)} outputs, not RetinaFace's 3 (loc, conf, landmarks)")
    n = len(priors(*sig.probe_hw))
    by_dim = {}
    for i, (name, shape) in enumerate(sig.outputs):
        if len(shape) != 3 or shape[0] != 1 or shape[1] != n or shape[2] not in (4, 2, 10):
            raise ValueError(f"output {name} has shape {list(shape)}, RetinaFace's would be [1, {n}, 4|2|10]")
        by_dim[shape[2]] = i
    if len(by_dim) != 3:
        raise ValueError("outputs are not one each of loc (4), conf (2) and landmarks (10)")
    return by_dim[4], by_dim[2], by_dim[10]


def decode(loc: np.ndarray, landm: np.ndarray, pri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``(N, 4)`` x1, y1, x2, y2 and landmarks ``(N, 5, 2)`` in input pixels, from
    ``loc (N, 4)`` and ``landm (N, 10)`` offsets and ``priors (N, 4)`` (float32)."""
    v0, v1 = VARIANCES
    c = pri[:, :2] + loc[:, :2] * v0 * pri[:, 2:]
    wh = pri[:, 2:] * np.exp(loc[:, 2:] * v1)
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1)
    lmk = pri[:, None, :2] + landm.reshape(-1, 5, 2) * v0 * pri[:, None, 2:]
    return boxes.astype(np.float32), lmk.astype(np.float32)


class RetinaFaceOnnx(OnnxDetectorModel):
    """A RetinaFace export on onnxruntime; the image is letterboxed at the top-left of
    ``input_size`` (``(width, height)``, the model's own if it fixes one).

    Args: as :class:`facekit.vision.scrfd.Scrfd`.
    """

    def _prepare(self, path: Path) -> None:
        w, h = self.input_size
        self.priors = priors(h, w)
        self.index = None  # (loc, conf, landmark) output indices, from the first run

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Detect faces in ``image`` (``(H, W, 3)`` uint8 BGR).

        Returns:
            ``(dets (N, 5), kps (N, 5, 2))`` float32 in ``image`` pixels, highest score first
            (keypoints: left eye, right eye, nose, left/right mouth corner; image left first).
        """
        canvas, scale = letterbox(image, self.input_size)
        blob = (canvas.astype(np.float32) - np.array(MEAN_BGR, np.float32)).transpose(2, 0, 1)[None]
        outs = [o.reshape(-1, o.shape[-1]) for o in self.session.run(self.output_names, {self.input_name: blob})]
        if self.index is None:
            self.index = tuple(next(i for i, o in enumerate(outs) if o.shape[1] == d) for d in (4, 2, 10))
        loc, conf, landm = (outs[i] for i in self.index)
        pos = np.nonzero(conf[:, 1] >= self.threshold)[0]
        if len(pos) == 0:
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        boxes, lmk = decode(loc[pos], landm[pos], self.priors[pos])
        scores = conf[pos, 1:2].astype(np.float32)
        order = np.argsort(-scores[:, 0], kind="stable")
        dets = np.hstack((boxes / scale, scores)).astype(np.float32)[order]
        keep = nms(dets, self.nms_thresh)
        return dets[keep], (lmk / scale)[order][keep].astype(np.float32)
