"""Numbered HTML pages of a report: items rendered ``per_page`` at a time, as they come."""

from __future__ import annotations

import re


def safe_name(name: str) -> str:
    """``name`` made safe for a file name (anything but letters, digits, ``_.-`` -> ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


class Pager:
    """Items into numbered pages of ``per_page``; a full page is rendered when the next item
    arrives (so its "next" link always exists), the last one by :meth:`finish`.

    ``report.render(template, file, **context)`` writes a page; ``ctx`` goes to every page.
    """

    def __init__(self, report, stem: str, template: str, per_page: int, **ctx):
        self.report, self.stem, self.template, self.per_page, self.ctx = report, stem, template, per_page, ctx
        self.items: list = []
        self.pages: list[dict] = []  # {"file", "first", "last", "count"}
        self.total = 0

    def file(self, i: int) -> str:
        """The file name of page ``i`` (from 0)."""
        return f"{self.stem}-{i + 1:04d}.html"

    @property
    def page(self) -> int:
        """Index of the page the next item goes to."""
        return len(self.pages) + (1 if len(self.items) >= self.per_page else 0)

    def add(self, item) -> tuple[str, int]:
        """Queue ``item``; returns ``(page file, item number on its page)``."""
        if len(self.items) >= self.per_page:
            self._render(has_next=True)
        self.items.append(item)
        self.total += 1
        return self.file(len(self.pages)), len(self.items) - 1

    def _render(self, has_next: bool) -> None:
        i = len(self.pages)
        self.report.render(self.template, self.file(i), items=self.items, page=i + 1,
                           prev=self.file(i - 1) if i else None, next=self.file(i + 1) if has_next else None, **self.ctx)
        self.pages.append({"file": self.file(i), "first": self.items[0].get("name", ""),
                           "last": self.items[-1].get("name", ""), "count": len(self.items)})
        self.items = []

    def finish(self) -> None:
        """Render the last, partly filled page."""
        if self.items:
            self._render(has_next=False)
