"""The ``facemask`` augmenter: a realistic face mask on each aligned face (no 3D model).

Renders with :class:`facekit.vision.masks.MaskRenderer` from the sample's ``aligned_landmarks``
(the ArcFace template points for samples that have none, e.g. faces of an already aligned
dataset read by the ``mxrec`` source). Seeded per sample from ``seed``, the sample's path,
source key and face index: the same seed gives the same bytes, whatever the worker count.

``output: attach`` (default) keeps the clean face as the sample's image and attaches the
masked copy and its occlusion mask as ``sample.occlusion`` (a :class:`facekit.Occlusion`:
JPEG at ``quality``, PNG mask 255 clean / 0 occluded) for the ``masked_rec`` sink;
``output: replace`` makes the masked face the sample's image (for any sink).
"""

from __future__ import annotations

from typing import Literal, Optional

import cv2
from pydantic import Field, model_validator

import facekit
from facekit.vision import STYLES, MaskRenderer, encode_mask_png, seeded_rng, template_for


class FacemaskParams(facekit.Params):
    seed: int = Field(0, description="seed: the same seed gives the same masked bytes")
    styles: list[Literal[STYLES]] = Field(list(STYLES), description="drawn mask styles to choose from")
    textures: Optional[facekit.InputPath] = Field(None, description="folder of the user's mask PNGs with alpha")
    texture_p: float = Field(
        0.5, ge=0, le=1, description="with textures and styles: probability of a user PNG (else a drawn style)"
    )
    output: Literal["attach", "replace"] = Field(
        "attach", description="attach: clean face + sample.occlusion (masked_rec); replace: the masked face becomes the image"
    )
    quality: int = Field(95, ge=1, le=100, description="JPEG quality of the attached masked face (MSML: 95)")

    @model_validator(mode="after")
    def _something_to_draw(self):
        if not self.styles and self.textures is None:
            raise ValueError("styles is empty and no textures folder is given: nothing to draw")
        return self


class FacemaskAugmenter(facekit.Augmenter):
    """Put a face mask (surgical, cloth, N95, KN95 or the user's PNGs) on aligned faces."""

    name = "facemask"
    description = "face mask from the aligned landmarks (masked copy + occlusion mask, or replace)"
    Params = FacemaskParams
    needs_landmarks = True

    def __init__(self, params):
        super().__init__(params)
        self.renderer = MaskRenderer(tuple(params.styles), params.textures, params.texture_p)

    def augment(self, sample):
        img = sample.image
        h, w = img.shape[:2]
        lmk = sample.aligned_landmarks
        if lmk is None:
            if h != w or (h % 112 and h % 128):
                raise facekit.SampleRejected(
                    "no_landmarks", f"{w}x{h} crop without aligned landmarks (not an ArcFace-aligned size)"
                )
            lmk = template_for(h)
        rng = seeded_rng(self.params.seed, sample.path, sample.key, sample.face_id)
        try:
            res = self.renderer.render(img, lmk, rng)
        except ValueError as e:
            raise facekit.SampleRejected("align_failed", f"mask placement: {e}") from None
        if self.params.output == "replace":
            return [sample.replace(image=res.image, data=None)]
        ok, jpg = cv2.imencode(".jpg", res.image, [cv2.IMWRITE_JPEG_QUALITY, self.params.quality])
        if not ok:  # pragma: no cover
            raise facekit.SampleRejected("stage_error", "JPEG encoding of the masked face failed")
        occ = facekit.Occlusion(jpg.tobytes(), encode_mask_png(res.mask), res.covered, res.name)
        return [sample.replace(occlusion=occ)]


@facekit.hookimpl
def register_stages(register):
    register(FacemaskAugmenter)
