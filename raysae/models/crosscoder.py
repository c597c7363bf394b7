"""`crosscoder`: one dictionary read from and written to a set of L layers (acausal).

A feature reads every layer (`pre = sum_l x_l @ W_enc[l] + b_enc`, `W_enc [L, d_in, F]`,
`b_enc [F]`) and writes every layer (`W_dec [F, L, d_in]`, `b_dec [L, d_in]`); the target is the
input itself. Each feature's decoder rows over the L layers, concatenated, have unit norm.
`sae.d_sae` (`expansion_factor * d_in`) is the size of the one dictionary, `sae.k` its active
features per token (`sae.topk_scope` does not apply: there is one set of features), and the
feature activations are `[batch, F]`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from raysae.models.multilayer import MultiLayerDictionary, unit_rows

if TYPE_CHECKING:
    from raysae.config.sae import SAEConfig


class Crosscoder(MultiLayerDictionary):
    kind = "crosscoder"
    is_transcoder = False

    def __init__(self, cfg: SAEConfig, n_layers: int, d_in: int, *, shard_index: int = 0, shards: int = 1):
        super().__init__(cfg, n_layers, d_in, d_in, shard_index=shard_index, shards=shards)
        n = self.n_local
        self.W_enc = nn.Parameter(torch.empty(n_layers, d_in, n, dtype=self.dtype))
        """`[L, d_in, F]`: every layer's inputs -> the features (summed over layers)."""
        self.b_enc = nn.Parameter(torch.zeros(n, dtype=self.dtype))
        self.W_dec = nn.Parameter(torch.empty(n, n_layers, d_in, dtype=self.dtype))
        """`[F, L, d_in]`: the features -> every layer."""
        self.reset_parameters()

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return (self.n_local,)

    def decoders(self) -> list[Tensor]:
        return [self.W_dec]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Unit-norm random decoders, encoder = decoder transpose (input and output are one
        space), zero biases; drawn for all `d_sae` features and cut to this shard's."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        dec = unit_rows(gen, self.d_sae, self.n_layers, self.d_in)[self.features]
        self.W_dec.copy_(dec)
        self.W_enc.copy_(dec.permute(1, 2, 0))
        self.b_enc.zero_()
        self.b_dec.zero_()

    def pre_activation(self, x_n: Tensor) -> Tensor:
        h = x_n.flatten(1) @ self.W_enc.flatten(0, 1)
        return h + self.b_enc.to(h.dtype)

    def decode_partial(self, acts: Tensor, kept_per_token: int | None = None) -> Tensor:
        return (acts @ self.W_dec.flatten(1).to(acts.dtype)).view(acts.shape[0], self.n_layers, self.d_out)

    def _fold_decoders(self, t: Tensor) -> None:
        self.W_dec /= t[:, None]
