import numpy as np
import pytest
import torch

from raysae import build_sae, evaluate
from raysae.metrics import FiringStats, log_feature_density
from tests.conftest import small_sae_config


@pytest.fixture
def acts():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(500, 40, generator=gen)
    a[a < 0.9] = 0.0
    a[:, :5] = 0.0  # five dead features
    a[:, 5:8] = 1.0  # three features firing on every token
    a[:, 8] = torch.where(torch.arange(500) < 60, 1.0, 0.0)  # 12 %: dense at 0.1
    return a


def test_firing_stats_match_reference(acts):
    a = acts.numpy()
    stats = FiringStats(40)
    for chunk in acts.split(64):
        stats.update(chunk)
    result = stats.result(dense_threshold=0.1)
    fired = a > 0
    freq = fired.mean(0)
    assert result["l0"] == pytest.approx(fired.sum(1).mean())
    assert result["dead_fraction"] == pytest.approx((fired.sum(0) == 0).mean())
    assert result["dead_fraction"] == pytest.approx(5 / 40)
    assert result["dense_fraction"] == pytest.approx((freq > 0.1).mean())
    np.testing.assert_allclose(stats.frequency().numpy(), freq)


def test_merge_equals_one_window(acts):
    whole, a, b = FiringStats(40), FiringStats(40), FiringStats(40)
    whole.update(acts)
    a.update(acts[:123])
    b.update(acts[123:])
    assert torch.equal(a.merge(b).counts, whole.counts) and a.n_tokens == 500


def test_log_density():
    freq = torch.tensor([0.0, 1e-4, 1e-2, 0.5, 1.0])
    logd = log_feature_density(freq)
    np.testing.assert_allclose(logd.numpy(), [-10.0, -4.0, -2.0, np.log10(0.5), 0.0], rtol=1e-6)


def test_evaluate_combines_metrics(planted):
    sae = build_sae(small_sae_config("topk"), 64)
    batches = list(planted.batches(256, 1024))
    m = evaluate(sae, batches)
    assert m["n_tokens"] == 1024
    assert m["l0"] == pytest.approx(4.0)
    x = torch.cat(batches)
    with torch.no_grad():
        acts = sae.encode(x)
    fired = (acts > 0).any(0)
    assert m["dead_fraction"] == pytest.approx(1 - fired.float().mean().item())
    assert evaluate(sae, batches, max_tokens=300)["n_tokens"] == 300


def test_saebench_firing_metrics_by_hand():
    """20 tokens, 4 latents: latent 0 fires 10 times at 2.0 (frequency 0.5), latent 1 once at
    2.0 (0.05), latent 2 twice at 0.5 (0.1: not over 10 %), latent 3 never."""
    acts = torch.zeros(20, 4)
    acts[:10, 0] = 2.0
    acts[10, 1] = 2.0
    acts[11:13, 2] = 0.5
    stats = FiringStats(4)
    for chunk in acts.split(7):
        stats.update(chunk)
    m = stats.result(dense_threshold=0.1)
    assert m["l0"] == pytest.approx((10 + 1 + 2) / 20)
    assert m["l1"] == pytest.approx((10 * 2.0 + 2.0 + 2 * 0.5) / 20)
    assert m["frac_alive"] == pytest.approx(3 / 4)
    assert m["freq_over_1_percent"] == pytest.approx(3 / 4)
    assert m["freq_over_10_percent"] == pytest.approx(1 / 4)
    assert m["normalized_freq_over_1_percent"] == pytest.approx(1.0)
    assert m["normalized_freq_over_10_percent"] == pytest.approx(0.5 / (0.5 + 0.05 + 0.1))
    nothing = FiringStats(3)
    nothing.update(torch.zeros(5, 3))
    quiet = nothing.result()
    assert quiet["frac_alive"] == 0.0 and quiet["normalized_freq_over_1_percent"] == 0.0


def test_l1_counts_magnitudes_and_merges():
    acts = torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.5, 0.0]])  # signed: |.| summed, as SAELens 6.54
    a, b = FiringStats(3), FiringStats(3)
    a.update(acts[:1])
    b.update(acts[1:])
    assert a.merge(b).result()["l1"] == pytest.approx((3.0 + 0.5) / 2)
