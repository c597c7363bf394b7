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


class PlantedTranscoder:
    """Input/target pairs that share one sparse code: `x` as `PlantedDictionary` draws it, and
    `y = out_offset + codes @ out_atoms + x @ skip.T + noise`, with `skip` a dense random map
    (zero unless `skip_scale`). A transcoder that works finds the input atoms in its encoder
    columns and the output atoms in its decoder rows; a skip transcoder finds `skip` in `W_skip`.
    `orthogonal_inputs` makes the input atoms orthonormal, so that the encoder side has one
    right answer to compare with (an encoder column reads its atom's dual direction, which for
    random overcomplete atoms is not the atom). `dense` adds isotropic Gaussian activity of that standard deviation per dimension to `x`,
    code-free: without it a linear map of `x` could stand in for part of the sparse term, so
    `skip` would not be the only exact solution's dense part that training finds."""

    def __init__(
        self,
        d_in: int,
        d_out: int,
        n_atoms: int,
        *,
        skip_scale: float = 0.0,
        dense: float = 0.0,
        orthogonal_inputs: bool = False,
        seed: int = 0,
        **kw,
    ):
        self.inputs = PlantedDictionary(d_in, n_atoms, seed=seed, **kw)
        gen = torch.Generator().manual_seed(seed + 1)
        if orthogonal_inputs:  # the ideal encoder column is then the atom itself (its dual)
            if n_atoms > d_in:
                raise ValueError(f"{n_atoms} orthogonal atoms do not fit in {d_in} dimensions")
            q, _ = torch.linalg.qr(torch.randn(d_in, n_atoms, generator=gen))
            self.inputs.atoms = q.T.contiguous()
        out = torch.randn(n_atoms, d_out, generator=gen)
        self.out_atoms = out / out.norm(dim=1, keepdim=True)
        offset = torch.randn(d_out, generator=gen)
        self.out_offset = offset / offset.norm()
        self.skip = skip_scale * torch.randn(d_out, d_in, generator=gen) / d_in**0.5
        self.d_in, self.d_out, self.dense = d_in, d_out, dense

    @property
    def in_atoms(self) -> Tensor:
        return self.inputs.atoms

    def sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        codes = self.inputs.sample_codes(n, gen)
        p = self.inputs
        x = p.offset + codes @ p.atoms + (p.noise + self.dense) * torch.randn(n, self.d_in, generator=gen)
        y = self.out_offset + codes @ self.out_atoms + x @ self.skip.T
        return x, y + p.noise * torch.randn(n, self.d_out, generator=gen)

    def batches(self, batch_size: int, n_tokens: int, seed: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """`n_tokens` (input, target) rows in batches of `batch_size`."""
        gen = torch.Generator().manual_seed(seed)
        for start in range(0, n_tokens, batch_size):
            yield self.sample(min(batch_size, n_tokens - start), gen)
