"""One batch of contexts through an SAE: what the analysis keeps of it (no Ray here).

`encode_contexts` turns `[contexts, seq, d_in]` activations into an
`EncodedBatch`: dense per-feature sums (token count, firing count, activation
sum, max) and the sparse feature activations themselves (only entries > 0), plus
each (context, feature) peak. Everything later — histograms, example
selection, windows — works on these, so every activation is encoded once.
Excluded positions (BOS, padding) are zeroed before anything is counted.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from raysae.models import SparseAutoencoder


class EncodedBatch(NamedTuple):
    """What one SAE gave on one batch of contexts."""

    n_tokens: int
    """Positions analyzed (excluded ones not counted)."""
    count: np.ndarray
    """[d_sae] int64: positions where the feature is > 0."""
    total: np.ndarray
    """[d_sae] float64: sum of the feature's activations."""
    max: np.ndarray
    """[d_sae] float32: largest activation (0 when it never fires)."""
    rows: np.ndarray
    """[nnz] int32: flat position `context_row * seq + position` of each active entry."""
    feats: np.ndarray
    """[nnz] int32: its feature; entries are sorted by (row, feature)."""
    vals: np.ndarray
    """[nnz] float32: its activation."""
    peak_rows: np.ndarray
    """[m] int32: context row (in this batch) of each (context, feature) with a peak > 0."""
    peak_feats: np.ndarray
    """[m] int32: its feature."""
    peak_vals: np.ndarray
    """[m] float32: the feature's largest activation in that context."""
    peak_pos: np.ndarray
    """[m] int32: the first position where it is reached."""


@torch.no_grad()
def encode_contexts(sae: SparseAutoencoder, acts: torch.Tensor, keep: torch.Tensor) -> EncodedBatch:
    """`acts` [contexts, seq, d_in] (on the SAE's device), `keep` [contexts, seq] bool.

    Only two passes touch the dense [tokens, d_sae] activations (masking and
    finding the active entries); every statistic is then computed from the
    active entries alone, which is what keeps analysis close to a bare encode.
    """
    n_ctx, seq, d_in = acts.shape
    dtype = next(sae.parameters()).dtype
    f = sae.encode(acts.reshape(n_ctx * seq, d_in).to(dtype))
    d_sae = f.shape[1]
    f = f.masked_fill_(~keep.reshape(-1, 1).to(f.device), 0)
    rows, feats = (f > 0).nonzero(as_tuple=True)  # row-major: sorted by (row, feature)
    vals = f[rows, feats].float()
    count = torch.bincount(feats, minlength=d_sae)
    total = torch.zeros(d_sae, dtype=torch.float64, device=f.device).index_add_(0, feats, vals.double())
    fmax = torch.zeros(d_sae, device=f.device).scatter_reduce_(0, feats, vals, "amax")
    # Each (context, feature)'s peak, and the first position where it is reached.
    key = (rows // seq) * d_sae + feats
    peak = torch.zeros(n_ctx * d_sae, device=f.device).scatter_reduce_(0, key, vals, "amax")
    pos = rows % seq
    at_peak = vals == peak[key]
    first = torch.full((n_ctx * d_sae,), seq, dtype=pos.dtype, device=f.device)
    first = first.scatter_reduce_(0, key[at_peak], pos[at_peak], "amin")
    peak_keys = torch.unique(key)
    return EncodedBatch(
        n_tokens=int(keep.sum()),
        count=count.cpu().numpy().astype(np.int64),
        total=total.cpu().numpy(),
        max=fmax.cpu().numpy(),
        rows=rows.to(torch.int32).cpu().numpy(),
        feats=feats.to(torch.int32).cpu().numpy(),
        vals=vals.cpu().numpy(),
        peak_rows=(peak_keys // d_sae).to(torch.int32).cpu().numpy(),
        peak_feats=(peak_keys % d_sae).to(torch.int32).cpu().numpy(),
        peak_vals=peak[peak_keys].cpu().numpy(),
        peak_pos=first[peak_keys].to(torch.int32).cpu().numpy(),
    )


def keep_mask(tokens: np.ndarray, excluded_ids: list[int]) -> np.ndarray:
    """[contexts, seq] bool: positions whose token is not BOS or padding."""
    tokens = np.asarray(tokens)
    return (
        ~np.isin(tokens, np.asarray(excluded_ids, dtype=tokens.dtype))
        if excluded_ids
        else np.ones(tokens.shape, dtype=bool)
    )
