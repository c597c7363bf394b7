"""Numbers into what the templates draw: histogram bars (inline SVG geometry),
token shading, compact number formats. Templates escape every string they print;
nothing here builds HTML."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# Tokens are drawn on an orange scale: alpha = activation / the feature's max.
SHADE_RGB = "255, 140, 0"


def token_shade(value: float | None, peak: float) -> str:
    """CSS background for a token whose activation is `value` (None/NaN: padding)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or peak <= 0 or value <= 0:
        return "transparent"
    return f"rgba({SHADE_RGB}, {min(value / peak, 1.0):.3f})"


def token_text(text: str) -> str:
    """A token as shown: line breaks and tabs made visible, so the shading has a width."""
    return text.replace("\r", "").replace("\n", "↵").replace("\t", "⇥") or "∅"


def number(x: Any, digits: int = 3) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return "—" if x is None else str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if x == 0 or math.isnan(x):
        return f"{x:g}"
    return f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.{digits - 1}e}"


def frequency(x: float | None) -> str:
    """A firing frequency as a percentage and as '1 in N tokens'."""
    if not x:
        return "never fired" if x == 0 else "—"
    return f"{x * 100:.3g}% (1 in {1 / x:,.0f} tokens)"


def histogram_bars(
    edges: Sequence[float], counts: Sequence[int], *, width: int = 560, height: int = 140, log_x: bool = False
) -> dict[str, Any]:
    """Rectangles (x, y, w, h, label) for an SVG bar chart of `counts` over `edges`,
    plus the axis' end labels; bar heights are relative to the tallest bar."""
    n = len(counts)
    tallest = max(counts) if n else 0
    bars = []
    for i, c in enumerate(counts):
        h = 0 if tallest == 0 else max(1.0, c / tallest * (height - 4)) if c else 0.0
        lo, hi = edges[i], edges[i + 1]
        span = f"10^{lo:.2f} – 10^{hi:.2f}" if log_x else f"{number(lo)} – {number(hi)}"
        bars.append(
            {
                "x": round(i * width / n, 2),
                "w": round(max(width / n - 1, 1), 2),
                "y": round(height - h, 2),
                "h": round(h, 2),
                "label": f"{span}: {c:,}",
            }
        )
    ends = (edges[0], edges[-1]) if n else (0, 0)
    labels = tuple(f"1e{v:g}" if log_x else number(v) for v in ends)
    return {"bars": bars, "width": width, "height": height, "left": labels[0], "right": labels[1]}
