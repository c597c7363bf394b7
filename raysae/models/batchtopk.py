"""`batchtopk`: keep the k * batch largest activations over the whole batch (Bussmann et al. 2024).

Training selects across the batch, so tokens get a variable number of latents
with k on average. Inference cannot see a batch, so it uses a global threshold:
an exponential moving average of the smallest activation kept in each training
batch. In eval mode this is exactly a JumpReLU with that threshold everywhere,
which is how the SAE is saved for SAELens.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from raysae.config import SAEConfig
from raysae.models.base import data_parallel_world
from raysae.models.topk import TopKSAE


class BatchTopKSAE(TopKSAE):
    architecture = "batchtopk"
    saelens_architecture = "jumprelu"

    def __init__(self, cfg: SAEConfig, d_in: int):
        super().__init__(cfg, d_in)
        self.register_buffer("threshold", torch.zeros((), dtype=torch.float32))
        self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))

    def activate(self, pre: Tensor) -> Tensor:
        if not self.training:
            return pre.relu() * (pre > self.threshold).to(pre.dtype)
        acts = pre.relu()
        flat = acts.reshape(-1)
        n_keep = min(self.k * (flat.numel() // self.d_sae), flat.numel())
        values, indices = flat.topk(n_keep, sorted=False)
        self._update_threshold(values)
        return torch.zeros_like(flat).scatter_(0, indices, values).reshape(acts.shape)

    @torch.no_grad()
    def _update_threshold(self, kept: Tensor) -> None:
        positive = kept[kept > 0]
        # [sum of the batch minima, batches with any]: summed over data-parallel workers
        # so that every worker keeps the same threshold.
        stat = torch.zeros(2, dtype=torch.float32, device=kept.device)
        if positive.numel():
            stat[0], stat[1] = positive.min().float(), 1
        if data_parallel_world() > 1:
            dist.all_reduce(stat)
        if stat[1] == 0:
            return
        smallest = stat[0] / stat[1]
        m = self.cfg.batchtopk_threshold_momentum if self.threshold_updates > 0 else 0.0
        self.threshold.mul_(m).add_((1 - m) * smallest)
        self.threshold_updates += 1

    def inference_state(self) -> dict[str, Tensor]:
        state = super().inference_state()
        state["threshold"] = self.threshold.to(self.W_enc.dtype).expand(self.d_sae).contiguous()
        return state

    def load_inference_state(self, tensors: dict[str, Tensor]) -> None:
        super().load_inference_state(tensors)
        with torch.no_grad():
            self.threshold.copy_(tensors["threshold"][0])
            self.threshold_updates.fill_(1)

    def saelens_cfg_extra(self) -> dict:
        return {}
