"""Stage parameters: the pydantic base every stage's ``Params`` model extends, and the
path types that resolve against the config file's folder or the run's output folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo


def _resolve(base_key: str, must_exist: bool):
    def check(p: Path, info: ValidationInfo) -> Path:
        p = Path(os.path.expanduser(str(p)))
        base = (info.context or {}).get(base_key)
        if not p.is_absolute() and base is not None:
            p = Path(base) / p
        if must_exist and not p.exists():
            raise ValueError(f"path does not exist: {p}")
        return p

    return check


#: An input path: relative paths resolve against the config file's folder; must exist.
InputPath = Annotated[Path, AfterValidator(_resolve("config_dir", True))]
#: An input path that may be absent (the stage checks and explains).
OptionalInputPath = Annotated[Path, AfterValidator(_resolve("config_dir", False))]
#: An output path: relative paths resolve against the pipeline's ``output`` folder.
OutputPath = Annotated[Path, AfterValidator(_resolve("output_dir", False))]


class Params(BaseModel):
    """Base of every stage's parameter model: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)



__all__ = ["InputPath", "OptionalInputPath", "OutputPath", "Params"]
