"""Aligners: ``arcface`` (five-point norm crop, equal to insightface ``norm_crop``) and
``boxcrop`` (box + margin, for detectors without landmarks)."""

from __future__ import annotations

from pydantic import Field, field_validator

import facekit
import cv2

from facekit.vision import box_crop, box_crop_transform, estimate_norm, template_for


class ArcfaceParams(facekit.Params):
    size: int = Field(112, description="output side in pixels: a multiple of 112 or of 128")

    @field_validator("size")
    @classmethod
    def _size(cls, v):
        template_for(v)  # raises ValueError with the rule
        return v


class ArcfaceAligner(facekit.Aligner):
    """Similarity transform of the five landmarks onto the ArcFace template."""

    name = "arcface"
    Params = ArcfaceParams
    needs_landmarks = True

    def align(self, image, box, landmarks):
        return self.align_face(image, box, landmarks)[0]

    def transform(self, image_shape, box, landmarks):
        return estimate_norm(landmarks, self.params.size)

    def align_face(self, image, box, landmarks):
        """Equals ``insightface.utils.face_align.norm_crop`` (one transform estimate)."""
        s = self.params.size
        M = estimate_norm(landmarks, s)
        return cv2.warpAffine(image, M, (s, s), borderValue=0.0), M


class BoxcropParams(facekit.Params):
    size: int = Field(112, gt=0, description="output side in pixels")
    margin: int = Field(44, ge=0, description="pixels added around the box in total (half each side)")


class BoxcropAligner(facekit.Aligner):
    """Box crop with margin, resized (insightface face_preprocess without landmarks)."""

    name = "boxcrop"
    Params = BoxcropParams
    needs_landmarks = False

    def align(self, image, box, landmarks):
        return box_crop(image, box, self.params.size, self.params.margin)

    def transform(self, image_shape, box, landmarks):
        return box_crop_transform(image_shape, box, self.params.size, self.params.margin)


@facekit.hookimpl
def register_stages(register):
    register(ArcfaceAligner)
    register(BoxcropAligner)
