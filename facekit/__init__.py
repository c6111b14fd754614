"""facekit: face-recognition training data as one pluggable pipeline.

Public API for plugins and users: the stage base classes, data types, ``hookimpl``,
RecordIO and alignment helpers. Plugins import only from here.
"""

import os as _os
import sys as _sys

# Arrow's allocator for the results table: jemalloc, not pyarrow's default mimalloc, which
# keeps the pages it freed (peak RSS of rec -> folders: +14% from 1k to 1M records, +10%
# with jemalloc; see facekit.pipeline.results). Read by Arrow when it first allocates, so
# set before pyarrow is used; a value the user set wins. Linux only: the wheels of other
# platforms may lack jemalloc.
if _sys.platform.startswith("linux"):
    _os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

from facekit.errors import ConfigError, FacekitError, RecordIOError, SampleRejected, one_line
from facekit.hookspecs import hookimpl
from facekit.models import ModelPath
from facekit.params import FileName
from facekit.pipeline.executor import Executor, ExecutorParams
from facekit.stages import (
    Aligner,
    Augmenter,
    Cleaner,
    CleanerParams,
    Detections,
    Detector,
    DetectorParams,
    FaceDecision,
    InputPath,
    Occlusion,
    OptionalInputPath,
    OutputPath,
    PairRef,
    Params,
    Quality,
    QualityParams,
    Recognizer,
    RecognizerParams,
    Reject,
    Sample,
    Sink,
    Source,
    SourceParams,
    Stage,
)

__version__ = "0.1.0"

__all__ = [
    "Aligner",
    "Augmenter",
    "Cleaner",
    "CleanerParams",
    "ConfigError",
    "Detections",
    "Detector",
    "DetectorParams",
    "Executor",
    "ExecutorParams",
    "FaceDecision",
    "FacekitError",
    "FileName",
    "InputPath",
    "ModelPath",
    "Occlusion",
    "OptionalInputPath",
    "OutputPath",
    "PairRef",
    "Params",
    "Quality",
    "QualityParams",
    "RecordIOError",
    "Recognizer",
    "RecognizerParams",
    "Reject",
    "Sample",
    "SampleRejected",
    "Sink",
    "Source",
    "SourceParams",
    "Stage",
    "hookimpl",
    "one_line",
]
