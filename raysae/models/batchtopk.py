"""`batchtopk`: keep the k * batch largest activations over the whole batch (Bussmann et al. 2024).

Training selects across the batch, so tokens get a variable number of latents
with k on average. Inference cannot see a batch, so it uses a global threshold:
an exponential moving average of the smallest activation kept in each training
batch. In eval mode this is exactly a JumpReLU with that threshold everywhere,
which is how the SAE is saved for SAELens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from raysae.models.base import ForwardOutput
from raysae.models.sparse import ActiveLatents
from raysae.models.topk import TopKSAE

if TYPE_CHECKING:
    from raysae.config.sae import SAEConfig


class BatchTopKSAE(TopKSAE):
    architecture = "batchtopk"
    saelens_architecture = "jumprelu"
    threshold: Tensor
    """The inference threshold: an EMA of the smallest activation kept per training batch."""
    threshold_updates: Tensor

    def __init__(self, cfg: SAEConfig, d_in: int, d_out: int | None = None):
        super().__init__(cfg, d_in, d_out)
        self.register_buffer("threshold", torch.zeros((), dtype=torch.float32))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={float(self.threshold):.4g}"

    def activate(self, pre: Tensor) -> Tensor:
        if not self.training:
            return pre.relu() * (pre > self.threshold).to(pre.dtype)
        acts = pre.relu()
        flat = acts.reshape(-1)
        n_keep = min(self.k * (flat.numel() // self.d_sae), flat.numel())
        values, indices = flat.topk(n_keep, sorted=False)
        return torch.zeros_like(flat).scatter_(0, indices, values).reshape(acts.shape)

    def activate_sparse(self, pre: Tensor) -> ActiveLatents | None:
        if not self.training:
            return None  # the threshold keeps a count per token known only after the fact
        flat = pre.relu().reshape(-1)
        n_keep = min(self.k * (flat.numel() // self.d_sae), flat.numel())
        values, positions = flat.topk(n_keep, sorted=False)
        return ActiveLatents.flat(positions, values, flat.numel() // self.d_sae, self.d_sae)

    @torch.no_grad()
    def step_statistics(self, out: ForwardOutput) -> Tensor:
        if out.active is None:
            return self.batch_statistics(out.feature_acts.detach())
        return torch.cat([out.active.fired(), out.active.smallest_fired()])

    @torch.no_grad()
    def batch_statistics(self, feature_acts: Tensor) -> Tensor:
        """The firing mask, then [the smallest activation kept in this batch, 1] ([0, 0] when it
        kept none): summed over workers, the mean of their batch minima. Computed on the device
        without reading anything on the host (no boolean indexing, no branch on a count)."""
        fired = feature_acts > 0
        kept_any = fired.any()
        smallest = torch.where(fired, feature_acts, float("inf")).min().float()
        smallest = torch.stack([torch.where(kept_any, smallest, 0.0), kept_any.float()])
        return torch.cat([super().batch_statistics(feature_acts), smallest])

    @torch.no_grad()
    def update_running_state(self, stats: Tensor, tokens: int) -> None:
        """Also moves the inference threshold towards the batch's smallest kept activation (an EMA;
        the first update takes it whole); a batch no worker kept anything in changes nothing."""
        super().update_running_state(stats, tokens)
        total, batches = stats[self.d_sae], stats[self.d_sae + 1]
        m = torch.where(self.threshold_updates > 0, self.cfg.batchtopk_threshold_momentum, 0.0)
        moved = self.threshold * m + (1 - m) * (total / batches.clamp_min(1))
        self.threshold.copy_(torch.where(batches > 0, moved, self.threshold))
        self.threshold_updates += (batches > 0).long()

    def inference_state(self) -> dict[str, Tensor]:
        state = super().inference_state()
        state["threshold"] = self.threshold.to(self.W_enc.dtype).expand(self.d_sae).contiguous()
        return state

    def load_inference_state(self, tensors: dict[str, Tensor]) -> None:
        super().load_inference_state(tensors)
        with torch.no_grad():
            self.threshold.copy_(tensors["threshold"][0])
            self.threshold_updates.fill_(1)

    def saelens_cfg_extra(self) -> dict[str, Any]:
        return {}
