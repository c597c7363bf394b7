"""The kept latents of the top-k family as (indices, values), and the decode from them.

A top-k SAE keeps k of d_sae latents per token; decoding from a dense `[batch, d_sae]`
activation matrix writes and multiplies mostly zeros. `ActiveLatents.decode` sums the k
decoder rows per token with `embedding_bag` instead (pure PyTorch, any device), and the
firing bookkeeping and L0 come from the indices. The dense matrix is built only when
asked for (`dense`), for callers that want it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class ActiveLatents(NamedTuple):
    """The latents a batch kept: `values[i]` at latent `indices[i]`.

    Two layouts: rows (`rows` None): `indices`, `values` are `[batch, n]`, n per token (TopK,
    AuxK; a value may be 0, kept but not firing). Flat (BatchTopK, a variable count per token):
    1-d, sorted by token, token `rows[i]`, each token's entries starting at `offsets[token]`.
    """

    indices: Tensor
    values: Tensor
    batch: int
    d_sae: int
    rows: Tensor | None = None
    offsets: Tensor | None = None

    @classmethod
    def flat(cls, positions: Tensor, values: Tensor, batch: int, d_sae: int) -> ActiveLatents:
        """From positions in the flattened `[batch, d_sae]` matrix, in any order (sorted here, so
        each token's entries are one bag of `embedding_bag`; no count is read on the host)."""
        positions, order = positions.sort()
        rows = positions // d_sae
        offsets = torch.searchsorted(rows, torch.arange(batch, device=rows.device, dtype=rows.dtype))
        return cls(positions % d_sae, values[order], batch, d_sae, rows, offsets)

    def decode(self, W_dec: Tensor) -> Tensor:
        """`dense() @ W_dec` without the dense matrix: [batch, d_in], in the values' dtype
        (so bf16 values under autocast decode with a bf16 copy of the decoder)."""
        weight = W_dec.to(self.values.dtype)
        if self.offsets is None:
            return F.embedding_bag(self.indices, weight, per_sample_weights=self.values, mode="sum")
        return F.embedding_bag(self.indices, weight, self.offsets, per_sample_weights=self.values, mode="sum")

    def dense(self) -> Tensor:
        """The `[batch, d_sae]` activations (differentiable in `values`)."""
        if self.rows is None:
            zeros = self.values.new_zeros(self.batch, self.d_sae)
            return zeros.scatter(1, self.indices, self.values)
        flat = self.values.new_zeros(self.batch * self.d_sae)
        return flat.scatter(0, self.rows * self.d_sae + self.indices, self.values).view(
            self.batch, self.d_sae
        )

    def fired(self) -> Tensor:
        """[d_sae] float, 1 where a latent fired (a value > 0) on some token."""
        hits = torch.zeros(self.d_sae, dtype=torch.float32, device=self.values.device)
        hits.index_add_(0, self.indices.reshape(-1), (self.values.detach() > 0).reshape(-1).float())
        return (hits > 0).float()

    def l0(self) -> Tensor:
        """Mean firing latents per token."""
        return (self.values.detach() > 0).sum().float() / self.batch

    def smallest_fired(self) -> Tensor:
        """[the smallest firing value, 1], or [0, 0] when nothing fired (fp32)."""
        values = self.values.detach()
        fired = values > 0
        smallest = torch.where(fired, values, float("inf")).min().float() if values.numel() else None
        any_fired = fired.any()
        if smallest is None:
            return torch.zeros(2, dtype=torch.float32, device=values.device)
        return torch.stack([torch.where(any_fired, smallest, 0.0), any_fired.float()])
