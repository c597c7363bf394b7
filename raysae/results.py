"""The run directory's tables (DESIGN.md §4): `config.yaml` and `results.csv`."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

from raysae import storage
from raysae.config import ConfigError, RaysaeConfig, dump_config

LEADING_COLUMNS = ["sae_id", "architecture"]
METRIC_COLUMNS = [
    "mse",
    "fvu",
    "explained_variance",
    "l0",
    "dead_fraction",
    "ce_loss_recovered",
    "tokens",
    "seconds",
]


def finish_sae(
    sae,
    held_out: Iterable,
    config: RaysaeConfig,
    sae_id: str,
    *,
    seconds: float,
    tokens: int | None = None,
    extra_metrics: Mapping[str, float] | None = None,
    record: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a trained SAE on held-out batches, save it under the run directory,
    and return its `results.csv` row. `tokens` trained defaults to the budget.
    """
    from raysae.checkpoint import save_sae
    from raysae.metrics import evaluate_with_frequency

    metrics, frequency = evaluate_with_frequency(
        sae, held_out, dense_threshold=config.train.dense_threshold, max_tokens=config.train.eval_tokens
    )
    metrics.update(extra_metrics or {})
    tokens = config.train.total_tokens if tokens is None else tokens
    full_record = {"metrics": metrics, "tokens": tokens, "seconds": seconds, **(record or {})}
    save_sae(
        sae,
        storage.join(run_dir(config), "saes", sae_id),
        config=config,
        feature_frequency=frequency,
        record=full_record,
    )
    return {
        "sae_id": sae_id,
        "architecture": sae.architecture,
        **metrics,
        "tokens": tokens,
        "seconds": round(seconds, 1),
    }


def format_results(rows: Iterable[Mapping[str, Any]], columns: Mapping[str, str]) -> str:
    """A fixed-width table of `rows`: `columns` maps a row key to its format spec."""
    header = f"{'sae_id':<24}" + "".join(f"{key:>{max(len(key), 9) + 1}}" for key in columns)
    lines = [header]
    for row in rows:
        cells = "".join(f"{format(row[k], spec):>{max(len(k), 9) + 1}}" for k, spec in columns.items())
        lines.append(f"{row['sae_id']:<24}{cells}")
    return "\n".join(lines)


def summary_table(rows: Iterable[Mapping[str, Any]], leading: Mapping[str, str]) -> str:
    """The terminal summary of finished SAEs: the `leading` columns, then L0, dead fraction,
    CE-loss recovered (when every row has it) and seconds."""
    rows = list(rows)
    columns = {**leading, "l0": ".1f", "dead_fraction": ".3f"}
    if all("ce_loss_recovered" in r for r in rows):
        columns["ce_loss_recovered"] = ".3f"
    return format_results(rows, {**columns, "seconds": ".1f"})


def run_dir(config: RaysaeConfig) -> str:
    """`<output_dir>/<name>`: a path, or a URI when `output_dir` is one."""
    return storage.join(config.output_dir, config.name)


def check_run_storage(config: RaysaeConfig, *, analysis: bool = True) -> None:
    """Before any work: a run directory on an object store holds files only, so MLflow (and,
    when the run analyses, the feature store) must be servers, not the local defaults."""
    from raysae.distributed.tracking import tracking_uri
    from raysae.store import embedded_store_problem

    problems = []
    try:
        tracking_uri(config)
    except ConfigError as exc:
        problems += exc.problems
    store = embedded_store_problem(config, storage.join(run_dir(config), "store")) if analysis else None
    if store:
        problems.append(store)
    if problems:
        raise ConfigError(problems)


def write_config(config: RaysaeConfig, directory: storage.Location) -> str:
    """The fully resolved config, credentials redacted."""
    path = storage.join(directory, "config.yaml")
    storage.write_bytes(path, dump_config(config).encode())
    return path


def write_results(rows: Iterable[Mapping[str, Any]], directory: storage.Location) -> str:
    """One row per SAE: id and architecture, swept hyperparameters, then the metrics.

    Swept hyperparameters are the dotted config paths (`sae.k`); they go between
    the leading columns and the metrics. Any other column (more metrics, an
    `error`) goes last. Columns keep first-seen order; a value a row lacks is
    left empty.
    """
    rows = list(rows)
    seen: list[str] = []
    for row in rows:
        seen += [k for k in row if k not in LEADING_COLUMNS + METRIC_COLUMNS + seen]
    swept = [k for k in seen if "." in k]
    columns = LEADING_COLUMNS + swept + METRIC_COLUMNS + [k for k in seen if k not in swept]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    path = storage.join(directory, "results.csv")
    storage.write_bytes(path, text.getvalue().encode())
    return path


def read_results(path: storage.Location) -> list[dict[str, Any]]:
    """The rows of a `results.csv`, metrics as floats, empty cells left out."""
    text = storage.read_bytes(path).decode()
    return [
        {k: float(v) if k in METRIC_COLUMNS else v for k, v in row.items() if v not in ("", None)}
        for row in csv.DictReader(io.StringIO(text, newline=""))
    ]
