"""`standard`: ReLU latents with an L1 penalty weighted by decoder row norms.

The decoder is left unconstrained; weighting each latent's L1 by its decoder
norm (Anthropic, April 2024 update) stops the model from shrinking
activations by growing decoder rows.
"""

from __future__ import annotations

from torch import Tensor

from raysae.models.base import SparseAutoencoder


class StandardSAE(SparseAutoencoder):
    architecture = "standard"
    saelens_architecture = "standard"
    unit_norm_decoder = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, l1_coefficient={self.cfg.l1_coefficient}"

    def activate(self, pre: Tensor) -> Tensor:
        return pre.relu()

    def sparsity_penalty(self, acts: Tensor) -> Tensor:
        weighted = acts * self.W_dec.norm(dim=-1)
        return self.cfg.l1_coefficient * weighted.sum(-1).mean()
