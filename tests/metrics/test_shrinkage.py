import math

import pytest
import torch

from raysae.metrics.shrinkage import ShrinkageStats

# x, x_hat by token: ||x|| 5, 1, 0; ||x_hat|| 5, 2, 1; x . x_hat 20, 2, 0
X = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
X_HAT = torch.tensor([[0.0, 5.0], [2.0, 0.0], [0.0, 1.0]])


def stats_of(*pairs) -> dict[str, float]:
    stats = ShrinkageStats()
    for x, x_hat in pairs:
        stats.update(x, x_hat)
    return stats.result()


def test_by_hand():
    m = stats_of((X, X_HAT))
    assert m["l2_norm_in"] == pytest.approx((5 + 1 + 0) / 3, rel=1e-12)
    assert m["l2_norm_out"] == pytest.approx((5 + 2 + 1) / 3, rel=1e-12)
    # 5/5, 2/1, and the zero input divided by 1 (SAELens's guard below 1e-4): 1/1
    assert m["l2_ratio"] == pytest.approx((1 + 2 + 1) / 3, rel=1e-12)
    # 20/25, 2/2, and the zero input counts 0
    assert m["cossim"] == pytest.approx((0.8 + 1 + 0) / 3, rel=1e-12)
    # sum ||x_hat||^2 / sum x . x_hat = (25 + 4 + 1) / (20 + 2 + 0)
    assert m["relative_reconstruction_bias"] == pytest.approx(30 / 22, rel=1e-12)


def test_batching_never_changes_the_numbers():
    """Per-batch ratios averaged (SAELens: 25/20 and 5/2 for this split, mean 1.875) would
    depend on the split; ours is the ratio over all tokens."""
    one = stats_of((X, X_HAT))
    split = stats_of((X[:1], X_HAT[:1]), (X[1:], X_HAT[1:]))
    left, right = ShrinkageStats(), ShrinkageStats()
    left.update(X[:2], X_HAT[:2])
    right.update(X[2:], X_HAT[2:])
    merged = ShrinkageStats().merge(right).merge(left).result()
    for key, value in one.items():
        assert split[key] == pytest.approx(value, rel=1e-12)
        assert merged[key] == pytest.approx(value, rel=1e-12)
    assert split["relative_reconstruction_bias"] != pytest.approx((25 / 20 + 5 / 2) / 2)


def test_unshrunk_and_halved_reconstructions():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen) + 3.0
    same, half = stats_of((x, x)), stats_of((x, x / 2))
    assert same["cossim"] == pytest.approx(1.0) and same["l2_ratio"] == pytest.approx(1.0)
    assert same["relative_reconstruction_bias"] == pytest.approx(1.0)
    assert half["cossim"] == pytest.approx(1.0) and half["l2_ratio"] == pytest.approx(0.5)
    assert half["relative_reconstruction_bias"] == pytest.approx(0.5)
    assert half["l2_norm_out"] == pytest.approx(half["l2_norm_in"] / 2)


def test_empty_raises():
    with pytest.raises(ValueError, match="no activations"):
        ShrinkageStats().result()
    assert math.isnan(stats_of((torch.zeros(2, 2), torch.zeros(2, 2)))["relative_reconstruction_bias"])
