"""`pareto.png`: L0 against FVU (or explained variance) for a sweep's finished SAEs. No Ray here."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from raysae.ranking import frontier_axis, pareto_rows


def pareto_png(rows: Sequence[Mapping[str, Any]], *, y: str = "fvu") -> bytes | None:
    """L0 against `y` for every finished SAE, coloured by architecture, the frontier joined,
    as PNG bytes; None when no row has both numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done, front = pareto_rows(rows, y)
    if not done:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
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
    ax.set_xlabel("L0 (active latents per token)")
    ax.set_ylabel(y.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    plt.close(fig)
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
