"""Small inline SVG histograms (no plotting library): numbers in, an ``<svg>`` string out."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def _fmt(v: float) -> str:
    if abs(v) >= 10 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.2f}"


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
        lo, hi = np.floor(lo), np.floor(hi) + 1
        span = int(hi - lo)
        step = max(1, int(np.ceil(span / bins)))
        edges = np.arange(lo, hi + step, step, dtype=np.float64)
    else:
        if hi <= lo:
            hi = lo + 1e-6
        edges = np.linspace(lo, hi, bins + 1)
    counts, edges = np.histogram(v, bins=edges)
    top = max(1, int(counts.max()))
    left, bottom, pad = 44, 28, 22
    pw, ph = width - left - 8, height - bottom - pad
    bw = pw / len(counts)
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
            parts.append(f'<rect x="{left + i * bw + 0.5:.1f}" y="{pad + ph - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                         f'height="{h:.1f}"><title>{_fmt(edges[i])}-{_fmt(edges[i + 1])}{unit}: {c}</title></rect>')
    for x, val, anchor in ((left, edges[0], "start"), (left + pw / 2, (edges[0] + edges[-1]) / 2, "middle"),
                           (left + pw, edges[-1], "end")):
        parts.append(f'<text x="{x:.1f}" y="{pad + ph + 16}" class="xl" text-anchor="{anchor}">{_fmt(val)}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def box_side(box: Optional[Sequence[float]]) -> float:
    """Side of a face box ``[x1, y1, x2, y2]`` (pixels): ``sqrt(width * height)``; NaN if None."""
    if box is None or len(box) < 4:
        return float("nan")
    w, h = max(0.0, box[2] - box[0]), max(0.0, box[3] - box[1])
    return float(np.sqrt(w * h))
