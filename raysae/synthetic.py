"""Activations with a known sparse structure, to check that SAEs find it.

`x = offset + sum_i a_i * atom_i + noise`: each of `n_atoms` random unit-norm
atoms fires independently on a token with probability `mean_active / n_atoms`,
with a magnitude drawn uniformly from `magnitude`. An SAE that works should
learn decoder rows close to the atoms (`recovery`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


class PlantedDictionary:
    """A random sparse dictionary and a sampler of activations built from it."""

    def __init__(
        self,
        d_in: int,
        n_atoms: int,
        *,
        mean_active: float = 4.0,
        magnitude: tuple[float, float] = (0.5, 1.5),
        noise: float = 0.01,
        offset_norm: float = 1.0,
        seed: int = 0,
    ):
        gen = torch.Generator().manual_seed(seed)
        atoms = torch.randn(n_atoms, d_in, generator=gen)
        self.atoms = atoms / atoms.norm(dim=1, keepdim=True)
        offset = torch.randn(d_in, generator=gen)
        self.offset = offset / offset.norm() * offset_norm
        self.p_active = mean_active / n_atoms
        self.magnitude = magnitude
        self.noise = noise
        self.d_in = d_in

    def sample_codes(self, n: int, gen: torch.Generator) -> Tensor:
        """[n, n_atoms] non-negative codes: which atoms fire and how strongly."""
        n_atoms = self.atoms.shape[0]
        active = torch.rand(n, n_atoms, generator=gen) < self.p_active
        lo, hi = self.magnitude
        mags = lo + (hi - lo) * torch.rand(n, n_atoms, generator=gen)
        return mags * active

    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        codes = self.sample_codes(n, gen)
        noise = self.noise * torch.randn(n, self.d_in, generator=gen)
        return self.offset + codes @ self.atoms + noise

    def batches(self, batch_size: int, n_tokens: int, seed: int = 0) -> Iterator[Tensor]:
        """`n_tokens` rows in batches of `batch_size` (the last one may be short)."""
        gen = torch.Generator().manual_seed(seed)
        for start in range(0, n_tokens, batch_size):
            yield self.sample(min(batch_size, n_tokens - start), gen)


def max_cosine(decoder: Tensor, atoms: Tensor) -> Tensor:
    """For each atom, the best cosine similarity with any decoder row."""
    d = decoder.detach().float()
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    a = atoms / atoms.norm(dim=1, keepdim=True)
    return (a @ d.T).max(dim=1).values


def recovery(decoder: Tensor, atoms: Tensor, threshold: float = 0.9) -> float:
    """Fraction of atoms matched by some decoder row at cosine >= `threshold`."""
    return float((max_cosine(decoder, atoms) >= threshold).float().mean())
