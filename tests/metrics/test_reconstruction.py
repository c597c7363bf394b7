import numpy as np
import pytest
import torch

from raysae.metrics import ReconstructionStats


def reference(x: np.ndarray, x_hat: np.ndarray) -> dict[str, float]:
    """Straight from the definitions, in float64 numpy."""
    err = x - x_hat
    total = ((x - x.mean(axis=0)) ** 2).sum()
    return {
        "mse": float((err**2).mean()),
        "fvu": float((err**2).sum() / total),
        "explained_variance": float(1 - err.var(axis=0).sum() / x.var(axis=0).sum()),
    }


def reconstruction_metrics(x, x_hat):
    """The metrics of one in-memory batch."""
    stats = ReconstructionStats()
    stats.update(x, x_hat)
    return stats.result()


@pytest.fixture
def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 16, generator=gen) * torch.linspace(0.5, 3, 16) + 50.0  # a big offset
    x_hat = x + 0.3 * torch.randn(1000, 16, generator=gen) + 0.2  # noise plus a constant bias
    return x, x_hat


def test_matches_reference(data):
    x, x_hat = data
    ours = reconstruction_metrics(x, x_hat)
    ref = reference(x.double().numpy(), x_hat.double().numpy())
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], rel=1e-9)
    # against the per-dimension mean, not against zero: with the offset they differ a lot
    fvu_vs_zero = float(((x - x_hat) ** 2).sum() / (x**2).sum())
    assert ours["fvu"] > 100 * fvu_vs_zero
    # the constant error offset counts in fvu but not in explained variance
    assert ours["explained_variance"] > 1 - ours["fvu"]


def test_streaming_and_merging_equal_one_pass(data):
    x, x_hat = data
    one = reconstruction_metrics(x, x_hat)
    streamed = ReconstructionStats()
    for a, b in zip(x.split(77), x_hat.split(77), strict=True):
        streamed.update(a, b)
    left, right = ReconstructionStats(), ReconstructionStats()
    left.update(x[:300], x_hat[:300])
    right.update(x[300:], x_hat[300:])
    merged = ReconstructionStats().merge(right).merge(left)
    for key in one:
        assert streamed.result()[key] == pytest.approx(one[key], rel=1e-10)
        assert merged.result()[key] == pytest.approx(one[key], rel=1e-10)


def test_perfect_reconstruction(data):
    x, _ = data
    m = reconstruction_metrics(x, x)
    assert m == {
        "mse": 0.0,
        "fvu": 0.0,
        "explained_variance": 1.0,
        "mse_per_token": 0.0,
        "explained_variance_saelens": 1.0,
    }


def test_saelens_definitions_by_hand():
    """SAELens >= 6.45 (evals.py): `mse` is the squared error summed over dimensions, averaged
    over tokens; `explained_variance` is 1 - that / the summed variance about the mean."""
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    x_hat = torch.tensor([[1.0, 1.0], [3.0, 5.0], [4.0, 0.0]])
    # errors (0, 1), (0, -1), (1, 0): 1 per token, 3 in all, over 3 tokens of 2 dimensions
    # mean x = (3, 2); deviations (-2, 0), (0, 2), (2, -2): 16 summed, 16/3 per token
    # (E||x||^2 - ||E x||^2 = (5 + 25 + 25)/3 - (9 + 4) = 16/3 as well)
    # error mean (1/3, 0): centred squares 2/3 + 2 = 8/3
    m = reconstruction_metrics(x, x_hat)
    assert m["mse_per_token"] == pytest.approx(1.0, rel=1e-12)
    assert m["mse"] == pytest.approx(0.5, rel=1e-12)  # ours: per dimension
    assert m["explained_variance_saelens"] == pytest.approx(1 - 1 / (16 / 3), rel=1e-12)  # 13/16
    assert m["fvu"] == pytest.approx(3 / 16, rel=1e-12)
    assert m["explained_variance"] == pytest.approx(1 - (8 / 3) / 16, rel=1e-12)  # 5/6


def test_constant_inputs_follow_saelens_guard():
    x = torch.ones(4, 3)
    exact, off = reconstruction_metrics(x, x), reconstruction_metrics(x, x + 1)
    assert exact["explained_variance_saelens"] == 1.0 and off["explained_variance_saelens"] == 0.0
    assert off["mse_per_token"] == pytest.approx(3.0)
    # our variance fractions do not exist without variance: non-finite, never a crash
    assert np.isnan(exact["fvu"]) and np.isinf(off["fvu"])


def test_empty_raises():
    with pytest.raises(ValueError, match="no activations"):
        ReconstructionStats().result()
