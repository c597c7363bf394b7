"""`topk`: keep the k largest pre-activations per token (Gao et al. 2024), with AuxK.

AuxK: latents that have not fired for `dead_tokens_threshold` training tokens
reconstruct the main reconstruction's residual with their own top-`k_aux`,
weighted by `aux_coefficient`. The residual is a fixed target, so only the
dead latents (and the decoder rows they use) learn from this term.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from raysae.models.base import SparseAutoencoder
from raysae.models.sparse import ActiveLatents

if TYPE_CHECKING:
    from raysae.config.sae import SAEConfig


def topk_relu(pre: Tensor, k: int) -> Tensor:
    """Zero all but the k largest entries of the last dim, ReLU the kept ones (as SAELens)."""
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(-1, indices, values.relu())


def topk_active(pre: Tensor, k: int) -> ActiveLatents:
    """`topk_relu` as (indices, values): the same top-k call, so the same latents on ties."""
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return ActiveLatents(indices, values.relu(), pre.shape[0], pre.shape[-1])


class TopKSAE(SparseAutoencoder):
    architecture = "topk"
    saelens_architecture = "topk"
    k: int
    """The k in use; the trainer anneals it towards `sae.k`."""

    @classmethod
    def width_problems(cls, cfg: SAEConfig, d_in: int) -> Iterator[tuple[str, str]]:
        d_sae = cls.width(cfg, d_in)
        if cfg.k > d_sae:
            yield "sae.k", f"k={cfg.k} is larger than d_sae={d_sae}"
        yield from super().width_problems(cfg, d_in)

    def __init__(self, cfg: SAEConfig, d_in: int, d_out: int | None = None):
        super().__init__(cfg, d_in, d_out)
        self.k = cfg.k
        self.k_aux = min(cfg.k_aux or max(self.d_out // 2, 1), self.d_sae)

    def activate(self, pre: Tensor) -> Tensor:
        return topk_relu(pre, self.k)

    def activate_sparse(self, pre: Tensor) -> ActiveLatents | None:
        return topk_active(pre, self.k) if pre.ndim == 2 else None

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}"

    def aux_loss(self, x_n: Tensor, recon_n: Tensor, pre: Tensor, dead_mask: Tensor) -> Tensor:
        if self.cfg.aux_coefficient == 0:
            return x_n.new_zeros(())
        if pre.device.type == "cpu" and not self.sync_free:
            # On the CPU reading the dead count costs nothing, and skipping the term when no
            # latent is dead (most steps of a healthy run) saves its top-k and decode.
            n_dead = int(dead_mask.sum())
            if n_dead == 0:
                return x_n.new_zeros(())
            k_aux = min(self.k_aux, n_dead)
        else:
            # Without reading the count on the host: a fixed k_aux over pre-activations with the
            # live latents at -inf, so the picks beyond the dead ones are relu(-inf) = 0 (the
            # same activations as top-min(k_aux, n_dead)), and no dead latent gives exactly 0.
            k_aux = self.k_aux
        masked = pre.masked_fill(~dead_mask, float("-inf"))
        residual = (x_n - recon_n).detach()
        if self.uses_sparse_decode(pre):
            aux_recon = topk_active(masked, k_aux).decode(self.W_dec)
        else:
            aux_recon = topk_relu(masked, k_aux) @ self.W_dec
        loss = self.cfg.aux_coefficient * (aux_recon - residual).pow(2).sum(-1).mean()
        return torch.where(dead_mask.any(), loss, torch.zeros_like(loss))

    def saelens_cfg_extra(self) -> dict[str, Any]:
        return {"k": self.cfg.k, "rescale_acts_by_decoder_norm": False}
