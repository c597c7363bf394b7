"""The straight-through estimators of JumpReLU against the formulas of Rajamanoharan et al.,
and its sparsity penalties against SAELens 6.54's (`step`, Gemma Scope 2's `quadratic`)."""

import pytest
import torch

from raysae import build_sae, evaluate, fit
from raysae.config import SAEConfig
from raysae.errors import ConfigError
from raysae.models.jumprelu import JumpReLUWithL0
from tests.conftest import small_sae_config, small_train_config


def test_jumprelu_forward_and_gradients():
    pre = torch.tensor([[0.10, 0.52, 0.48, 2.0], [0.56, 0.3, 0.5, -1.0]], requires_grad=True)
    theta = torch.tensor([0.5, 0.5, 0.5, 0.5], requires_grad=True)
    bw = 0.1
    out, l0 = JumpReLUWithL0.apply(pre, theta, bw)
    assert torch.equal(out.detach(), torch.tensor([[0.0, 0.52, 0.0, 2.0], [0.56, 0.0, 0.0, 0.0]]))
    assert torch.equal(l0.detach(), torch.tensor([2.0, 1.0]))
    out.sum().backward()
    # d out / d pre = 1[pre > theta]
    assert torch.equal(pre.grad, torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]))
    # d out / d theta = -(theta / bw) * sum over rows of 1[|pre - theta| < bw / 2]
    in_window = ((pre.detach() - theta.detach()).abs() < bw / 2).float().sum(0)
    torch.testing.assert_close(theta.grad, -(0.5 / bw) * in_window)


def test_l0_gradients_only_reach_threshold():
    pre = torch.tensor([[0.46, 0.9], [0.54, 0.27]], requires_grad=True)
    theta = torch.tensor([0.5, 0.25], requires_grad=True)
    bw = 0.1
    _, l0 = JumpReLUWithL0.apply(pre, theta, bw)
    assert torch.equal(l0.detach(), torch.tensor([1.0, 2.0]))
    (l0 * torch.tensor([1.0, 2.0])).sum().backward()
    assert torch.count_nonzero(pre.grad) == 0
    # column 0: both rows in the window (weights 1 and 2); column 1: only row 1 (weight 2)
    torch.testing.assert_close(theta.grad, torch.tensor([-(1 / bw) * 3, -(1 / bw) * 2]))


def test_both_outputs_combine():
    gen = torch.Generator().manual_seed(0)
    pre = (0.5 + 0.05 * torch.randn(64, 8, generator=gen)).requires_grad_()
    theta = torch.full((8,), 0.5, requires_grad=True)
    bw = 0.05
    acts, l0 = JumpReLUWithL0.apply(pre, theta, bw)
    (acts.sum() + 3.0 * l0.sum()).backward()
    window = ((pre.detach() - 0.5).abs() < bw / 2).float()
    expected = -(window * (0.5 + 3.0)).sum(0) / bw
    torch.testing.assert_close(theta.grad, expected)


def quadratic_sae(target_l0: float, l0_coefficient: float = 0.5):
    cfg = SAEConfig(
        architecture="jumprelu",
        d_sae=4,
        jumprelu_sparsity_loss_mode="quadratic",
        target_l0=target_l0,
        l0_coefficient=l0_coefficient,
        jumprelu_init_threshold=0.5,
        jumprelu_bandwidth=0.1,
    )
    return build_sae(cfg, 2)


def test_quadratic_penalty_and_its_threshold_gradient():
    # SAELens 6.54 (Gemma Scope 2): l0_coefficient * mean over tokens of 2 / T * (l0 - T)^2.
    sae = quadratic_sae(target_l0=2.5)
    pre = torch.tensor([[0.52, 0.9, 0.7, 0.1], [0.48, 0.2, 0.3, 0.6]])
    _, penalty = sae.activate_and_penalize(pre)
    # counts 3 and 1: 2 / 2.5 * (0.5^2 + 1.5^2) / 2 = 1.0, times the coefficient 0.5
    torch.testing.assert_close(penalty, torch.tensor(0.5))
    penalty.backward()
    # d penalty / d l0_i = 0.5 * (2 / 2.5) * 2 * (l0_i - 2.5) / 2 tokens = [0.2, -0.6];
    # d l0_i / d theta_j = -(1 / bw) for entries within bw / 2 of the threshold (column 0 only)
    expected = torch.tensor([-(0.2 - 0.6) / 0.1, 0.0, 0.0, 0.0])
    torch.testing.assert_close(sae.threshold.grad, expected)


def test_step_mode_is_the_plain_l0():
    step = build_sae(
        SAEConfig(architecture="jumprelu", d_sae=4, l0_coefficient=0.5, jumprelu_init_threshold=0.5), 2
    )
    _, penalty = step.activate_and_penalize(torch.tensor([[0.52, 0.9, 0.7, 0.1], [0.48, 0.2, 0.3, 0.6]]))
    torch.testing.assert_close(penalty, torch.tensor(0.5 * (3 + 1) / 2))


def test_the_quadratic_mode_needs_a_target():
    missing = SAEConfig(architecture="jumprelu", d_sae=16, jumprelu_sparsity_loss_mode="quadratic")
    with pytest.raises(ConfigError, match="sae.target_l0: must be set"):
        build_sae(missing, 8)
    too_many = missing.model_copy(update={"target_l0": 20.0})
    with pytest.raises(ConfigError, match="sae.target_l0: target_l0=20 is larger than d_sae=16"):
        build_sae(too_many, 8)


def gaussian_batches(n_tokens: int, seed: int, batch: int = 256):
    """Isotropic Gaussian activations: no natural sparsity, so the penalty alone sets the L0."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(0, n_tokens, batch):
        yield torch.randn(batch, 64, generator=gen)


@pytest.mark.parametrize("target", [8.0, 32.0])
def test_a_quadratic_run_ends_near_its_target_l0(target):
    # The step penalty with the same coefficient ends at an L0 of about 20 on this data, so
    # only a penalty that pulls towards the target lands both runs within 20 % of theirs.
    cfg = small_sae_config(
        "jumprelu", jumprelu_sparsity_loss_mode="quadratic", target_l0=target, l0_coefficient=5.0
    )
    sae = build_sae(cfg, 64)
    # Small batches: the thresholds must climb to ~2 in Adam steps of at most ~lr each.
    fit(sae, gaussian_batches(400_000, seed=2), small_train_config(total_tokens=400_000, batch_size=256))
    l0 = evaluate(sae, gaussian_batches(40_960, seed=3, batch=4096))["l0"]
    assert abs(l0 / target - 1) < 0.2, l0
