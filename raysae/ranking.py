"""Ranking finished SAEs: the best by a metric, the L0/FVU Pareto frontier, and which SAEs
`analysis.which` picks. Plain Python over results rows; the sweep and the analysis both use it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def _number(value: Any) -> bool:
    """A finite number: a NaN or infinite metric never ranks (NaN compares false with everything,
    so `min` would pick it or skip it by where it stands)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


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
    done = [r for r in rows if _number(r.get("l0")) and _number(r.get(y))]
    points = [(float(r["l0"]), float(r[y]) if y != "explained_variance" else -float(r[y])) for r in done]
    return done, pareto_front(points)


def best_row(rows: Sequence[Mapping[str, Any]], metric: str, mode: str) -> Mapping[str, Any] | None:
    """The row with the lowest (`mode` min) or highest `metric`; None when no row has it as a
    finite number."""
    ranked = [r for r in rows if _number(r.get(metric))]
    if not ranked:
        return None
    return (min if mode == "min" else max)(ranked, key=lambda r: r[metric])


def select_saes(rows: Sequence[Mapping[str, Any]], which: str, metric: str, mode: str) -> list[str]:
    """The sae_ids `which` (`analysis.which`) picks among finished rows: the best by `metric`
    (`mode` min or max), the L0/FVU Pareto frontier, or all."""
    done = [r for r in rows if r.get("status", "finished") == "finished" and not r.get("error")]
    if which == "all":
        return [r["sae_id"] for r in done]
    if which == "best":
        best = best_row(done, metric, mode)
        return [best["sae_id"]] if best is not None else []
    points, front = pareto_rows(done, frontier_axis(metric))
    return [points[i]["sae_id"] for i in front]
