"""Paired caches: rows carrying the input and output hooks of one forward pass, shuffled together."""

import numpy as np
import torch

from raysae.activations import cache_key, generate_caches, live_dataset, load_model, read_cache, verify_cache
from raysae.activations.cache import key_inputs
from raysae.activations.language_model import hook_activations, tokenizer_for
from raysae.activations.tokens import pack_contexts

PAIR = ["model.hook_point_out=blocks.1.hook_mlp_out"]


def test_key_of_a_pair_differs_and_one_hook_key_is_unchanged(tiny_config):
    cfg = tiny_config()
    one = cache_key(cfg, "blocks.1.hook_resid_post", "tokens")
    assert cache_key(cfg, ["blocks.1.hook_resid_post"], "tokens") == one
    assert "hooks" not in key_inputs(cfg, "blocks.1.hook_resid_post", "tokens")
    ab = cache_key(cfg, ["blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"], "tokens")
    ba = cache_key(cfg, ["blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"], "tokens")
    assert len({one, ab, ba}) == 3


def test_paired_rows_are_the_two_hooks_of_one_token(tiny_config, ray_local):
    cfg = tiny_config(*PAIR, "activations.n_tokens=300")
    dirs = generate_caches(cfg)
    directory = dirs[("blocks.1.hook_resid_post", "tokens")]
    m = verify_cache(directory)
    assert [(h["name"], h["d"], h["column"]) for h in m["hooks"]] == [
        ("blocks.1.hook_resid_post", 32, "acts"),
        ("blocks.1.hook_mlp_out", 32, "acts_1"),
    ]
    rows = read_cache(directory, seed=None).take_all()
    x = np.stack([r["acts"] for r in rows])
    y = np.stack([r["acts_1"] for r in rows])
    assert x.shape == y.shape == (300, 32)
    # Direct: the model on the same contexts, BOS rows left out, then each cached x row's partner.
    n = int(np.ceil(300 / 15)) + 1
    tokens = torch.as_tensor(pack_contexts(cfg.data, tokenizer_for(cfg), n), dtype=torch.long)
    acts = hook_activations(
        load_model(cfg.model, device="cpu"), tokens, ["blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"]
    )
    dx = acts["blocks.1.hook_resid_post"][:, 1:].reshape(-1, 32).numpy()
    dy = acts["blocks.1.hook_mlp_out"][:, 1:].reshape(-1, 32).numpy()
    where = {r.tobytes(): i for i, r in enumerate(dx)}
    index = [where[r.tobytes()] if r.tobytes() in where else None for r in x]
    matched = [i for i in index if i is not None]
    assert len(matched) == 300, "every cached input row is a row the model computes"
    np.testing.assert_allclose(y, dy[matched], rtol=1e-5, atol=1e-5)
    live = tiny_config(*PAIR, "activations.n_tokens=300", "activations.source=live")
    b = [b for b in live_dataset(live).iter_batches(batch_format="numpy")]
    lx, ly = np.concatenate([i["acts"] for i in b]), np.concatenate([i["acts_1"] for i in b])
    order, lorder = np.lexsort(x.T[::-1]), np.lexsort(lx.T[::-1])
    assert np.array_equal(x[order], lx[lorder]) and np.array_equal(y[order], ly[lorder])
