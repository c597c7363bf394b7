"""Numbers into what the templates draw: histogram geometry (inline SVG, with axes and ticks),
token shading, number and frequency formats, column labels. Templates escape every string
they print; nothing here builds HTML."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# Tokens are drawn on an orange scale: alpha = activation / the feature's max.
SHADE_RGB = "255, 140, 0"

# The SAE list's metric columns: a human header (with its unit) and what it measures.
METRIC_LABELS = {
    "l0": ("L0", "active features per token"),
    "fvu": ("FVU", "fraction of variance unexplained (lower is better)"),
    "explained_variance": ("explained var.", "fraction of variance explained"),
    "ce_loss_recovered": ("CE recovered", "fraction of the cross-entropy loss gap recovered"),
    "ce_clean": ("CE clean", "the model's cross-entropy loss (nats/token)"),
    "ce_sae": ("CE spliced", "cross-entropy loss with the SAE spliced in (nats/token)"),
    "ce_zero": ("CE zero-ablated", "cross-entropy loss with the hook zeroed (nats/token)"),
    "kl_sae": ("KL spliced", "KL divergence from the clean next-token distribution (nats/token)"),
    "kl_zero": ("KL zero-ablated", "KL divergence with the hook zeroed (nats/token)"),
    "dead_fraction": ("dead at eval", "features that never fired on the evaluation tokens"),
    "dense_fraction": ("dense at eval", "features firing on more than 10% of the evaluation tokens"),
    "mse": ("MSE", "mean squared error per element"),
    "n_tokens": ("eval tokens", "tokens the metrics were computed on"),
}


def metric_label(name: str) -> tuple[str, str]:
    """(header, tooltip) of a metric column; unknown metrics keep their key as the header."""
    return METRIC_LABELS.get(name, (name.replace("_", " "), name))


def metric_value(name: str, x: Any) -> str:
    return percent(x) if name in ("dead_fraction", "dense_fraction") else number(x)


def model_name(name: str | None) -> str:
    """A model as the SAE list shows it: a local directory by its last part."""
    if not name:
        return "—"
    return name.rstrip("/").rsplit("/", 1)[-1] if name.startswith(("/", ".")) else name


def token_shade(value: float | None, peak: float) -> str:
    """CSS background for a token whose activation is `value` (None/NaN: padding)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or peak <= 0 or value <= 0:
        return "transparent"
    return f"rgba({SHADE_RGB}, {min(value / peak, 1.0):.3f})"


def token_text(text: str) -> str:
    """A token in running text: line breaks and tabs made visible, so the shading has a width."""
    return text.replace("\r", "").replace("\n", "↵").replace("\t", "⇥") or "∅"


def logit_token(text: str) -> str:
    """A token shown alone (logit tables, search results): its leading and trailing spaces
    as ␣, so " the" and "the" can be told apart."""
    core = text.strip(" ")
    lead = len(text) - len(text.lstrip(" "))
    trail = len(text) - len(text.rstrip(" ")) if core else 0
    return token_text("␣" * lead + core + "␣" * trail)


def number(x: Any, digits: int = 3) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return "—" if x is None else str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if x == 0 or math.isnan(x) or math.isinf(x):
        return f"{x:g}"
    return f"{x:.{digits}g}" if 1e-3 <= abs(x) < 1e5 else f"{x:.{digits - 1}e}"


def percent(x: Any) -> str:
    """A fraction as a percentage, the one way the browser shows a frequency."""
    if not isinstance(x, (int, float)) or isinstance(x, bool) or math.isnan(x):
        return "—" if x is None else str(x)
    if x == 0:
        return "0%"
    p = x * 100
    return f"{p:.3g}%" if abs(p) >= 1e-3 else f"{p:.2e}%"


def frequency(x: float | None) -> str:
    """A firing frequency as a percentage and as '1 in N tokens'."""
    if not x:
        return "never fired" if x == 0 else "—"
    return f"{percent(x)} (1 in {1 / x:,.0f} tokens)"


def nice_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Round tick values (1, 2, 5 × 10^k apart) inside [lo, hi], at most `most` of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(most - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12) + 0.0)  # + 0.0: no "-0"
        t += step
    return ticks


def _log_tick_label(exponent: float) -> str:
    """A tick of a log10-frequency axis, as the percentage it stands for."""
    return percent(10**exponent)


def histogram_bars(
    edges: Sequence[float],
    counts: Sequence[int],
    *,
    width: int = 560,
    height: int = 170,
    log_x: bool = False,
    unit: str = "",
) -> dict[str, Any]:
    """The geometry of an SVG bar chart of `counts` over `edges`, in a `width`×`height` viewBox:
    bars (x, y, w, h, label), x ticks (round values; for `log_x`, edges are log10 frequencies
    and ticks are labelled as percentages), y ticks (0, half and the tallest count) and the
    plot area. Bar heights are relative to the tallest bar; a non-empty bin is at least 1 unit
    tall so it stays visible. `unit`: what a count counts, for the bars' tooltips."""
    left, right, top, bottom = 46, 20, 8, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(counts)
    lo, hi = (float(edges[0]), float(edges[-1])) if n else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0

    def x_at(v: float) -> float:
        return round(left + (v - lo) / span * plot_w, 2)

    tallest = max(counts) if n else 0
    bars = []
    for i, c in enumerate(counts):
        h = 0.0 if tallest == 0 or not c else max(1.0, c / tallest * plot_h)
        a, b = float(edges[i]), float(edges[i + 1])
        where = f"{percent(10**a)} – {percent(10**b)}" if log_x else f"{number(a)} – {number(b)}"
        bars.append(
            {
                "x": x_at(a),
                "w": round(max(x_at(b) - x_at(a) - 1, 1), 2),
                "y": round(top + plot_h - h, 2),
                "h": round(h, 2),
                "label": f"{where}: {c:,}{' ' + unit if unit else ''}",
            }
        )
    if log_x:
        values = [float(e) for e in range(math.ceil(lo), math.floor(hi) + 1)] or [lo]
        x_ticks = [{"x": x_at(v), "label": _log_tick_label(v)} for v in values]
    else:
        x_ticks = [{"x": x_at(v), "label": number(v)} for v in nice_ticks(lo, hi)]
    y_values = sorted({0, tallest // 2, tallest}) if tallest else [0]
    y_ticks = [
        {"y": round(top + plot_h - (v / tallest * plot_h if tallest else 0), 2), "label": f"{v:,}"}
        for v in y_values
    ]
    return {
        "bars": bars,
        "width": width,
        "height": height,
        "plot": {"x": left, "y": top, "w": plot_w, "h": plot_h, "bottom": top + plot_h},
        "x_ticks": x_ticks,
        "y_ticks": y_ticks,
        "empty": tallest == 0,
    }
