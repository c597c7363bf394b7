import numpy as np
import pytest
import torch

from raysae import build_sae, evaluate
from raysae.metrics.evaluate import evaluate_in_detail
from tests.conftest import small_sae_config

SAEBENCH_CORE = {
    "cossim",
    "l2_norm_in",
    "l2_norm_out",
    "l2_ratio",
    "relative_reconstruction_bias",
    "l1",
    "frac_alive",
    "freq_over_1_percent",
    "freq_over_10_percent",
    "normalized_freq_over_1_percent",
    "normalized_freq_over_10_percent",
    "average_max_encoder_cosine_sim",
    "average_max_decoder_cosine_sim",
    "mse_per_token",
    "explained_variance_saelens",
}


@pytest.fixture
def sae_and_batches(planted):
    sae = build_sae(small_sae_config("topk"), 64)
    return sae, list(planted.batches(256, 1024))


def test_batching_and_streaming_give_the_same_metrics(sae_and_batches):
    sae, batches = sae_and_batches
    whole = evaluate(sae, [torch.cat(batches)])
    assert SAEBENCH_CORE <= set(whole)
    for split in (batches, list(torch.cat(batches).split(100)), iter(torch.cat(batches).split(333))):
        streamed = evaluate(sae, split)
        assert set(streamed) == set(whole)
        for key, value in whole.items():
            assert streamed[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_core_metrics_against_numpy(sae_and_batches):
    """The same definitions written out once more, in numpy over all tokens at once."""
    sae, batches = sae_and_batches
    x = torch.cat(batches)
    with torch.no_grad():
        acts = sae.encode(x)
        x_hat = sae.decode(acts)
    x, x_hat, acts = x.double().numpy(), x_hat.double().numpy(), acts.double().numpy()
    n_in, n_out = np.linalg.norm(x, axis=1), np.linalg.norm(x_hat, axis=1)
    dot = (x * x_hat).sum(1)
    freq = (acts > 0).mean(0)
    m = evaluate(sae, batches)
    assert m["cossim"] == pytest.approx((dot / (n_in * n_out)).mean(), rel=1e-6)
    assert m["l2_ratio"] == pytest.approx((n_out / n_in).mean(), rel=1e-6)
    assert m["relative_reconstruction_bias"] == pytest.approx((n_out**2).mean() / dot.mean(), rel=1e-6)
    assert m["mse_per_token"] == pytest.approx(((x - x_hat) ** 2).sum(1).mean(), rel=1e-6)
    total_var = (x**2).sum(1).mean() - (x.mean(0) ** 2).sum()
    assert m["explained_variance_saelens"] == pytest.approx(1 - m["mse_per_token"] / total_var, rel=1e-6)
    assert m["l1"] == pytest.approx(np.abs(acts).sum(1).mean(), rel=1e-6)
    assert m["frac_alive"] == pytest.approx((freq > 0).mean())
    assert m["freq_over_1_percent"] == pytest.approx((freq > 0.01).mean())
    assert m["freq_over_10_percent"] == pytest.approx((freq > 0.1).mean())
    assert 0 < m["frac_alive"] < 1 and m["cossim"] < 1


def test_latent_similarity_can_be_left_out(sae_and_batches):
    sae, batches = sae_and_batches
    lean = evaluate_in_detail(sae, batches, latent_similarity=False)
    assert lean.latents is None and "average_max_decoder_cosine_sim" not in lean.metrics
    full = evaluate_in_detail(sae, batches)
    assert full.latents is not None and full.latents.max_decoder_cosine_sim is not None
    assert full.metrics["average_max_decoder_cosine_sim"] == pytest.approx(
        float(full.latents.max_decoder_cosine_sim.mean())
    )
    assert torch.equal(lean.frequency, full.frequency)
