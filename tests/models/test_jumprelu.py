"""The straight-through estimators of JumpReLU against the formulas of Rajamanoharan et al."""

import torch

from raysae.models.jumprelu import JumpReLUFunction, StepFunction


def test_jumprelu_forward_and_gradients():
    pre = torch.tensor([[0.10, 0.52, 0.48, 2.0], [0.56, 0.3, 0.5, -1.0]], requires_grad=True)
    theta = torch.tensor([0.5, 0.5, 0.5, 0.5], requires_grad=True)
    bw = 0.1
    out = JumpReLUFunction.apply(pre, theta, bw)
    assert torch.equal(out.detach(), torch.tensor([[0.0, 0.52, 0.0, 2.0], [0.56, 0.0, 0.0, 0.0]]))
    out.sum().backward()
    # d out / d pre = 1[pre > theta]
    assert torch.equal(pre.grad, torch.tensor([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]))
    # d out / d theta = -(theta / bw) * sum over rows of 1[|pre - theta| < bw / 2]
    in_window = ((pre.detach() - theta.detach()).abs() < bw / 2).float().sum(0)
    torch.testing.assert_close(theta.grad, -(0.5 / bw) * in_window)


def test_step_gradients_only_reach_threshold():
    pre = torch.tensor([[0.46, 0.9], [0.54, 0.2]], requires_grad=True)
    theta = torch.tensor([0.5, 0.25], requires_grad=True)
    bw = 0.1
    out = StepFunction.apply(pre, theta, bw)
    assert torch.equal(out.detach(), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    (out * torch.tensor([[1.0, 1.0], [2.0, 1.0]])).sum().backward()
    assert pre.grad is None or torch.count_nonzero(pre.grad) == 0
    # column 0: both rows in the window, weights 1 and 2; column 1: row 1 in the window
    torch.testing.assert_close(theta.grad, torch.tensor([-(1 / bw) * 3, -(1 / bw) * 1]))
