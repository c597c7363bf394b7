"""The sweep's summary: the L0/FVU Pareto frontier and `pareto.png`. No Ray here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from raysae import storage


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (both minimised),
    ordered by the first coordinate."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def frontier_axis(metric: str) -> str:
    """The quality axis against L0: explained variance when the sweep ranks by it, else FVU."""
    return "explained_variance" if metric == "explained_variance" else "fvu"


def pareto_rows(rows: Sequence[Mapping[str, Any]], y: str) -> tuple[list[Mapping[str, Any]], list[int]]:
    """(the rows with numbers for L0 and `y`, the indices among them on the L0/`y` frontier)."""
    done = [r for r in rows if isinstance(r.get("l0"), (int, float)) and isinstance(r.get(y), (int, float))]
    points = [(float(r["l0"]), float(r[y]) if y != "explained_variance" else -float(r[y])) for r in done]
    return done, pareto_front(points)


def best_row(rows: Sequence[Mapping[str, Any]], metric: str, mode: str) -> Mapping[str, Any] | None:
    """The row with the lowest (`mode` min) or highest `metric`; None when no row has it."""
    ranked = [r for r in rows if metric in r]
    if not ranked:
        return None
    return (min if mode == "min" else max)(ranked, key=lambda r: r[metric])


def write_pareto(rows: Sequence[Mapping[str, Any]], path: storage.Location, *, y: str = "fvu") -> str | None:
    """L0 against `y` for every finished SAE, coloured by architecture, the frontier joined.

    Returns the file, or None when no row has both numbers.
    """
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
    with storage.staged_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return str(path)
