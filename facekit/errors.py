"""Exceptions raised by facekit. Every message names the file, record or config line."""

from __future__ import annotations


class FacekitError(Exception):
    """Base class of facekit's errors."""


class ConfigError(FacekitError):
    """A pipeline config is invalid; raised before any work starts."""


class RecordIOError(FacekitError):
    """A RecordIO ``.rec``/``.idx`` file is malformed (message names file, key, offset)."""


class SampleRejected(FacekitError):
    """Raised by a stage for one sample that cannot be used.

    The engine catches it, writes ``path, reason, detail`` to the rejects file and goes on.
    ``reason`` is a short stable token (``no_face``, ``truncated``, ...).
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class InterruptedAfterPublication(BaseException):
    """Ctrl-C or SIGTERM arrived after a run had published its outputs (while its QA report
    was being written): the outputs stand, only the report is missing. A ``BaseException``
    like the interruption it carries, so that no ``except Exception`` swallows it.

    Attributes:
        code: the exit status the interruption asked for (130 for Ctrl-C, 143 for SIGTERM).
        output: the run's output folder.
    """

    def __init__(self, output, code: int):
        super().__init__(
            f"interrupted while writing the QA report; the run's outputs in {output} were published "
            f"(run 'facekit report {output}' for the report)"
        )
        self.output = output
        self.code = code


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (OpenCV's and onnxruntime's span several), at most
    ``limit`` characters."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
