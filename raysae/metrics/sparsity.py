"""How often features fire: L0, L1, dead, alive and dense fractions, feature density.

`l1` is the mean over tokens of the summed |feature activation| (SAELens's and SAEBench's
`l1`). From the firing frequency f_i of each latent over the evaluated tokens (SAEBench's
core `misc_metrics`): `frac_alive` is the fraction with f_i > 0, `freq_over_1_percent` and
`freq_over_10_percent` the fractions with f_i > 0.01 and > 0.1, and
`normalized_freq_over_1_percent` / `..._10_percent` the share of all firings (sum of f_i)
that those latents make (0 when nothing fired).
"""

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
        self.l1_sum = 0.0

    def update(self, feature_acts: Tensor) -> None:
        acts = feature_acts.detach().reshape(-1, self.counts.numel())
        fired = acts > 0
        self.counts += fired.sum(0).cpu()
        self.n_tokens += fired.shape[0]
        self.l1_sum += float(acts.double().abs().sum())

    def merge(self, other: FiringStats) -> FiringStats:
        self.counts += other.counts
        self.n_tokens += other.n_tokens
        self.l1_sum += other.l1_sum
        return self

    def frequency(self) -> Tensor:
        """Fraction of the window's tokens on which each feature is > 0."""
        return self.counts.double() / max(self.n_tokens, 1)

    def result(self, dense_threshold: float = 0.1) -> dict[str, float]:
        freq = self.frequency()
        total = float(freq.sum())

        def share(mask: Tensor) -> float:
            return float(freq[mask].sum()) / total if total > 0 else 0.0

        return {
            "l0": float(self.counts.sum()) / max(self.n_tokens, 1),
            "l1": self.l1_sum / max(self.n_tokens, 1),
            "dead_fraction": float((self.counts == 0).double().mean()),
            "dense_fraction": float((freq > dense_threshold).double().mean()),
            "frac_alive": float((self.counts > 0).double().mean()),
            "freq_over_1_percent": float((freq > 0.01).double().mean()),
            "freq_over_10_percent": float((freq > 0.1).double().mean()),
            "normalized_freq_over_1_percent": share(freq > 0.01),
            "normalized_freq_over_10_percent": share(freq > 0.1),
        }


def log_feature_density(frequency: Tensor) -> Tensor:
    """log10 of each feature's firing frequency (SAELens's `sparsity` tensor)."""
    return torch.log10(frequency.double().clamp_min(DENSITY_EPS)).float()
