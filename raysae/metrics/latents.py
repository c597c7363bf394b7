"""Weight-based statistics of each latent (SAEBench's core featurewise weight metrics).

For latent i, with encoder column e_i = W_enc[:, i] and decoder row d_i = W_dec[i]:
`encoder_norm` ||e_i||, `encoder_decoder_cosine_sim` cos(e_i, d_i), and
`max_encoder_cosine_sim` / `max_decoder_cosine_sim`, the largest cosine similarity of e_i
(d_i) with any other latent's. Their means over latents are `average_max_encoder_cosine_sim`
and `average_max_decoder_cosine_sim`: near 1 means duplicated latents.

The maxima are taken a block of rows at a time, so a 65k-latent SAE never holds a
d_sae x d_sae matrix: one block is at most `BLOCK_ELEMENTS` similarities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK_ELEMENTS = 1 << 26
"""Similarities computed at once (256 MiB in float32)."""


@torch.no_grad()
def max_cosine_similarity(vectors: Tensor, *, block_rows: int | None = None) -> Tensor:
    """[n, dim] -> [n] float64 (on the CPU): each row's largest cosine similarity with
    any other row. A zero row has cosine 0 with everything. Needs n >= 2."""
    n = vectors.shape[0]
    if n < 2:
        raise ValueError(f"a maximum over the other rows needs at least 2 rows, got {n}")
    unit = F.normalize(vectors.detach().float(), dim=1)
    block = block_rows or max(1, BLOCK_ELEMENTS // n)
    out = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, block):
        sims = unit[start : start + block] @ unit.T
        rows = torch.arange(sims.shape[0], device=sims.device)
        sims[rows, start + rows] = float("-inf")  # not itself
        out[start : start + sims.shape[0]] = sims.max(dim=1).values.double().cpu()
    return out


@dataclass
class LatentWeights:
    """Per-latent weight statistics ([d_sae] float64 tensors on the CPU)."""

    encoder_norm: Tensor
    encoder_decoder_cosine_sim: Tensor | None
    """None when the encoder and decoder widths differ (a transcoder between two widths)."""
    max_encoder_cosine_sim: Tensor | None
    """None when the SAE has a single latent (there is no other to compare with)."""
    max_decoder_cosine_sim: Tensor | None
    encoder_bias: Tensor | None
    """`b_mag` for gated SAEs (as SAEBench reports it), else `b_enc`; None when there is none."""

    def result(self) -> dict[str, float]:
        """The averages that go in the metrics (none for a single-latent SAE)."""
        if self.max_encoder_cosine_sim is None or self.max_decoder_cosine_sim is None:
            return {}
        return {
            "average_max_encoder_cosine_sim": float(self.max_encoder_cosine_sim.mean()),
            "average_max_decoder_cosine_sim": float(self.max_decoder_cosine_sim.mean()),
        }


@torch.no_grad()
def latent_weights(sae) -> LatentWeights:
    """The statistics of `sae`'s `W_enc [d_in, d_sae]` columns and `W_dec [d_sae, d_out]` rows."""
    encoders, decoders = sae.W_enc.detach().T, sae.W_dec.detach()
    bias = getattr(sae, "b_mag", None)
    bias = getattr(sae, "b_enc", None) if bias is None else bias
    several = encoders.shape[0] >= 2
    same_width = encoders.shape[1] == decoders.shape[1]
    return LatentWeights(
        encoder_norm=encoders.double().norm(dim=1).cpu(),
        encoder_decoder_cosine_sim=(
            F.cosine_similarity(encoders.double(), decoders.double(), dim=1).cpu() if same_width else None
        ),
        max_encoder_cosine_sim=max_cosine_similarity(encoders) if several else None,
        max_decoder_cosine_sim=max_cosine_similarity(decoders) if several else None,
        encoder_bias=None if bias is None else bias.detach().double().cpu(),
    )
