"""Source ``samples``: real photos that ship inside installed packages, so a fresh
install can run a pipeline with no download: InsightFace's ``t1.jpg`` group photo (each
face its own identity) and ``Tom_Hanks_54745.png``, scikit-image's ``astronaut.png``
(Eileen Collins), and face-free images (mask textures, scikit-image's cat) that the
detector must reject."""

from __future__ import annotations

from importlib import resources

from pydantic import Field

import facekit

PHOTOS = [
    # (package, resource path, identity, one identity per detected face)
    ("insightface", "data/images/t1.jpg", "insightface_t1", True),
    ("insightface", "data/images/Tom_Hanks_54745.png", "Tom_Hanks", False),
    ("skimage", "data/astronaut.png", "Eileen_Collins", False),
]
NEGATIVES = [
    ("insightface", "data/images/mask_white.jpg", "no_face_mask_white"),
    ("skimage", "data/chelsea.png", "no_face_cat"),
]


class SamplesParams(facekit.SourceParams):
    negatives: bool = Field(True, description="also yield face-free images (they end in the rejects file)")


class SamplesSource(facekit.Source):
    """Embedded sample photos from the installed insightface and scikit-image packages."""

    name = "samples"
    Params = SamplesParams

    def _items(self) -> list[tuple[str, str, str, bool]]:
        items = [(p, r, i, per_face) for p, r, i, per_face in PHOTOS]
        if self.params.negatives:
            items += [(p, r, i, False) for p, r, i in NEGATIVES]
        return items

    def count(self) -> int:
        """Items :meth:`__iter__` yields: one per photo (a Sample, or a Reject when its
        package is missing)."""
        return len(self._items())

    def __iter__(self):
        for key, (pkg, res, identity, per_face) in enumerate(self._items()):
            try:
                path = resources.files(pkg).joinpath(res)
            except ModuleNotFoundError:
                yield facekit.Reject(f"{pkg}:{res}", "unreadable", f"package {pkg} is not installed", identity)
                continue
            yield facekit.Sample(
                key=key, path=str(path), identity=identity, per_face_identity=per_face
            )


@facekit.hookimpl
def register_stages(register):
    register(SamplesSource)
