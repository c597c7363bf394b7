"""SAEBench's core eval output (`sae_bench/evals/core/eval_output.py`, `CoreEvalOutput`)
from an evaluation: the document `saebench_core.json` next to each saved SAE holds.

The layout is SAEBench's: `eval_type_id` "core", `eval_config`, `eval_id`,
`datetime_epoch_millis`, `eval_result_metrics` by category (`model_behavior_preservation`,
`model_performance_preservation`, `reconstruction_quality`, `shrinkage`, `sparsity`,
`token_stats`, `misc_metrics`), `eval_result_details` (one entry per latent),
`sae_cfg_dict` and `eval_result_unstructured`. Whatever we did not compute is left out, never
filled in: a category without a value (KL and CE without a language model in the loop), a
latent statistic SAEBench takes per prompt (`consistent_activation_heuristic`), its legacy
explained variance, the token count of the CE evaluation, and the SAEBench / SAELens
identity fields (`sae_bench_commit_hash`, `sae_lens_id`, `sae_lens_release_id`,
`sae_lens_version`), which describe a run of SAEBench. Non-finite values are left out too
(SAEBench writes -1 for them). Where SAELens's and our definitions differ, SAELens's go in
(`mse_per_token` as `mse`, `explained_variance_saelens` as `explained_variance`).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from raysae.metrics.latents import LatentWeights

SAEBENCH_CORE_FILE = "saebench_core.json"
EVAL_TYPE_ID_CORE = "core"
DETAIL_DIGITS = 10
"""Per-latent values are rounded as SAEBench rounds them (`DEFAULT_FLOAT_PRECISION`)."""

# (SAEBench category, SAEBench name, our metric name)
CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("model_behavior_preservation", "kl_div_score", "kl_div_score"),
    ("model_behavior_preservation", "kl_div_with_ablation", "kl_zero"),
    ("model_behavior_preservation", "kl_div_with_sae", "kl_sae"),
    ("model_performance_preservation", "ce_loss_score", "ce_loss_recovered"),
    ("model_performance_preservation", "ce_loss_with_ablation", "ce_zero"),
    ("model_performance_preservation", "ce_loss_with_sae", "ce_sae"),
    ("model_performance_preservation", "ce_loss_without_sae", "ce_clean"),
    ("reconstruction_quality", "explained_variance", "explained_variance_saelens"),
    ("reconstruction_quality", "mse", "mse_per_token"),
    ("reconstruction_quality", "cossim", "cossim"),
    ("shrinkage", "l2_norm_in", "l2_norm_in"),
    ("shrinkage", "l2_norm_out", "l2_norm_out"),
    ("shrinkage", "l2_ratio", "l2_ratio"),
    ("shrinkage", "relative_reconstruction_bias", "relative_reconstruction_bias"),
    ("sparsity", "l0", "l0"),
    ("sparsity", "l1", "l1"),
    ("token_stats", "total_tokens_eval_sparsity_variance", "n_tokens"),
    ("misc_metrics", "freq_over_1_percent", "freq_over_1_percent"),
    ("misc_metrics", "freq_over_10_percent", "freq_over_10_percent"),
    ("misc_metrics", "normalized_freq_over_1_percent", "normalized_freq_over_1_percent"),
    ("misc_metrics", "normalized_freq_over_10_percent", "normalized_freq_over_10_percent"),
    ("misc_metrics", "average_max_encoder_cosine_sim", "average_max_encoder_cosine_sim"),
    ("misc_metrics", "average_max_decoder_cosine_sim", "average_max_decoder_cosine_sim"),
    ("misc_metrics", "frac_alive", "frac_alive"),
)


def _known(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def downstream_metrics(metrics: Mapping[str, Any], ce: Mapping[str, Any] | None) -> dict[str, float]:
    """The CE / KL values we have (`raysae.metrics.downstream.ce_loss_recovered`'s dict, or
    just the `ce_loss_recovered` / `kl_sae` the metrics carry), plus SAEBench's
    `kl_div_score = (kl_zero - kl_sae) / kl_zero` when both KLs are known."""
    names = ("ce_loss_recovered", "ce_zero", "ce_sae", "ce_clean", "kl_zero", "kl_sae")
    known = {k: metrics[k] for k in names if _known(metrics.get(k))}
    known.update({k: ce[k] for k in names if ce is not None and _known(ce.get(k))})
    if "kl_zero" in known and "kl_sae" in known and known["kl_zero"] != 0:
        known["kl_div_score"] = (known["kl_zero"] - known["kl_sae"]) / known["kl_zero"]
    return known


def _details(frequency: Tensor, latents: LatentWeights | None) -> list[dict[str, Any]]:
    columns: dict[str, Tensor] = {"feature_density": frequency.double().cpu()}
    if latents is not None:
        optional = {
            "encoder_bias": latents.encoder_bias,
            "encoder_norm": latents.encoder_norm,
            "encoder_decoder_cosine_sim": latents.encoder_decoder_cosine_sim,
            "max_decoder_cosine_sim": latents.max_decoder_cosine_sim,
            "max_encoder_cosine_sim": latents.max_encoder_cosine_sim,
        }
        columns.update({k: v for k, v in optional.items() if v is not None})
    lists = {k: v.tolist() for k, v in columns.items()}
    return [
        {"index": i, **{k: round(v[i], DETAIL_DIGITS) for k, v in lists.items() if math.isfinite(v[i])}}
        for i in range(len(frequency))
    ]


def saebench_core_output(
    metrics: Mapping[str, Any],
    frequency: Tensor,
    latents: LatentWeights | None,
    *,
    eval_config: Mapping[str, Any],
    sae_cfg_dict: Mapping[str, Any] | None = None,
    ce: Mapping[str, Any] | None = None,
    unstructured: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """SAEBench's `CoreEvalOutput` as a JSON-ready dict. `eval_config` holds the
    `CoreEvalConfig` fields the caller knows (model_name, dataset, context_size, llm_dtype);
    the `compute_*` flags are set here from what was computed."""
    values = {**{k: v for k, v in metrics.items() if _known(v)}, **downstream_metrics(metrics, ce)}
    categories: dict[str, dict[str, float]] = {}
    for category, name, ours in CATEGORIES:
        if ours in values:
            value = values[ours]
            categories.setdefault(category, {})[name] = int(value) if category == "token_stats" else value
    computed = {
        "compute_kl": "model_behavior_preservation" in categories,
        "compute_ce_loss": "model_performance_preservation" in categories,
        "compute_l2_norms": "shrinkage" in categories,
        "compute_sparsity_metrics": "sparsity" in categories,
        "compute_variance_metrics": "reconstruction_quality" in categories,
        "compute_featurewise_density_statistics": True,
        "compute_featurewise_weight_based_metrics": latents is not None,
    }
    out: dict[str, Any] = {
        "eval_type_id": EVAL_TYPE_ID_CORE,
        "eval_config": {**eval_config, **computed},
        "eval_id": str(uuid.uuid4()),
        "datetime_epoch_millis": int(time.time() * 1000),
        "eval_result_metrics": categories,
        "eval_result_details": _details(frequency, latents),
    }
    if sae_cfg_dict is not None:
        out["sae_cfg_dict"] = dict(sae_cfg_dict)
    out["eval_result_unstructured"] = dict(unstructured or {})
    return out
