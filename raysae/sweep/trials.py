"""A sweep's trials, decided up front: the search space expanded into points, grouped into trials.

Grid dimensions give their Cartesian product; `choice`, `uniform` and
`loguniform` are drawn with `sweep.seed`; the whole set repeats `num_samples`
times. Fixing the points before Ray Tune starts makes a rerun of the same
command see the same trials (so it can resume them) and lets a trial train
`saes_per_trial` of them as one population. No Ray here.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from raysae.config import RaysaeConfig, SearchDim, set_dotted, validate_config


def _draw(dim: SearchDim, rng: np.random.Generator) -> Any:
    if dim.kind == "choice":
        return dim.values[int(rng.integers(len(dim.values)))]
    low, high = dim.values
    if dim.kind == "uniform":
        return float(rng.uniform(low, high))
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def sample_points(cfg: RaysaeConfig) -> list[dict[str, Any]]:
    """Every SAE's swept values (dotted path -> value), in a fixed order."""
    space = cfg.sweep.search_space
    grid = [(path, dim.values) for path, dim in space.items() if dim.kind == "grid"]
    drawn = [(path, dim) for path, dim in space.items() if dim.kind != "grid"]
    rng = np.random.default_rng(cfg.sweep.seed)
    points = []
    for _ in range(cfg.sweep.num_samples):
        for combo in itertools.product(*(values for _, values in grid)):
            point = dict(zip((path for path, _ in grid), combo, strict=True))
            point.update({path: _draw(dim, rng) for path, dim in drawn})
            points.append(point)
    return points


def point_config(cfg: RaysaeConfig, point: dict[str, Any]) -> RaysaeConfig:
    """The sweep's base config with one point's values set (and no search space left)."""
    raw = cfg.model_dump(mode="json")
    raw["sweep"]["search_space"] = {}
    for path, value in point.items():
        set_dotted(raw, path, value)
    return validate_config(raw, source=f"sweep point {point}")


def trial_groups(cfg: RaysaeConfig) -> list[list[dict[str, Any]]]:
    """The points of each trial: `saes_per_trial` consecutive points per trial."""
    points = sample_points(cfg)
    k = cfg.sweep.saes_per_trial
    return [points[i : i + k] for i in range(0, len(points), k)]


def point_label(point: dict[str, Any], architecture: str) -> str:
    """What an SAE is, for people: its architecture and its other swept values (`topk sae.k=64`)."""
    swept = [f"{path}={_short(value)}" for path, value in point.items() if path != "sae.architecture"]
    return " ".join([architecture, *swept])


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
