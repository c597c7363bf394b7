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


@torch.no_grad()
def decoder_logits(W_dec: Tensor, unembed: Unembedding, k: int, *, chunk: int = 1024):
    """Top and bottom `k` tokens of each decoder row: (top ids, top values, bottom ids,
    bottom values), each [d_sae, k]."""
    W_dec = W_dec.detach().float().cpu()
    k = min(k, unembed.W_U.shape[1])
    outs = [[], [], [], []]
    for start in range(0, W_dec.shape[0], chunk):
        rows = W_dec[start : start + chunk]
        if unembed.centre:
            rows = rows - rows.mean(-1, keepdim=True)
        if unembed.norm_weight is not None:
            rows = rows * unembed.norm_weight
        logits = rows @ unembed.W_U
        top = logits.topk(k, dim=-1)
        bottom = logits.topk(k, dim=-1, largest=False)
        for out, t in zip(outs, (top.indices, top.values, bottom.indices, bottom.values), strict=True):
            out.append(t)
    return tuple(torch.cat(o).numpy() for o in outs)
