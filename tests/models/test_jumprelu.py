"""The straight-through estimators of JumpReLU against the formulas of Rajamanoharan et al."""

import torch

from raysae.models.jumprelu import JumpReLUWithL0


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
