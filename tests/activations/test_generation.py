"""Activations from the Ray Data pipeline equal a direct forward of the same model."""

import numpy as np
import pytest
import torch

from raysae.activations import (
    generate_caches,
    hook_activations,
    load_model,
    pack_contexts,
    read_cache,
    stop_layer,
)
from raysae.activations.language_model import load_tokenizer
from raysae.config import ConfigError


def direct(cfg, hooks, n_contexts):
    """In-process forward, batch by batch as the actors do."""
    model = load_model(cfg.model)
    tokens = pack_contexts(cfg.data, load_tokenizer(cfg.model.tokenizer), n_contexts)
    out = {h: [] for h in hooks}
    step = cfg.activations.model_batch_size
    for i in range(0, len(tokens), step):
        acts = hook_activations(model, torch.as_tensor(tokens[i : i + step], dtype=torch.long), hooks)
        for h in hooks:
            out[h].append(acts[h].numpy())
    return tokens, {h: np.concatenate(v) for h, v in out.items()}


def sorted_rows(rows):
    return rows[np.lexsort(rows.T[::-1])]


def test_pipeline_equals_direct_forward_exactly(tiny_config, ray_local):
    cfg = tiny_config(
        "activations.layouts=[contexts, tokens]", "model.extra_hook_points=[blocks.0.hook_mlp_out]"
    )
    hooks = ["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out"]
    dirs = generate_caches(cfg)
    n_ctx = cfg.activations.n_contexts
    tokens, ref = direct(cfg, hooks, max(n_ctx, 100))
    for hook in hooks:
        ctx = read_cache(dirs[(hook, "contexts")], seed=None).take_all()
        assert [r["context_id"] for r in ctx] == list(range(n_ctx))
        assert np.array_equal(np.stack([r["tokens"] for r in ctx]), tokens[:n_ctx])
        assert np.array_equal(np.stack([r["acts"] for r in ctx]), ref[hook][:n_ctx])
        rows = np.stack([r["acts"] for r in read_cache(dirs[(hook, "tokens")]).take_all()])
        expected = ref[hook][:, 1:].reshape(-1, 32)[: cfg.activations.n_tokens]  # BOS left out
        assert rows.shape == (1500, 32)
        assert np.array_equal(sorted_rows(rows), sorted_rows(expected))
        assert not np.array_equal(rows, expected)  # shuffled across contexts at write time


def test_stop_layer():
    assert stop_layer(["blocks.1.hook_resid_post"], 3) == 2
    assert stop_layer(["blocks.0.hook_mlp_out", "blocks.1.attn.hook_pattern"], 12) == 2
    assert stop_layer(["blocks.2.hook_resid_post"], 3) is None
    assert stop_layer(["hook_embed", "blocks.0.hook_resid_post"], 3) is None


def test_early_stop_gives_the_same_activations(tiny_config):
    cfg = tiny_config()
    model = load_model(cfg.model)
    tokens = torch.randint(0, 30, (2, 16), generator=torch.Generator().manual_seed(0))
    stopped = hook_activations(model, tokens, ["blocks.0.hook_resid_post"])["blocks.0.hook_resid_post"]
    _, cache = model.run_with_cache(
        tokens, names_filter=["blocks.0.hook_resid_post"], return_cache_object=False
    )
    assert torch.equal(stopped, cache["blocks.0.hook_resid_post"])


def test_model_errors_name_the_config_path(tiny_config):
    with pytest.raises(ConfigError, match="model.tokenizer"):
        load_model(tiny_config("model.tokenizer=null").model)
    with pytest.raises(ConfigError, match="model.random.d_vocab"):
        load_model(tiny_config("model.random.d_vocab=5").model)
    with pytest.raises(ConfigError, match="model.name"):
        load_model(tiny_config("model.name=/no/such/dir").model)
