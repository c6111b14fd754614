"""SCRFD face detection on onnxruntime, decoded in numpy.

Matches insightface ``model_zoo.scrfd.SCRFD.detect(img, input_size=(W, H))`` exactly
(same boxes, scores, keypoints, count and order; tested against insightface 2.x with one
input size, which is what insightface 0.7.3 did): top-left letterbox,
``cv2.dnn.blobFromImage(img, 1/128, size, (127.5,)*3, swapRB=True)``, score threshold,
``distance2bbox`` / ``distance2kps`` on anchor centres, stable sort by score, greedy NMS.

Output conventions (InsightFace SCRFD exports): 6 or 9 outputs = strides 8/16/32 with 2
anchors per cell, 10 or 15 = strides 8/16/32/64/128 with 1 anchor; the outputs are all score
maps, then all box maps, then (9 and 15) all keypoint maps, each ``(N, C)`` or ``(1, N, C)``
with C = 1, 4, 10.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from facekit.vision.onnxdet import ModelSignature, OnnxDetectorModel, letterbox_blob, nms

#: number of outputs -> (strides, anchors per cell, has keypoints)
LAYOUTS = {
    6: ((8, 16, 32), 2, False),
    9: ((8, 16, 32), 2, True),
    10: ((8, 16, 32, 64, 128), 1, False),
    15: ((8, 16, 32, 64, 128), 1, True),
}


def anchor_centers(height: int, width: int, strides: Sequence[int], anchors: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres of every stride, concatenated in the models' output order.

    Args:
        height, width: network input size (pixels).
    Returns:
        ``(centers, stride)``: ``(N, 2)`` float32 ``x, y`` in input pixels (row-major per
        stride, each repeated ``anchors`` times) and ``(N,)`` float32 stride of each row.
    """
    centers, steps = [], []
    for s in strides:
        h, w = height // s, width // s
        c = (np.stack(np.mgrid[:h, :w][::-1], axis=-1).astype(np.float32) * s).reshape(-1, 2)
        c = np.repeat(c, anchors, axis=0)
        centers.append(c)
        steps.append(np.full(len(c), s, np.float32))
    return np.concatenate(centers), np.concatenate(steps)


def check_signature(sig: ModelSignature) -> tuple[tuple[int, ...], int, bool]:
    """The SCRFD layout of a probed model, or ``ValueError`` if its outputs are not SCRFD's.

    Returns:
        ``(strides, anchors, has_keypoints)``.
    """
    n = len(sig.outputs)
    if n not in LAYOUTS:
        raise ValueError(f"{n} outputs, not SCRFD's 6/9/10/15")
    strides, anchors, kps = LAYOUTS[n]
    fmc = len(strides)
    h, w = sig.probe_hw
    for k, (name, shape) in enumerate(sig.outputs):
        stride = strides[k % fmc]
        want = ((h // stride) * (w // stride) * anchors, (1, 4, 10)[k // fmc])
        got = tuple(shape[-2:]) if len(shape) in (2, 3) and (len(shape) == 2 or shape[0] == 1) else None
        if got != want:
            raise ValueError(f"output {name} has shape {list(shape)}, SCRFD's would be {list(want)}")
    return strides, anchors, kps


class Scrfd(OnnxDetectorModel):
    """A SCRFD model on onnxruntime.

    Args:
        path: the ``.onnx`` file (checked with :func:`check_signature` by the plugin).
        input_size: ``(width, height)`` of the letterboxed network input; a model that fixes
            its input size uses its own.
        threshold: score threshold (kept: ``score >= threshold``).
        nms_thresh: NMS IoU threshold.
        threads, providers: see :func:`facekit.vision.onnxdet.make_session`.
    """

    FIX_INPUT = True  # as insightface 2.x: identical float results need the fixed shapes

    def _prepare(self, path: Path) -> None:
        n = len(self.output_names)
        if n not in LAYOUTS:
            raise ValueError(f"{path}: {n} outputs, not SCRFD's 6/9/10/15")
        self.strides, self.anchors, self.has_kps = LAYOUTS[n]
        w, h = self.input_size
        self.centers, self.steps = anchor_centers(h, w, self.strides, self.anchors)

    def decode(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Candidates above the threshold, in network-input pixels, in anchor order.

        Returns:
            ``(scores (K, 1), boxes (K, 4), keypoints (K, 5, 2) or None)``, float32.
        """
        fmc = len(self.strides)
        scores = np.concatenate([o.reshape(-1, 1) for o in outputs[:fmc]])
        pos = np.nonzero(scores[:, 0] >= self.threshold)[0]
        c, s = self.centers[pos], self.steps[pos, None]
        dist = np.concatenate([o.reshape(-1, 4) for o in outputs[fmc : 2 * fmc]])[pos] * s
        boxes = np.concatenate([c - dist[:, :2], c + dist[:, 2:]], axis=1)
        kps = None
        if self.has_kps:
            k = np.concatenate([o.reshape(-1, 10) for o in outputs[2 * fmc :]])[pos] * s
            kps = k.reshape(-1, 5, 2) + c[:, None, :]
        return scores[pos], boxes, kps

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Detect faces.

        Args:
            image: ``(H, W, 3)`` uint8 BGR.
        Returns:
            ``(dets, kps)``: ``(N, 5)`` float32 ``x1, y1, x2, y2, score`` in ``image`` pixels,
            highest score first; ``(N, 5, 2)`` float32 keypoints (left eye, right eye, nose,
            left/right mouth corner; image left first) or ``None`` for a model without them.
        """
        blob, scale = letterbox_blob(image, self.input_size)  # = blobFromImage(letterbox(image), 1/128, ...)
        outputs = self.session.run(self.output_names, {self.input_name: blob})
        scores, boxes, kps = self.decode(outputs)
        if len(scores) == 0:
            return np.zeros((0, 5), np.float32), (np.zeros((0, 5, 2), np.float32) if self.has_kps else None)
        order = np.argsort(-scores.ravel(), kind="stable")
        dets = np.hstack((boxes / scale, scores)).astype(np.float32, copy=False)[order]
        keep = nms(dets, self.nms_thresh)
        return dets[keep], (None if kps is None else (kps / scale)[order][keep])
