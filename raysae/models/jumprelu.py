"""`jumprelu`: a learned threshold per latent, trained with an L0 penalty
(Rajamanoharan et al. 2024).

The step function has no useful gradient, so both the activation and the L0
count use straight-through estimators (one fused autograd function) with a rectangle kernel of width
`jumprelu_bandwidth` for the gradient with respect to the threshold. The
threshold is a parameter in activation units (kept positive after each step),
so the saved `threshold` is exactly the one training used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from raysae.models.base import SparseAutoencoder

if TYPE_CHECKING:
    from raysae.config.sae import SAEConfig


class JumpReLUWithL0(torch.autograd.Function):
    """JumpReLU activations and the per-token L0, with their straight-through gradients.

    forward: acts = pre * 1[pre > threshold], l0 = sum over latents of 1[pre > threshold].
    backward (K = rectangle kernel of width `bandwidth`, u = (pre - threshold) / bandwidth):
    d acts / d pre = 1[pre > threshold]; d acts / d threshold = -(threshold / bandwidth) K(u);
    d l0 / d pre = 0; d l0 / d threshold = -(1 / bandwidth) K(u).
    One function for both so the kernel window is computed once per step.
    """

    @staticmethod
    def forward(ctx, pre: Tensor, threshold: Tensor, bandwidth: float) -> tuple[Tensor, Tensor]:
        mask = pre > threshold
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        # The count in at least fp32: bf16 pre-activations (autocast) cannot count past 256 exactly.
        return pre * mask, mask.sum(-1, dtype=torch.promote_types(pre.dtype, torch.float32))

    @staticmethod
    def backward(ctx, grad_acts: Tensor, grad_l0: Tensor):
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_pre = grad_acts * (pre > threshold)
        window = (pre - threshold).abs_() < bw / 2
        per_entry = torch.addcmul(grad_l0[..., None], threshold, grad_acts) * window
        grad_threshold = per_entry.reshape(-1, threshold.shape[-1]).sum(0) / -bw
        return grad_pre, grad_threshold, None


class JumpReLUSAE(SparseAutoencoder):
    architecture = "jumprelu"
    saelens_architecture = "jumprelu"
    min_threshold = 1e-6

    def __init__(self, cfg: SAEConfig, d_in: int):
        super().__init__(cfg, d_in)
        self.threshold = nn.Parameter(
            torch.full((self.d_sae,), cfg.jumprelu_init_threshold, dtype=self.W_enc.dtype)
        )

    def extra_repr(self) -> str:
        # One threshold per latent: their mean says where the SAE stands.
        mean = float(self.threshold.detach().float().mean())
        return f"{super().extra_repr()}, threshold_mean={mean:.4g}, l0_coefficient={self.cfg.l0_coefficient}"

    def activate_and_penalize(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        # One fused function for the activations and the L0 count, with their straight-through gradients.
        acts, l0 = JumpReLUWithL0.apply(pre, self.threshold, self.cfg.jumprelu_bandwidth)
        return acts, self.cfg.l0_coefficient * l0.mean()

    def activate(self, pre: Tensor) -> Tensor:
        return self.activate_and_penalize(pre)[0]

    @torch.no_grad()
    def after_optimizer_step(self, applied: Tensor | None = None) -> None:
        super().after_optimizer_step(applied)
        self.threshold.clamp_(min=self.min_threshold)

    def inference_state(self) -> dict[str, Tensor]:
        return {**super().inference_state(), "threshold": self.threshold}

    def load_inference_state(self, tensors: dict[str, Tensor]) -> None:
        super().load_inference_state(tensors)
        with torch.no_grad():
            self.threshold.copy_(tensors["threshold"])
