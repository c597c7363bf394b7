"""Decoder logit attribution against the model's own final norm and unembedding."""

import numpy as np
import pytest
import torch

from raysae.activations.language_model import load_model
from raysae.analysis.logits import Unembedding, decoder_logits, model_unembedding
from raysae.config import ModelConfig


def test_decoder_logits_rank_tokens_as_norm_then_unembed_does(tokenizer_dir):
    model = load_model(
        ModelConfig(name="random", tokenizer=str(tokenizer_dir), random={"d_model": 32, "n_layers": 1})
    )
    unembed = model_unembedding(model)
    assert unembed.centre  # the random TL-native model has a LayerNorm
    W_dec = torch.randn(20, 32)
    top_ids, top_vals, bottom_ids, bottom_vals, _, _ = decoder_logits(W_dec, unembed, 5, chunk=7)
    with torch.no_grad():
        # What the model does to a residual vector x, minus what it does to 0: the
        # direction's own effect, scaled by the norm's positive 1/std(x).
        through = model.unembed(model.ln_final(W_dec[:, None])) - model.unembed(
            model.ln_final(torch.zeros(1, 1, 32))
        )
        through = through[:, 0]
    expected = through.topk(5, dim=-1)
    assert (torch.as_tensor(top_ids) == expected.indices).all()
    assert (torch.as_tensor(bottom_ids) == through.topk(5, dim=-1, largest=False).indices).all()
    ratio = expected.values / torch.as_tensor(top_vals)
    assert (ratio > 0).all()
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4, atol=0)
    x = W_dec - W_dec.mean(-1, keepdim=True)
    torch.testing.assert_close(ratio[:, 0], 1 / torch.sqrt(x.pow(2).mean(-1) + 1e-5), rtol=1e-4, atol=0)


@pytest.mark.parametrize("centre", [True, False])
def test_logit_histograms_equal_numpy_on_brute_force_logits(centre):
    rng = np.random.default_rng(3)
    W_U, weight = rng.normal(size=(24, 301)), rng.uniform(0.5, 2, 24)
    W_dec = rng.normal(size=(23, 24)).astype(np.float32)
    W_dec[5] = 0  # a dead row: every logit 0, binned as np.histogram bins a constant
    unembed = Unembedding(torch.as_tensor(W_U, dtype=torch.float32), torch.as_tensor(weight).float(), centre)
    got = decoder_logits(torch.as_tensor(W_dec), unembed, 4, bins=13, chunk=10)
    rows = W_dec.astype(np.float64)
    rows = (rows - rows.mean(-1, keepdims=True) if centre else rows) * weight
    logits = rows @ W_U  # float64, with no torch
    assert got.counts.shape == (23, 13) and got.edges.shape == (23, 14)
    assert (got.counts.sum(1) == 301).all()
    for i in range(23):
        counts, edges = np.histogram(logits[i], bins=13)
        np.testing.assert_allclose(got.edges[i], edges, rtol=1e-5, atol=1e-4)  # float32 matmul
        np.testing.assert_array_equal(got.counts[i], counts)
    live = np.arange(23) != 5  # the dead row's logits all tie
    np.testing.assert_array_equal(got.top_ids[live], np.argsort(-logits, axis=1)[live, :4])
