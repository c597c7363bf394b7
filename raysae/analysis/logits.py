"""Direct logit attribution of decoder directions (no Ray here).

A feature writes `W_dec[i]` into the residual stream; what the unembedding
reads from it, after the final norm, is `norm(W_dec[i]) @ W_U`. The norm's
positive scale factor does not change which tokens rank first, so we report
`(W_dec[i] (centred for LayerNorm) * norm weight) @ W_U`: the direction's effect
on each logit per unit of normalised residual, without the norm's bias or
`b_U`, which are the same for every feature.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


class Unembedding(NamedTuple):
    """What logit attribution needs from a model."""

    W_U: Tensor
    """[d_model, d_vocab]."""
    norm_weight: Tensor | None
    """The final norm's elementwise weight, None without a final norm."""
    centre: bool
    """The final norm subtracts the mean (LayerNorm), as RMSNorm does not."""


def model_unembedding(model) -> Unembedding:
    """The unembedding of a TransformerLens model (TransformerBridge or native)."""
    W_U = model.W_U.detach().float().cpu()
    norm = getattr(model, "ln_final", None)
    kind = str(getattr(model.cfg, "normalization_type", "") or "")
    weight = None
    if norm is not None:
        weights = [p for name, p in norm.named_parameters() if name.split(".")[-1] in ("weight", "w")]
        weight = weights[0].detach().float().cpu() if weights else torch.ones(W_U.shape[0])
    return Unembedding(W_U, weight, centre=norm is not None and kind.startswith("LN"))


class DecoderLogits(NamedTuple):
    """What each decoder row does to the logits, per feature (numpy)."""

    top_ids: np.ndarray
    """[d_sae, k] the tokens it raises most, first the most."""
    top_values: np.ndarray
    bottom_ids: np.ndarray
    """[d_sae, k] the tokens it lowers most, first the most."""
    bottom_values: np.ndarray
    edges: np.ndarray
    """[d_sae, bins + 1] each feature's histogram edges, from its lowest logit to its highest."""
    counts: np.ndarray
    """[d_sae, bins] how many vocabulary tokens fall in each bin (rows sum to d_vocab)."""


def no_logits(d_sae: int) -> DecoderLogits:
    """Empty attribution, for when the model (its unembedding) cannot be loaded."""
    return DecoderLogits(*(np.zeros((d_sae, 0)) for _ in range(6)))


@torch.no_grad()
def decoder_logits(
    W_dec: Tensor, unembed: Unembedding, k: int, *, bins: int = 40, chunk: int = 256
) -> DecoderLogits:
    """Top and bottom `k` tokens of each decoder row, and the histogram of its logits over the
    whole vocabulary in `bins` equal bins from their min to their max (as `np.histogram` bins
    them: the last bin is closed; a constant row gets the range value +- 0.5), all from one
    matmul per chunk of rows."""
    W_dec = W_dec.detach().float().cpu()
    k = min(k, unembed.W_U.shape[1])
    outs = [[], [], [], [], [], []]
    for start in range(0, W_dec.shape[0], chunk):
        rows = W_dec[start : start + chunk]
        if unembed.centre:
            rows = rows - rows.mean(-1, keepdim=True)
        if unembed.norm_weight is not None:
            rows = rows * unembed.norm_weight
        logits = rows @ unembed.W_U
        top = logits.topk(k, dim=-1)
        bottom = logits.topk(k, dim=-1, largest=False)
        edges, counts = row_histograms(logits, bins)
        parts = (top.indices, top.values, bottom.indices, bottom.values, edges, counts)
        for out, t in zip(outs, parts, strict=True):
            out.append(t)
    return DecoderLogits(*(torch.cat(o).numpy() for o in outs))


def row_histograms(values: Tensor, bins: int) -> tuple[Tensor, Tensor]:
    """Per row of `values` [n, m]: `bins` equal bins between its min and max, (edges [n, bins + 1]
    float64, counts [n, bins] int64), as `np.histogram(row, bins)` makes them."""
    lo, hi = values.aminmax(dim=-1)
    lo, hi = lo.double(), hi.double()
    flat = hi <= lo
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
    steps = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    edges = lo[:, None] + (hi - lo)[:, None] * steps
    edges[:, -1] = hi  # exactly the max, which the closed last bin holds
    # float32 bin positions: a float64 copy of a vocabulary-wide chunk would double its memory.
    scale = (bins / (hi - lo)).float()[:, None]
    which = ((values - lo.float()[:, None]) * scale).long().clamp_(0, bins - 1)
    which += torch.arange(values.shape[0])[:, None] * bins
    counts = torch.bincount(which.flatten(), minlength=values.shape[0] * bins)
    return edges, counts.view(values.shape[0], bins)
