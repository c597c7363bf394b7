"""The end of training: evaluate a trained SAE on held-out activations and save it, with its
metrics, in the run directory (`saes/<sae_id>/`, SAELens format)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor

from raysae.checkpoint import save_sae
from raysae.config import RaysaeConfig
from raysae.metrics import evaluate_with_frequency
from raysae.models import SparseAutoencoder
from raysae.run_dir import RunDir


def finish_sae(
    sae: SparseAutoencoder,
    held_out: Iterable[Tensor],
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
    metrics, frequency = evaluate_with_frequency(
        sae, held_out, dense_threshold=config.train.dense_threshold, max_tokens=config.train.eval_tokens
    )
    metrics.update(extra_metrics or {})
    tokens = config.train.total_tokens if tokens is None else tokens
    full_record = {"metrics": metrics, "tokens": tokens, "seconds": seconds, **(record or {})}
    save_sae(
        sae, RunDir.of(config).sae(sae_id), config=config, feature_frequency=frequency, record=full_record
    )
    return {
        "sae_id": sae_id,
        "architecture": sae.architecture,
        **metrics,
        "tokens": tokens,
        "seconds": round(seconds, 1),
    }
