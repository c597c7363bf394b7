"""Per-token geometry of the reconstruction: norms, their ratio, cosine similarity and the
relative reconstruction bias (SAEBench's core `shrinkage` metrics and its `cossim`).

Each metric is a sum over tokens kept in float64, so streaming, batch order and splitting
across workers give the same numbers as one pass over all the data:

- `l2_norm_in`, `l2_norm_out`: mean over tokens of ||x|| and of ||x_hat||.
- `l2_ratio`: mean over tokens of ||x_hat|| / ||x||, where a token with ||x|| < 1e-4 is
  divided by 1 instead (SAELens's guard).
- `cossim`: mean over tokens of x . x_hat / (||x|| ||x_hat||). A token where x or x_hat is
  the zero vector counts 0 (SAELens would give NaN for the whole mean).
- `relative_reconstruction_bias`: sum ||x_hat||^2 / sum x . x_hat over all tokens, the gamma
  of Rajamanoharan et al. 2024 (arXiv:2404.16014, eq. 10): 1 when the reconstruction is not
  shrunk, below 1 when it is. SAELens/SAEBench take this ratio per evaluation batch and
  average the batches; over one batch the two are equal, and ours does not depend on how
  the tokens were batched.
"""

from __future__ import annotations

import torch
from torch import Tensor

SMALL_NORM = 1e-4
"""Inputs with a smaller L2 norm are divided by 1 in `l2_ratio` (SAELens's guard)."""

SUMS = ("norm_in", "norm_out", "ratio", "cos", "out_sq", "dot")


class ShrinkageStats:
    """Sums over tokens; `update(x, x_hat)` per batch, `merge` across workers."""

    def __init__(self) -> None:
        self.n_tokens = 0
        self.sums: dict[str, float] = dict.fromkeys(SUMS, 0.0)

    def update(self, x: Tensor, x_hat: Tensor) -> None:
        x = x.detach().double().reshape(-1, x.shape[-1])
        x_hat = x_hat.detach().double().reshape(-1, x.shape[-1])
        norm_in, norm_out = x.norm(dim=-1), x_hat.norm(dim=-1)
        dot = (x * x_hat).sum(-1)
        both = norm_in * norm_out
        batch = {
            "norm_in": norm_in.sum(),
            "norm_out": norm_out.sum(),
            "ratio": (norm_out / torch.where(norm_in.abs() < SMALL_NORM, 1.0, norm_in)).sum(),
            "cos": torch.where(both > 0, dot / torch.where(both > 0, both, 1.0), 0.0).sum(),
            "out_sq": norm_out.pow(2).sum(),
            "dot": dot.sum(),
        }
        for key, value in batch.items():
            self.sums[key] += float(value)
        self.n_tokens += x.shape[0]

    def merge(self, other: ShrinkageStats) -> ShrinkageStats:
        for key in SUMS:
            self.sums[key] += other.sums[key]
        self.n_tokens += other.n_tokens
        return self

    def result(self) -> dict[str, float]:
        if self.n_tokens == 0:
            raise ValueError("no activations were evaluated")
        n, s = self.n_tokens, self.sums
        return {
            "cossim": s["cos"] / n,
            "l2_norm_in": s["norm_in"] / n,
            "l2_norm_out": s["norm_out"] / n,
            "l2_ratio": s["ratio"] / n,
            "relative_reconstruction_bias": s["out_sq"] / s["dot"] if s["dot"] != 0 else float("nan"),
        }
