"""PyTorch training loader over face RecordIO, without mxnet (optional extra:
``pip install 'facekit[torch]'``).

:class:`FaceRecDataset` has the semantics of arcface_torch's ``MXFaceDataset``
(``recognition/arcface_torch/dataset.py``): image keys from the header record when its
``flag > 0`` (keys ``1..label[0]-1``), otherwise every idx key; label = the scalar label or
the first element of an array label, as ``torch.long``; images decoded to **RGB** (as
``mx.image.imdecode``); optional random horizontal flip (p = 0.5, drawn from torch's RNG,
as ``transforms.RandomHorizontalFlip``) and normalisation ``(x / 255 - 0.5) / 0.5``.
It also reads plain (DALI-safe, shuffled) files and shard sets as one dataset.

One deliberate difference: ``MXFaceDataset`` takes any key 0 with ``flag > 0`` for the
header, so a plain file whose key 0 is an image with an array label (``[class, aligned]``)
fails there (``KeyError``); here key 0 is a header only when it also has no image bytes
(:mod:`facekit.facerec`), and such a file is read key by key.
"""

from __future__ import annotations

import os

try:
    import torch
    from torch.utils.data import Dataset
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("facekit.torch needs PyTorch: pip install 'facekit[torch]' (torch>=2.1)") from e

import cv2
import numpy as np

from facekit.errors import RecordIOError
from facekit.facerec import MAX_PIXELS, FaceRec, class_id, image_hw, label_of


class FaceRecDataset(Dataset):
    """A face RecordIO dataset (file, folder or shard set) as a ``torch`` Dataset.

    Args:
        path: a ``.rec``/``.idx``, or a folder with ``train.rec`` or ``train-*-of-*.rec``.
        flip: random horizontal flip with probability 0.5.
        normalize: ``(x / 255 - 0.5) / 0.5`` (arcface_torch); else ``x / 255``.
        transform: replaces flip/normalize: called with the ``(H, W, 3)`` uint8 **RGB**
            numpy array (what ``MXFaceDataset`` hands to ``ToPILImage``); its result is
            returned as the sample.
        layout, prefix: see :class:`facekit.facerec.FaceRec`.
    Item ``i``: ``(image, label)``; image a float32 tensor ``(3, H, W)`` RGB, label a
    0-d ``torch.long`` tensor.

    Safe with ``DataLoader(num_workers > 0)``: the dataset holds paths and the index
    arrays only; each worker process opens its own file handle on its first read (after
    ``fork`` too: handles are tied to the process id).

    Raises:
        RecordIOError: unreadable dataset; on ``__getitem__``, a malformed record or an
            undecodable image (names file, key and offset).
    """

    def __init__(self, path, flip: bool = False, normalize: bool = True, transform=None, layout: str = "auto", prefix: str = "train"):
        self.rec = FaceRec(path, layout, prefix)
        self.flip = flip
        self.normalize = normalize
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rec)

    @property
    def num_classes(self) -> int | None:
        """``num_classes`` of the ``property`` file, or None without one."""
        return self.rec.property[0] if self.rec.property else None

    def decode(self, index: int) -> tuple[np.ndarray, int]:
        """``(rgb, label)`` of image ``index``: ``(H, W, 3)`` uint8 RGB and the class id.

        Raises:
            RecordIOError: a malformed record, a label that is not a class id
                (:func:`facekit.facerec.class_id`), an image whose header claims more than
                :data:`facekit.facerec.MAX_PIXELS` pixels (checked before decoding, so a
                hostile header allocates nothing), or undecodable bytes; names file, key
                and offset.
        """
        header, img = self.rec.read(int(index))
        label = None
        try:
            label = class_id(label_of(header))
            h, w = image_hw(img)
            err = None if h * w <= MAX_PIXELS else f"image header claims {w}x{h} pixels (WxH), over the limit of {MAX_PIXELS}"
        except ValueError as e:
            err = str(e) if label is None else f"image bytes not decodable: {e}"
        rgb = None if err else cv2.imdecode(np.frombuffer(img, np.uint8), cv2.IMREAD_COLOR)
        if rgb is None:
            j, k = self.rec.locate(int(index))
            part = self.rec.parts[j]
            raise RecordIOError(
                f"{part.rec_path}: key {int(part.image_keys[k])}, record at offset {int(part.image_offsets[k])}: "
                f"{err or 'image bytes not decodable'}"
            )
        return rgb[:, :, ::-1], label

    def __getitem__(self, index):
        rgb, label = self.decode(index)
        if self.transform is not None:
            sample = self.transform(np.ascontiguousarray(rgb))
        else:
            if self.flip and torch.rand(1).item() < 0.5:
                rgb = rgb[:, ::-1]
            sample = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div_(255)
            if self.normalize:
                sample.sub_(0.5).div_(0.5)
        return sample, torch.tensor(label, dtype=torch.long)

    def __repr__(self) -> str:
        return f"FaceRecDataset({self.rec.path!r}, {len(self)} images, layout {self.rec.layout}, pid {os.getpid()})"
