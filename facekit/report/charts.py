"""Small inline SVG histograms (no plotting library): numbers in, an ``<svg>`` string out."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def _fmt(v: float) -> str:
    if abs(v) >= 10 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.2f}"


def integer_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """Bin edges on whole numbers for integers from ``lo`` to ``hi`` (both included): bins of
    ``step`` integers, ``[lo, lo + step)``, ..., the last one ending at ``hi + 1`` (so
    narrower when ``step`` does not divide the span): no bin reaches past the data."""
    lo, end = float(np.floor(lo)), float(np.floor(hi)) + 1
    step = max(1, int(np.ceil((end - lo) / bins)))
    edges = np.arange(lo, end, step, dtype=np.float64)
    return np.append(edges, end)


def _int_range(a: float, b: float) -> str:
    """The integers of the bin ``[a, b)``: ``"a"`` or ``"a-(b-1)"``."""
    return _fmt(a) if b - a <= 1 else f"{_fmt(a)}-{_fmt(b - 1)}"


def _axis_labels(edges: np.ndarray, lo: float, hi: float, integer: bool, left: float, pw: float):
    """``(x, value, anchor)`` of the three x-axis labels: the data's minimum at the left end,
    its maximum at the right end and the value under the middle, never beyond the data
    (integer bins: the axis runs from ``lo`` to ``hi + 1``, the last bin holding ``hi``)."""
    mid = (edges[0] + edges[-1]) / 2
    if integer:
        mid = min(float(np.floor(mid)), hi)
    return ((left, lo, "start"), (left + pw / 2, mid, "middle"), (left + pw, hi, "end"))


def histogram_svg(values: Sequence[float] | np.ndarray, title: str, unit: str = "", bins: int = 30,
                  integer: bool = False, width: int = 440, height: int = 170) -> str:
    """An SVG bar chart of the histogram of ``values``.

    Args:
        values: finite numbers (NaN and inf are left out). title: shown above the bars.
        unit: appended to the x-axis labels. bins: number of bars (fewer for a few
            integers). integer: bins on whole numbers (counts per identity).
    Returns:
        a self-contained ``<svg>`` element (text), or a ``<p>`` saying there is no data.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return f'<p class="nodata">{title}: no data</p>'
    lo, hi = float(v.min()), float(v.max())
    if integer:
        edges = integer_edges(lo, hi, bins)
    else:
        if hi <= lo:
            hi = lo + 1e-6
        edges = np.linspace(lo, hi, bins + 1)
    counts, edges = np.histogram(v, bins=edges)
    top = max(1, int(counts.max()))
    left, bottom, pad = 44, 28, 22
    pw, ph = width - left - 8, height - bottom - pad
    span = edges[-1] - edges[0]
    xs = [left + pw * (e - edges[0]) / span for e in edges.tolist()]  # bars as wide as their bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="hist" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{title}">',
             f'<text x="{left}" y="14" class="t">{title} (n={v.size})</text>',
             f'<line x1="{left}" y1="{pad + ph}" x2="{left + pw}" y2="{pad + ph}" class="ax"/>',
             f'<line x1="{left}" y1="{pad}" x2="{left}" y2="{pad + ph}" class="ax"/>',
             f'<text x="{left - 4}" y="{pad + 8}" class="yl">{top}</text>',
             f'<text x="{left - 4}" y="{pad + ph}" class="yl">0</text>']
    for i, c in enumerate(counts.tolist()):
        if c:
            h = ph * c / top
            rng = _int_range(edges[i], edges[i + 1]) if integer else f"{_fmt(edges[i])}-{_fmt(edges[i + 1])}"
            parts.append(f'<rect x="{xs[i] + 0.5:.1f}" y="{pad + ph - h:.1f}" width="{max(xs[i + 1] - xs[i] - 1, 1):.1f}" '
                         f'height="{h:.1f}"><title>{rng}{unit}: {c}</title></rect>')
    for x, val, anchor in _axis_labels(edges, lo, hi, integer, left, pw):
        parts.append(f'<text x="{x:.1f}" y="{pad + ph + 16}" class="xl" text-anchor="{anchor}">{_fmt(val)}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def box_side(box: Optional[Sequence[float]]) -> float:
    """Side of a face box ``[x1, y1, x2, y2]`` (pixels): ``sqrt(width * height)``; NaN if None."""
    if box is None or len(box) < 4:
        return float("nan")
    w, h = max(0.0, box[2] - box[0]), max(0.0, box[3] - box[1])
    return float(np.sqrt(w * h))
