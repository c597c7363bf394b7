"""How often features fire: L0, dead and dense fractions, feature density."""

from __future__ import annotations

import torch
from torch import Tensor

DENSITY_EPS = 1e-10
"""Floor of the firing frequency before log10, so dead features map to -10."""


class FiringStats:
    """Per-feature firing counts over a window of tokens; `merge` adds windows."""

    def __init__(self, d_sae: int) -> None:
        self.counts = torch.zeros(d_sae, dtype=torch.long)
        self.n_tokens = 0

    def update(self, feature_acts: Tensor) -> None:
        fired = feature_acts.detach().reshape(-1, self.counts.numel()) > 0
        self.counts += fired.sum(0).cpu()
        self.n_tokens += fired.shape[0]

    def merge(self, other: FiringStats) -> FiringStats:
        self.counts += other.counts
        self.n_tokens += other.n_tokens
        return self

    def frequency(self) -> Tensor:
        """Fraction of the window's tokens on which each feature is > 0."""
        return self.counts.double() / max(self.n_tokens, 1)

    def result(self, dense_threshold: float = 0.1) -> dict[str, float]:
        freq = self.frequency()
        return {
            "l0": float(self.counts.sum()) / max(self.n_tokens, 1),
            "dead_fraction": float((self.counts == 0).double().mean()),
            "dense_fraction": float((freq > dense_threshold).double().mean()),
        }


def log_feature_density(frequency: Tensor) -> Tensor:
    """log10 of each feature's firing frequency (SAELens's `sparsity` tensor)."""
    return torch.log10(frequency.double().clamp_min(DENSITY_EPS)).float()
