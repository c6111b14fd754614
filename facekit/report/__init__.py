"""The QA report of a facekit run (``facekit report``) and contact sheets of datasets
(``facekit show``).

- :func:`facekit.report.build.build_report`: ``<output>`` (``summary.json``,
  ``results.parquet``, the sinks' files) -> a folder of static HTML pages (Jinja2
  templates shipped in ``facekit/report/templates``) and small JPEG thumbnails.
- :func:`facekit.report.sheet.contact_sheet`: a RecordIO dataset or identity folders ->
  one BGR contact-sheet image.
"""

from facekit.report.build import build_report
from facekit.report.sheet import contact_sheet

__all__ = ["build_report", "contact_sheet"]
