"""facekit: face-recognition training data as one pluggable pipeline.

Public API for plugins and users: the stage base classes, data types, ``hookimpl``,
RecordIO and alignment helpers. Plugins import only from here.
"""

from facekit.errors import ConfigError, FacekitError, RecordIOError, SampleRejected, one_line
from facekit.hookspecs import hookimpl
from facekit.pipeline.executor import Executor, ExecutorParams
from facekit.stages import (
    Aligner,
    Augmenter,
    Detections,
    Detector,
    DetectorParams,
    InputPath,
    Occlusion,
    OptionalInputPath,
    OutputPath,
    PairRef,
    Params,
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
    "ConfigError",
    "Detections",
    "Detector",
    "DetectorParams",
    "Executor",
    "ExecutorParams",
    "FacekitError",
    "InputPath",
    "Occlusion",
    "OptionalInputPath",
    "OutputPath",
    "PairRef",
    "Params",
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
