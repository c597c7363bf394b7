import math

import numpy as np
import pytest
import torch

from raysae import build_sae
from raysae.metrics.latents import latent_weights, max_cosine_similarity
from tests.conftest import small_sae_config

R = 1 / math.sqrt(2)


def test_max_cosine_similarity_by_hand():
    # cos(e0, e1) = 0, cos(e0, e2) = cos(e1, e2) = -1/sqrt(2): a latent is never its own match
    vectors = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
    for block in (1, 2, 3, None):
        got = max_cosine_similarity(vectors, block_rows=block)
        np.testing.assert_allclose(got.numpy(), [0.0, 0.0, -R], atol=1e-7)


def test_blocks_equal_the_full_matrix():
    gen = torch.Generator().manual_seed(0)
    vectors = torch.randn(300, 16, generator=gen)
    vectors[7] = 0.0  # a zero row has cosine 0 with everything
    unit = vectors.double().numpy()
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    unit = np.divide(unit, norms, out=np.zeros_like(unit), where=norms > 0)
    full = unit @ unit.T
    np.fill_diagonal(full, -np.inf)
    for block in (1, 7, 64, 300):
        got = max_cosine_similarity(vectors, block_rows=block).numpy()
        np.testing.assert_allclose(got, full.max(axis=1), atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 rows"):
        max_cosine_similarity(vectors[:1])


def test_latent_weights_of_an_sae_by_hand():
    sae = build_sae(small_sae_config("standard", d_sae=3), 2)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, -1.0]]))  # columns e0, e1, e2
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 3.0]]))  # rows d0 = d1, d2
        sae.b_enc.copy_(torch.tensor([0.1, -0.2, 0.3]))
    w = latent_weights(sae)
    np.testing.assert_allclose(w.encoder_norm.numpy(), [1.0, 2.0, math.sqrt(2)], rtol=1e-12)
    assert w.encoder_decoder_cosine_sim is not None and w.encoder_bias is not None
    np.testing.assert_allclose(w.encoder_decoder_cosine_sim.numpy(), [1.0, 0.0, -R], atol=1e-12)
    np.testing.assert_allclose(w.encoder_bias.numpy(), [0.1, -0.2, 0.3], rtol=1e-6)
    assert w.result() == {
        "average_max_encoder_cosine_sim": pytest.approx((0 + 0 - R) / 3, abs=1e-7),
        "average_max_decoder_cosine_sim": pytest.approx((1 + 1 + 0) / 3, abs=1e-7),
    }
