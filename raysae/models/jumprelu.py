"""`jumprelu`: a learned threshold per latent, trained with an L0 penalty
(Rajamanoharan et al. 2024).

The step function has no useful gradient, so both the activation and the L0
count use straight-through estimators with a rectangle kernel of width
`jumprelu_bandwidth` for the gradient with respect to the threshold. The
threshold is a parameter in activation units (kept positive after each step),
so the saved `threshold` is exactly the one training used.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from raysae.config import SAEConfig
from raysae.models.base import SparseAutoencoder


def _rectangle(u: Tensor) -> Tensor:
    return (u.abs() < 0.5).to(u.dtype)


class JumpReLUFunction(torch.autograd.Function):
    """pre * 1[pre > threshold]; d/dthreshold = -(threshold / bw) * K((pre - threshold) / bw)."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_pre = grad * (pre > threshold).to(grad.dtype)
        grad_threshold = -(threshold / bw) * _rectangle((pre - threshold) / bw) * grad
        return grad_pre, grad_threshold.reshape(-1, threshold.shape[-1]).sum(0), None


class StepFunction(torch.autograd.Function):
    """1[pre > threshold]; d/dthreshold = -(1 / bw) * K((pre - threshold) / bw), none to pre."""

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_threshold = -(1.0 / bw) * _rectangle((pre - threshold) / bw) * grad
        return None, grad_threshold.reshape(-1, threshold.shape[-1]).sum(0), None


class JumpReLUSAE(SparseAutoencoder):
    architecture = "jumprelu"
    saelens_architecture = "jumprelu"
    min_threshold = 1e-6

    def __init__(self, cfg: SAEConfig, d_in: int):
        super().__init__(cfg, d_in)
        self.threshold = nn.Parameter(
            torch.full((self.d_sae,), cfg.jumprelu_init_threshold, dtype=self.W_enc.dtype)
        )

    def activate(self, pre: Tensor) -> Tensor:
        return JumpReLUFunction.apply(pre, self.threshold, self.cfg.jumprelu_bandwidth)

    def sparsity_loss(self, acts: Tensor, pre: Tensor) -> Tensor:
        l0 = StepFunction.apply(pre, self.threshold, self.cfg.jumprelu_bandwidth).sum(-1).mean()
        return self.cfg.l0_coefficient * l0

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        self.threshold.clamp_(min=self.min_threshold)

    def inference_state(self) -> dict[str, Tensor]:
        return {**super().inference_state(), "threshold": self.threshold}

    def load_inference_state(self, tensors: dict[str, Tensor]) -> None:
        super().load_inference_state(tensors)
        with torch.no_grad():
            self.threshold.copy_(tensors["threshold"])
