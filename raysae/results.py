"""The run directory's tables (DESIGN.md §4): `config.yaml` and `results.csv`."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from raysae.config import RaysaeConfig, dump_config

LEADING_COLUMNS = ["sae_id", "architecture"]
METRIC_COLUMNS = [
    "mse", "fvu", "explained_variance", "l0", "dead_fraction", "ce_loss_recovered", "tokens", "seconds",
]


def run_dir(config: RaysaeConfig) -> Path:
    return Path(config.output_dir) / config.name


def write_config(config: RaysaeConfig, directory: str | os.PathLike) -> Path:
    """The fully resolved config, credentials redacted."""
    path = Path(directory) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_config(config))
    return path


def write_results(rows: Iterable[Mapping[str, Any]], directory: str | os.PathLike) -> Path:
    """One row per SAE: id and architecture, swept hyperparameters, then the metrics.

    Columns that are neither leading nor metrics (the swept hyperparameters) go
    in between, in first-seen order; a value a row lacks is left empty.
    """
    rows = list(rows)
    extra: list[str] = []
    for row in rows:
        extra += [k for k in row if k not in LEADING_COLUMNS + METRIC_COLUMNS + extra]
    columns = LEADING_COLUMNS + extra + METRIC_COLUMNS
    path = Path(directory) / "results.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path
