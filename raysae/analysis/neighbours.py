"""Decoder-cosine neighbours of features, within an SAE and across SAEs (no Ray here).

Two features that write (nearly) the same direction are (nearly) the same feature to
everything downstream, so the cosine of decoder rows `W_dec[i]`, `W_dec[j]` (W_dec is
[d_sae, d_out]) is what links a feature to its neighbours in its own SAE and to its
counterpart in another SAE that writes to the same space. The full [d_sae, d_sae]
similarity matrix is 1 GiB at 16k features and 16 GiB at 65k, so both searches go
through it in row chunks (a chunk x d_sae block at a time, float32) and keep only the
top of each row.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

CHUNK = 1024
"""Rows per block: 1024 x 65,536 float32 similarities are 256 MiB."""


class Neighbours(NamedTuple):
    """Per row of the querying decoder: the best rows of the other, best first."""

    indices: np.ndarray
    """[d_sae, k] int64."""
    cosines: np.ndarray
    """[d_sae, k] float32, descending along each row."""


def unit_rows(W: Tensor) -> Tensor:
    """Rows scaled to unit norm, float32 on the CPU; an all-zero row stays zero (cosine 0 with
    everything), where dividing by its norm would give NaNs."""
    return torch.nn.functional.normalize(W.detach().float().cpu(), dim=-1)


@torch.no_grad()
def decoder_neighbours(W_dec: Tensor, k: int, *, chunk: int = CHUNK) -> Neighbours:
    """Each feature's `k` nearest other features of the same SAE by decoder cosine (itself
    excluded), best first. `k` is capped at d_sae - 1."""
    unit = unit_rows(W_dec)
    d_sae = unit.shape[0]
    k = max(min(k, d_sae - 1), 0)
    indices, cosines = [], []
    for start in range(0, d_sae, chunk):
        sims = unit[start : start + chunk] @ unit.T
        rows = torch.arange(sims.shape[0])
        # -inf rather than -1 - eps: a feature must never be its own neighbour, even
        # when every cosine in its row is -1 (or all are 0, a dead all-zero row).
        sims[rows, rows + start] = -torch.inf
        top = sims.topk(k, dim=-1)
        indices.append(top.indices)
        cosines.append(top.values)
    return Neighbours(_cat(indices, d_sae, k, torch.int64), _cat(cosines, d_sae, k, torch.float32))


@torch.no_grad()
def best_matches(W_dec: Tensor, W_other: Tensor, *, chunk: int = CHUNK) -> Neighbours:
    """Each row of `W_dec`'s best-matching row of `W_other` (another SAE's decoder, same d_out)
    by cosine: indices and cosines, [d_sae, 1]."""
    unit, other = unit_rows(W_dec), unit_rows(W_other)
    if unit.shape[1] != other.shape[1]:
        raise ValueError(f"decoders write to different spaces: d_out {unit.shape[1]} vs {other.shape[1]}")
    indices, cosines = [], []
    for start in range(0, unit.shape[0], chunk):
        best = (unit[start : start + chunk] @ other.T).max(dim=-1)
        indices.append(best.indices[:, None])
        cosines.append(best.values[:, None])
    return Neighbours(
        _cat(indices, unit.shape[0], 1, torch.int64), _cat(cosines, unit.shape[0], 1, torch.float32)
    )


def _cat(parts: list[Tensor], rows: int, k: int, dtype: torch.dtype) -> np.ndarray:
    return (torch.cat(parts) if parts else torch.zeros(rows, k, dtype=dtype)).to(dtype).numpy()
