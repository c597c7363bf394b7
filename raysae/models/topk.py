"""`topk`: keep the k largest pre-activations per token (Gao et al. 2024), with AuxK.

AuxK: latents that have not fired for `dead_tokens_threshold` training tokens
reconstruct the main reconstruction's residual with their own top-`k_aux`,
weighted by `aux_coefficient`. The residual is a fixed target, so only the
dead latents (and the decoder rows they use) learn from this term.
"""

from __future__ import annotations

import torch
from torch import Tensor

from raysae.config import SAEConfig
from raysae.models.base import SparseAutoencoder


def topk_relu(pre: Tensor, k: int) -> Tensor:
    """Zero all but the k largest entries of the last dim, ReLU the kept ones (as SAELens)."""
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(-1, indices, values.relu())


class TopKSAE(SparseAutoencoder):
    architecture = "topk"
    saelens_architecture = "topk"

    def __init__(self, cfg: SAEConfig, d_in: int):
        super().__init__(cfg, d_in)
        self.k = cfg.k
        """The k in use; the trainer anneals it towards `cfg.k`."""
        self.k_aux = min(cfg.k_aux or max(d_in // 2, 1), self.d_sae)

    def activate(self, pre: Tensor) -> Tensor:
        return topk_relu(pre, self.k)

    def dead_mask(self) -> Tensor:
        return self.tokens_since_fired >= self.cfg.dead_tokens_threshold

    def aux_loss(self, x_n: Tensor, recon_n: Tensor, pre: Tensor) -> Tensor:
        dead = self.dead_mask()
        n_dead = int(dead.sum())
        if self.cfg.aux_coefficient == 0 or n_dead == 0:
            return x_n.new_zeros(())
        aux_acts = topk_relu(pre.masked_fill(~dead, float("-inf")), min(self.k_aux, n_dead))
        residual = (x_n - recon_n).detach()
        aux_recon = aux_acts @ self.W_dec
        return self.cfg.aux_coefficient * (aux_recon - residual).pow(2).sum(-1).mean()

    def saelens_cfg_extra(self) -> dict:
        return {"k": self.cfg.k, "rescale_acts_by_decoder_norm": False}
