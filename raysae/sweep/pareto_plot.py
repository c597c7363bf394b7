"""`pareto.png`: L0 against FVU (or explained variance) for a sweep's finished SAEs. No Ray here."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from raysae.config import RaysaeConfig
from raysae.ranking import frontier_axis, pareto_rows


def pareto_title(cfg: RaysaeConfig, rows: Sequence[Mapping[str, Any]]) -> str:
    """`<run>: <model>, <hook>, <tokens> tokens`: what the plot compares, readable on its own."""
    counts = sorted({int(r["tokens"]) for r in rows if isinstance(r.get("tokens"), (int, float))})
    if not counts:
        counts = [cfg.train.total_tokens]
    tokens = f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}-{counts[-1]:,}"
    return f"{cfg.name}: {cfg.model.name}, {cfg.model.hook_point}, {tokens} tokens"


def pareto_figure(rows: Sequence[Mapping[str, Any]], *, y: str = "fvu", title: str | None = None):
    """The plot as a matplotlib `Figure` (not drawn through pyplot, so nothing global is kept):
    L0 on a log axis (sweeps span k = 8 to 512 and more) against `y`, every finished SAE
    coloured by architecture, the frontier joined; None when no row has both numbers."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter

    done, front = pareto_rows(rows, y)
    if not done:
        return None
    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    ax = fig.add_subplot()
    for arch in sorted({str(r.get("architecture")) for r in done}):
        mine = [r for r in done if str(r.get("architecture")) == arch]
        ax.scatter([r["l0"] for r in mine], [r[y] for r in mine], label=arch, alpha=0.8)
    ax.plot([done[i]["l0"] for i in front], [done[i][y] for i in front], "k--", lw=1, label="frontier")
    for i in front:
        ax.annotate(
            str(done[i]["sae_id"]).split("/", 1)[-1],
            (done[i]["l0"], done[i][y]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    # Plain numbers (30, 100), not 3x10^1: the ticks read as k values do.
    ax.xaxis.set_major_formatter(LogFormatter())
    ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
    ax.set_xlabel("L0 (active latents per token, log scale)")
    ax.set_ylabel(y.replace("_", " "))
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig


def pareto_png(
    rows: Sequence[Mapping[str, Any]], *, y: str = "fvu", title: str | None = None
) -> bytes | None:
    """`pareto_figure` as PNG bytes; None when no row has both numbers."""
    fig = pareto_figure(rows, y=y, title=title)
    if fig is None:
        return None
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def sweep_document(
    name: str, rows: Sequence[Mapping[str, Any]], *, metric: str, mode: str, png: bytes | None
) -> dict[str, Any]:
    """The store's `sweeps` document of a sweep: its ranking, the L0/`y` points with the frontier
    marked, and the plot (`pareto_png`), so the browser needs nothing from the run directory."""
    y = frontier_axis(metric)
    done, front = pareto_rows(rows, y)
    on_front = {done[i]["sae_id"] for i in front}
    points = [
        {
            "sae_id": r["sae_id"],
            "architecture": r.get("architecture"),
            "l0": float(r["l0"]),
            y: float(r[y]),
            "frontier": r["sae_id"] in on_front,
        }
        for r in done
    ]
    return {"_id": name, "metric": metric, "mode": mode, "y": y, "points": points, "pareto_png": png}
