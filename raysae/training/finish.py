"""The end of training: evaluate a trained SAE on held-out activations and save it, with its
metrics, in the run directory (`saes/<sae_id>/`, SAELens format, plus `saebench_core.json`:
the metrics in SAEBench's core eval output layout, `raysae.metrics.saebench`).

An SAE whose quality metrics are not all finite is not saved: its row gets an `error`
(so it is never marked finished, ranked or analysed) saying whether the held-out
activations themselves hold NaN/Inf, and how to get a good result once they are fixed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from raysae.checkpoint import read_saelens_cfg, save_sae, write_json_beside
from raysae.config import RaysaeConfig
from raysae.metrics.evaluate import Evaluation, evaluate_in_detail
from raysae.metrics.multilayer import evaluate_layers
from raysae.metrics.saebench import SAEBENCH_CORE_FILE, saebench_core_output
from raysae.models import MultiLayerDictionary, SparseAutoencoder
from raysae.run_dir import RunDir
from raysae.training.batch import Batch, first_rows, nonfinite_rows

FINITE_METRICS = ("mse", "fvu", "explained_variance", "l0", "dead_fraction", "dense_fraction", "kl_sae")
"""The metrics an SAE must have as finite numbers to count as trained. `ce_loss_recovered` is not
among them: it is NaN by definition when splicing in zeros does not change the loss."""


class NonFiniteRows:
    """The held-out batches as evaluation reads them, counting the rows that hold NaN or Inf."""

    def __init__(self, batches: Iterable[Batch], max_tokens: int):
        self.batches, self.max_tokens = batches, max_tokens
        self.rows = self.bad_rows = 0

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.batches:
            bad = nonfinite_rows(first_rows(batch, max(self.max_tokens - self.rows, 0)))
            self.rows += len(bad)
            self.bad_rows += int(bad.sum())
            yield batch


def nonfinite_problem(metrics: Mapping[str, Any], rows: NonFiniteRows, config: RaysaeConfig) -> str | None:
    """Why an SAE with these metrics is not a result, or None when they are all finite."""
    bad = [k for k in FINITE_METRICS if isinstance(metrics.get(k), float) and not math.isfinite(metrics[k])]
    if not bad:
        return None
    values = ", ".join(f"{k}={metrics[k]}" for k in bad)
    if rows.bad_rows:
        source = (
            f"the activation cache under {config.activations.cache_dir} (delete its "
            f"{config.model.hook_point} tokens cache and rerun `python -m raysae.generate`, which refuses "
            "to write non-finite rows)"
            if config.activations.source == "cache"
            else f"the live activations of {config.model.name} at {config.model.hook_point}"
        )
        cause = (
            f"{rows.bad_rows} of {rows.rows} held-out activation rows hold NaN or Inf; fix {source}, "
            "then rerun: the trained SAE is evaluated again from its final checkpoint (a sweep keeps "
            "the trials it finished: delete the run's tune/ folder first)"
        )
    else:
        cause = (
            "the held-out activations are finite, so the SAE itself gives non-finite values; "
            "to train it again, delete its folder under checkpoints/ in the run directory"
        )
    return f"non-finite {values} on the held-out activations, so the SAE was not saved: {cause}"


def finish_sae(
    sae: SparseAutoencoder | MultiLayerDictionary,
    held_out: Iterable[Batch],
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
    A row with an `error` (a non-finite metric) is an SAE that was not saved.
    """
    rows = NonFiniteRows(held_out, config.train.eval_tokens)
    if isinstance(sae, MultiLayerDictionary):
        return _finish_multilayer(sae, rows, config, sae_id, seconds, tokens, extra_metrics, record)
    evaluation = evaluate_in_detail(
        sae, rows, dense_threshold=config.train.dense_threshold, max_tokens=config.train.eval_tokens
    )
    metrics = evaluation.metrics
    metrics.update(extra_metrics or {})
    tokens = config.train.total_tokens if tokens is None else tokens
    row = {"sae_id": sae_id, "architecture": sae.architecture}
    problem = nonfinite_problem(metrics, rows, config)
    if problem is not None:
        return {**row, "error": problem, "tokens": tokens, "seconds": round(seconds, 1)}
    full_record = {"metrics": metrics, "tokens": tokens, "seconds": seconds, **(record or {})}
    directory = save_sae(
        sae,
        RunDir.of(config).sae(sae_id),
        config=config,
        feature_frequency=evaluation.frequency,
        record=full_record,
    )
    write_saebench_core(
        directory, evaluation, config, sae, sae_id, tokens=tokens, ce=(record or {}).get("ce")
    )
    return {**row, **metrics, "tokens": tokens, "seconds": round(seconds, 1)}


def _finish_multilayer(
    sae: MultiLayerDictionary,
    rows: NonFiniteRows,
    config: RaysaeConfig,
    sae_id: str,
    seconds: float,
    tokens: int | None,
    extra_metrics: Mapping[str, float] | None,
    record: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """`finish_sae` for a CLT or crosscoder: pooled and per-layer metrics (`evaluate_layers`);
    SAEBench's core layout describes one hook, so there is no `saebench_core.json`."""
    metrics = evaluate_layers(
        sae,
        rows,
        layers=config.model.layers,
        dense_threshold=config.train.dense_threshold,
        max_tokens=config.train.eval_tokens,
    )
    metrics.update(extra_metrics or {})
    tokens = config.train.total_tokens if tokens is None else tokens
    row = {"sae_id": sae_id, "architecture": sae.architecture, "kind": sae.kind}
    problem = nonfinite_problem(metrics, rows, config)
    if problem is not None:
        return {**row, "error": problem, "tokens": tokens, "seconds": round(seconds, 1)}
    full_record = {"metrics": metrics, "tokens": tokens, "seconds": seconds, **(record or {})}
    save_sae(sae, RunDir.of(config).sae(sae_id), config=config, record=full_record)
    return {**row, **metrics, "tokens": tokens, "seconds": round(seconds, 1)}


def write_saebench_core(
    directory: str | os.PathLike,
    evaluation: Evaluation,
    config: RaysaeConfig,
    sae: SparseAutoencoder,
    sae_id: str,
    *,
    tokens: int,
    ce: Mapping[str, Any] | None,
) -> str:
    """`<directory>/saebench_core.json`: the evaluation in SAEBench's core output layout, with
    the CE / KL values of `ce` (`ce_loss_recovered`'s dict) when they were computed."""
    eval_config = {
        "model_name": config.model.name,
        **({"dataset": config.data.path} if config.data.path is not None else {}),
        "context_size": config.data.context_size,
        "llm_dtype": config.model.dtype,
    }
    raysae = {
        "sae_id": sae_id,
        "architecture": sae.architecture,
        "hook_point": config.model.hook_point,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "tokens_trained": tokens,
        "relative_reconstruction_bias": "over all evaluated tokens, not a mean of per-batch ratios",
    }
    document = saebench_core_output(
        evaluation.metrics,
        evaluation.frequency,
        evaluation.latents,
        eval_config=eval_config,
        sae_cfg_dict=read_saelens_cfg(directory),
        ce=ce if isinstance(ce, Mapping) else None,
        unstructured={"raysae": raysae},
    )
    return write_json_beside(directory, SAEBENCH_CORE_FILE, document)
