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
(:mod:`facekit.formats.facerec`), and such a file is read key by key.
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
from facekit.formats.facerec import MAX_PIXELS, FaceRec, class_id, image_hw, label_of


class FaceRecDataset(Dataset):
    """A face RecordIO dataset (file, folder or shard set) as a ``torch`` Dataset.

    Args:
        path: a ``.rec``/``.idx``, or a folder with ``train.rec`` or ``train-*-of-*.rec``.
        flip: random horizontal flip with probability 0.5.
        normalize: ``(x / 255 - 0.5) / 0.5`` (arcface_torch); else ``x / 255``.
        transform: replaces flip/normalize: called with the ``(H, W, 3)`` uint8 **RGB**
            numpy array (what ``MXFaceDataset`` hands to ``ToPILImage``); its result is
            returned as the sample.
        layout, prefix: see :class:`facekit.formats.facerec.FaceRec`.
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
                (:func:`facekit.formats.facerec.class_id`), an image whose header claims more than
                :data:`facekit.formats.facerec.MAX_PIXELS` pixels (checked before decoding, so a
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


# --------------------------------------------------------------------------- occlusions

from facekit.vision.occlusion import (  # noqa: E402  (re-exported: the online occlusion transforms)
    NoOcclusion,
    Occluder,
    RandomEllipse,
    RandomFaceMask,
    RandomObject,
    RandomPolygon,
    RandomRectangle,
    default_occluders,
    gaussian_light,
)


class OccludedFaceDataset(Dataset):
    """MSML's ``FaceByRandOccMask`` without mxnet: ``train.rec`` + ``mask_out.rec`` +
    ``mask.rec`` (the ``masked_rec`` sink's folder) with online occlusions.

    For item ``i`` (image key ``k`` of ``train.rec``): with probability ``p_mask`` the
    offline masked face and mask at key ``k`` of ``mask_out.rec``/``mask.rec`` (mask
    binarised: ``<= 128`` occluded), else one of ``occluders`` drawn uniformly (default
    :func:`facekit.vision.occlusion.default_occluders`: none, rectangle, ellipse, polygon, plus
    ``objects`` folders); then resize to ``size``, horizontal flip of image and mask
    together (p = 0.5), and optionally MSML's random Gaussian illumination.

    Args:
        path: folder with ``train.rec/.idx``, ``mask_out.rec/.idx``, ``mask.rec/.idx``.
        p_mask: probability of the offline mask (MSML: 0.2). 0 needs no mask recs.
        occluders: the online kinds (callables ``(rgb, mask, rng) -> (rgb, mask)``).
        objects: ``{"glasses"|"scarf"|"any": folder}`` of cut-out PNGs for the default kinds.
        size: output ``(h, w)`` (default: the stored size).
        flip, illumination: as above. normalize: ``(x - 0.5) / 0.5``, else ``[0, 1]``.
        seed: None: randomness from torch's RNG (seeded per DataLoader worker); an int:
            item ``i`` is reproducible (``default_rng([seed, i, epoch])``, ``set_epoch``).
    Item: ``(image, mask, label)``: image float32 ``(3, h, w)`` **RGB**; mask int32
    ``(h, w)``, 1 = clean, 0 = occluded (MSML's ``Msk2Tenser``); label 0-d ``torch.long``.

    Raises:
        RecordIOError: unreadable files; on ``__getitem__`` a missing or malformed record
            (names file and key).
    """

    def __init__(self, path, p_mask: float = 0.2, occluders=None, objects=None, size=None, flip: bool = True,
                 illumination: bool = True, normalize: bool = False, seed: int | None = None):
        self.rec = FaceRec(path, "insightface")
        if len(self.rec.parts) != 1:
            raise RecordIOError(f"{path}: OccludedFaceDataset reads one train.rec, not {len(self.rec.parts)} shards")
        root = os.path.dirname(self.rec.parts[0].rec_path)
        self.p_mask = float(p_mask)
        self.mask_files = [(os.path.join(root, f"{n}.idx"), os.path.join(root, f"{n}.rec")) for n in ("mask_out", "mask")]
        if self.p_mask > 0:
            for idx, rec in self.mask_files:
                if not (os.path.isfile(idx) and os.path.isfile(rec)):
                    raise RecordIOError(f"{rec}: missing (p_mask > 0 needs mask_out.rec and mask.rec beside train.rec)")
        self.occluders = list(occluders) if occluders is not None else default_occluders(objects)
        self.size = tuple(size) if size is not None else None
        self.flip = flip
        self.illumination = illumination
        self.normalize = normalize
        self.seed = seed
        self.epoch = 0
        self._readers = None
        self._pid = None

    def set_epoch(self, epoch: int) -> None:
        """With a fixed ``seed``: draw other occlusions in each epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rec)

    def _read_mask(self, key: int) -> tuple[np.ndarray, np.ndarray]:
        from facekit.formats.recordio import IndexedRecordIOReader, unpack

        if self._readers is None or self._pid != os.getpid():
            self._readers = [IndexedRecordIOReader(i, r) for i, r in self.mask_files]
            self._pid = os.getpid()
        out = []
        for (idx, rec), r, flag in zip(self.mask_files, self._readers, (cv2.IMREAD_COLOR, cv2.IMREAD_GRAYSCALE)):
            _, img = unpack(r.read_idx(key))  # RecordIOError names the file and key
            arr = cv2.imdecode(np.frombuffer(img, np.uint8), flag)
            if arr is None:
                raise RecordIOError(f"{rec}: key {key}: image bytes not decodable")
            out.append(arr)
        masked, mask = out
        return np.ascontiguousarray(masked[:, :, ::-1]), np.where(mask <= 128, 0, 255).astype(np.uint8)

    def __getitem__(self, index):
        index = int(index)
        if self.seed is None:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        else:
            rng = np.random.default_rng([self.seed, index, self.epoch])
        rgb, label = self.decode(index)
        if rng.random() < self.p_mask:
            _, key = self.rec.key(index)
            img, msk = self._read_mask(key)
        else:
            occ = self.occluders[int(rng.integers(len(self.occluders)))]
            img, msk = occ(np.ascontiguousarray(rgb), None, rng)
        if self.size is not None and img.shape[:2] != self.size:
            h, w = self.size
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
            msk = cv2.resize(msk, (w, h), interpolation=cv2.INTER_NEAREST)
        if self.flip and rng.random() < 0.5:
            img, msk = img[:, ::-1], msk[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255)
        if self.illumination:
            light = torch.from_numpy(gaussian_light(x.shape[1], x.shape[2], rng))
            x = x * light
            x = x / x.max().clamp_min(1e-6)
        if self.normalize:
            x = x.sub_(0.5).div_(0.5)
        m = torch.from_numpy(np.ascontiguousarray(msk == 255).astype(np.int32))
        return x, m, torch.tensor(label, dtype=torch.long)

    decode = FaceRecDataset.decode

    def __getstate__(self):  # open files stay in their process (DataLoader workers reopen)
        d = self.__dict__.copy()
        d["_readers"] = None
        d["_pid"] = None
        return d

    def __repr__(self) -> str:
        return f"OccludedFaceDataset({self.rec.path!r}, {len(self)} images, p_mask {self.p_mask}, {len(self.occluders)} online kinds)"
