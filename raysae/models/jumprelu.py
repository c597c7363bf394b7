"""`jumprelu`: a learned threshold per latent, trained with an L0 penalty
(Rajamanoharan et al. 2024).

The step function has no useful gradient, so both the activation and the L0
count use straight-through estimators (one fused autograd function) with a rectangle kernel of width
`jumprelu_bandwidth` for the gradient with respect to the threshold. The
threshold is a parameter in activation units (kept positive after each step),
so the saved `threshold` is exactly the one training used.

The sparsity penalty (`sae.jumprelu_sparsity_loss_mode`, SAELens 6.54's names and formulas,
`saes/jumprelu_sae.py`), with `l0_i` the straight-through count of token i:
- `step` (DeepMind's JumpReLU): `l0_coefficient * mean_i l0_i`;
- `quadratic` (Gemma Scope 2's target-L0 penalty, as SAELens implements it):
  `l0_coefficient * mean_i (2 / target_l0) * (l0_i - target_l0)^2`, per token, so it pulls
  every token's count towards `sae.target_l0` from both sides.
"""

from __future__ import annotations

from collections.abc import Iterator
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

    @classmethod
    def width_problems(cls, cfg: SAEConfig, d_in: int) -> Iterator[tuple[str, str]]:
        yield from super().width_problems(cfg, d_in)
        if cfg.jumprelu_sparsity_loss_mode == "quadratic":
            d_sae = cls.width(cfg, d_in)
            if cfg.target_l0 is None:
                yield "sae.target_l0", "must be set when sae.jumprelu_sparsity_loss_mode is 'quadratic'"
            elif cfg.target_l0 > d_sae:
                yield "sae.target_l0", f"target_l0={cfg.target_l0:g} is larger than d_sae={d_sae}"

    def __init__(self, cfg: SAEConfig, d_in: int, d_out: int | None = None):
        super().__init__(cfg, d_in, d_out)
        self.threshold = nn.Parameter(
            torch.full((self.d_sae,), cfg.jumprelu_init_threshold, dtype=self.W_enc.dtype)
        )

    def extra_repr(self) -> str:
        # One threshold per latent: their mean says where the SAE stands.
        mean = float(self.threshold.detach().float().mean())
        text = f"{super().extra_repr()}, threshold_mean={mean:.4g}, l0_coefficient={self.cfg.l0_coefficient}"
        if self.cfg.jumprelu_sparsity_loss_mode == "quadratic":
            text += f", target_l0={self.cfg.target_l0}"
        return text

    def activate_and_penalize(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        # One fused function for the activations and the L0 count, with their straight-through gradients.
        acts, l0 = JumpReLUWithL0.apply(pre, self.threshold, self.cfg.jumprelu_bandwidth)
        return acts, self.cfg.l0_coefficient * self.l0_penalty(l0).mean()

    def l0_penalty(self, l0: Tensor) -> Tensor:
        """The per-token sparsity penalty of per-token counts `l0`, before `l0_coefficient`."""
        if self.cfg.jumprelu_sparsity_loss_mode == "quadratic":
            target = self.cfg.target_l0
            assert target is not None  # width_problems: build_sae refuses the config without one
            return 2 / target * (l0 - target) ** 2
        return l0

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
