"""YuNet face detection (OpenCV Zoo ``face_detection_yunet_2023mar``) on onnxruntime,
decoded in numpy as OpenCV's ``cv2.FaceDetectorYN`` does (``modules/objdetect/src/
face_detect.cpp``): BGR input as is (no scaling or mean), 12 outputs ``cls_*``, ``obj_*``,
``bbox_*``, ``kps_*`` for strides 8/16/32, one anchor-free prediction per cell:
score ``sqrt(clip(cls) * clip(obj))``, centre ``(col + dx, row + dy) * stride``, size
``exp(dw|dh) * stride``, keypoints ``(col + kx, row + ky) * stride``.

YuNet's keypoints are the subject's right eye, left eye, nose tip, right and left mouth
corners: on the image that is left eye, right eye, nose, left and right mouth corner with
"left" = image left, facekit's order, so they are kept as they come.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facekit.vision.onnxdet import ModelSignature, OnnxDetectorModel, letterbox

STRIDES = (8, 16, 32)


def grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell ``(col, row)`` ``(N, 2)`` float32 and stride ``(N,)`` float32 of every output row,
    strides 8/16/32 concatenated, row-major (input padded up to a multiple of 32)."""
    ph, pw = -(-height // 32) * 32, -(-width // 32) * 32
    cells, steps = [], []
    for s in STRIDES:
        rows, cols = ph // s, pw // s
        cells.append(np.stack(np.mgrid[:rows, :cols][::-1], axis=-1).reshape(-1, 2).astype(np.float32))
        steps.append(np.full(rows * cols, s, np.float32))
    return np.concatenate(cells), np.concatenate(steps)


def check_signature(sig: ModelSignature) -> None:
    """``ValueError`` unless the probed model has YuNet's 12 outputs (cls, obj: 1, bbox: 4,
    kps: 10 values per cell of strides 8/16/32)."""
    if len(sig.outputs) != 12:
        raise ValueError(f"{len(sig.outputs)} outputs, not YuNet's 12 (cls/obj/bbox/kps x strides 8/16/32)")
    h, w = sig.probe_hw
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    for k, (name, shape) in enumerate(sig.outputs):
        s = STRIDES[k % 3]
        want = ((ph // s) * (pw // s), (1, 1, 4, 10)[k // 3])
        if tuple(shape[-2:]) != want or any(d != 1 for d in shape[:-2]):
            raise ValueError(f"output {name} has shape {list(shape)}, YuNet's would be [1, {want[0]}, {want[1]}]")


class YuNet(OnnxDetectorModel):
    """A YuNet model on onnxruntime. The image is letterboxed at the top-left of the model's
    fixed input size (or ``input_size`` = ``(width, height)`` for a dynamic export).

    Args:
        path: the ``.onnx`` file.
        threshold: score threshold (kept: ``score >= threshold``).
        nms_thresh: NMS IoU threshold.
        threads, providers: see :func:`facekit.vision.onnxdet.make_session`.
    """

    THRESHOLD = 0.6
    NMS = 0.3

    def _prepare(self, path: Path) -> None:
        w, h = self.input_size
        self.cells, self.steps = grid(h, w)

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Detect faces in ``image`` (``(H, W, 3)`` uint8 BGR).

        Returns:
            ``(dets (N, 5) x1, y1, x2, y2, score; kps (N, 5, 2))`` float32 in ``image``
            pixels, highest score first (keypoints in facekit's order, see the module).
        """
        canvas, scale = letterbox(image, self.input_size)
        blob = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], np.float32)
        outs = self.session.run(self.output_names, {self.input_name: blob})
        cls_, obj, box, kps = (np.concatenate([o.reshape(-1, o.shape[-1]) for o in outs[i : i + 3]]) for i in (0, 3, 6, 9))
        score = np.sqrt(np.clip(cls_[:, 0], 0, 1) * np.clip(obj[:, 0], 0, 1))
        pos = np.nonzero(score >= self.threshold)[0]
        if len(pos) == 0:
            return np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        cell, s = self.cells[pos], self.steps[pos, None]
        centre = (cell + box[pos, :2]) * s
        wh = np.exp(box[pos, 2:]) * s
        boxes = np.concatenate([centre - wh / 2, centre + wh / 2], axis=1)
        lmk = (kps[pos].reshape(-1, 5, 2) + cell[:, None, :]) * s[:, :, None]
        # OpenCV's NMS on integer (x, y, w, h) rectangles, as FaceDetectorYN (top_k 5000)
        rects = np.concatenate([boxes[:, :2], wh], axis=1).astype(np.int32).tolist()
        keep = np.asarray(cv2.dnn.NMSBoxes(rects, score[pos].tolist(), self.threshold, self.nms_thresh, 1.0, 5000), int)
        keep = keep.reshape(-1)
        dets = np.hstack((boxes[keep] / scale, score[pos][keep, None])).astype(np.float32)
        return dets, (lmk[keep] / scale).astype(np.float32)
