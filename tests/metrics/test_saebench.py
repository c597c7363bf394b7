import json
import math
from pathlib import Path

import pytest
import torch

from raysae import build_sae
from raysae.config import load_config
from raysae.metrics.saebench import SAEBENCH_CORE_FILE
from raysae.run_dir import RunDir
from raysae.training.finish import finish_sae

# SAEBench's CoreMetricCategories and their fields (sae_bench/evals/core/eval_output.py)
SAEBENCH_FIELDS = {
    "model_behavior_preservation": {"kl_div_score", "kl_div_with_ablation", "kl_div_with_sae"},
    "model_performance_preservation": {
        "ce_loss_score",
        "ce_loss_with_ablation",
        "ce_loss_with_sae",
        "ce_loss_without_sae",
    },
    "reconstruction_quality": {"explained_variance", "explained_variance_legacy", "mse", "cossim"},
    "shrinkage": {"l2_norm_in", "l2_norm_out", "l2_ratio", "relative_reconstruction_bias"},
    "sparsity": {"l0", "l1"},
    "token_stats": {"total_tokens_eval_reconstruction", "total_tokens_eval_sparsity_variance"},
    "misc_metrics": {
        "freq_over_1_percent",
        "freq_over_10_percent",
        "normalized_freq_over_1_percent",
        "normalized_freq_over_10_percent",
        "average_max_encoder_cosine_sim",
        "average_max_decoder_cosine_sim",
        "frac_alive",
    },
}
DETAIL_FIELDS = {
    "index",
    "feature_density",
    "consistent_activation_heuristic",
    "encoder_bias",
    "encoder_norm",
    "encoder_decoder_cosine_sim",
    "max_decoder_cosine_sim",
    "max_encoder_cosine_sim",
}
TOP_FIELDS = {
    "eval_type_id",
    "eval_config",
    "eval_id",
    "datetime_epoch_millis",
    "eval_result_metrics",
    "eval_result_details",
    "sae_bench_commit_hash",
    "sae_lens_id",
    "sae_lens_release_id",
    "sae_lens_version",
    "sae_cfg_dict",
    "eval_result_unstructured",
}


def strict_json(path: Path):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture
def finished(tmp_path):
    """`finish(sae_id, record)`: finish a small untrained TopK SAE; (results row, saebench_core.json)."""
    cfg = load_config(
        None, [f"output_dir={tmp_path}", "name=core", "sae.architecture=topk", "sae.d_sae=48", "sae.k=4"]
    )
    gen = torch.Generator().manual_seed(0)
    held_out = [torch.randn(300, 16, generator=gen) + 1.0 for _ in range(3)]

    def finish(sae_id: str, record=None):
        torch.manual_seed(0)
        sae = build_sae(cfg.sae, 16)
        row = finish_sae(sae, held_out, cfg, sae_id, seconds=1.0, tokens=900, record=record)
        return row, strict_json(Path(RunDir.of(cfg).sae(sae_id)) / SAEBENCH_CORE_FILE)

    return finish


def test_written_at_the_end_of_training_in_saebench_layout(finished):
    row, doc = finished("core/plain")
    assert set(doc) <= TOP_FIELDS
    assert doc["eval_type_id"] == "core" and isinstance(doc["eval_id"], str)
    assert isinstance(doc["datetime_epoch_millis"], int) and doc["datetime_epoch_millis"] > 1.7e12
    metrics = doc["eval_result_metrics"]
    for category, fields in metrics.items():
        assert set(fields) <= SAEBENCH_FIELDS[category], category
    # what we compute, under SAEBench's names and SAELens's definitions
    assert metrics["reconstruction_quality"] == {
        "explained_variance": row["explained_variance_saelens"],
        "mse": row["mse_per_token"],
        "cossim": row["cossim"],
    }
    assert metrics["shrinkage"]["relative_reconstruction_bias"] == row["relative_reconstruction_bias"]
    assert metrics["sparsity"] == {"l0": row["l0"], "l1": row["l1"]}
    assert metrics["token_stats"] == {"total_tokens_eval_sparsity_variance": 900}
    assert set(metrics["misc_metrics"]) == SAEBENCH_FIELDS["misc_metrics"]
    assert metrics["misc_metrics"]["frac_alive"] == row["frac_alive"]
    # never computed here, so never written: no CE/KL without a model, no legacy variance,
    # no per-prompt heuristic, no SAEBench run identity
    assert "model_behavior_preservation" not in metrics and "model_performance_preservation" not in metrics
    assert "explained_variance_legacy" not in metrics["reconstruction_quality"]
    assert not {"sae_bench_commit_hash", "sae_lens_id", "sae_lens_release_id", "sae_lens_version"} & set(doc)
    config = doc["eval_config"]
    assert config["compute_kl"] is False and config["compute_ce_loss"] is False
    assert config["model_name"] == "random" and config["context_size"] == 128 and "dataset" not in config
    # per latent
    details = doc["eval_result_details"]
    assert [d["index"] for d in details] == list(range(48))
    assert all(set(d) == DETAIL_FIELDS - {"consistent_activation_heuristic"} for d in details)
    assert sum(d["feature_density"] > 0 for d in details) / 48 == pytest.approx(row["frac_alive"])
    mean_max_dec = sum(d["max_decoder_cosine_sim"] for d in details) / 48
    assert mean_max_dec == pytest.approx(metrics["misc_metrics"]["average_max_decoder_cosine_sim"], abs=1e-9)
    assert doc["eval_result_unstructured"]["raysae"]["sae_id"] == "core/plain"


def test_cfg_dict_is_the_saved_cfg_json(finished, tmp_path):
    _, doc = finished("core/cfg")
    cfg_json = json.loads((tmp_path / "core" / "saes" / "core" / "cfg" / "cfg.json").read_text())
    assert doc["sae_cfg_dict"] == cfg_json


def test_ce_and_kl_go_in_when_computed(finished):
    ce = {
        "ce_clean": 2.0,
        "ce_sae": 2.5,
        "ce_zero": 6.0,
        "ce_loss_recovered": 0.875,
        "kl_sae": 0.3,
        "kl_zero": 1.2,
    }
    _, doc = finished("core/ce", record={"ce": ce})
    metrics = doc["eval_result_metrics"]
    assert metrics["model_performance_preservation"] == {
        "ce_loss_score": 0.875,
        "ce_loss_with_ablation": 6.0,
        "ce_loss_with_sae": 2.5,
        "ce_loss_without_sae": 2.0,
    }
    assert metrics["model_behavior_preservation"] == {
        "kl_div_score": pytest.approx((1.2 - 0.3) / 1.2),
        "kl_div_with_ablation": 1.2,
        "kl_div_with_sae": 0.3,
    }
    assert doc["eval_config"]["compute_kl"] is True and doc["eval_config"]["compute_ce_loss"] is True


def test_undefined_values_are_left_out(finished):
    ce = {
        "ce_clean": 2.0,
        "ce_sae": 2.0,
        "ce_zero": 2.0,
        "ce_loss_recovered": math.nan,
        "kl_sae": 0.0,
        "kl_zero": 0.0,
    }
    _, doc = finished("core/nan", record={"ce": ce})
    metrics = doc["eval_result_metrics"]
    assert "ce_loss_score" not in metrics["model_performance_preservation"]
    assert "kl_div_score" not in metrics["model_behavior_preservation"]  # 0 / 0
