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


class PlantedCrossLayer:
    """Multi-layer input/target pairs for a cross-layer transcoder: `n_atoms` features per source
    layer l, each reading its own unit input direction in layer l's input and writing one known
    unit direction over the targets of layer l and a random set of later layers (each later layer
    with probability `reach`), zero on the others. For tokens `[n, L, d]`:
    `x[:, l] = offset_l + codes_l @ in_atoms[l] + noise` and
    `y[:, t] = out_offset_t + sum_{l <= t} codes_l @ out_atoms[l][:, t - l] + noise`, with the
    codes of each layer drawn as `PlantedDictionary` draws them. The layers' inputs share no code,
    so a feature is found only at its own source layer, and a CLT that works holds `out_atoms[l]`
    (flattened over its L - l target layers) among its `W_dec[l]` rows (`cross_layer_recovery`)."""

    def __init__(
        self,
        n_layers: int,
        d_in: int,
        d_out: int,
        n_atoms: int,
        *,
        reach: float = 0.5,
        seed: int = 0,
        **kw,
    ):
        self.layers = [
            PlantedDictionary(d_in, n_atoms, seed=seed + 100 * layer, **kw) for layer in range(n_layers)
        ]
        gen = torch.Generator().manual_seed(seed + 1)
        self.out_atoms: list[Tensor] = []
        """`out_atoms[l] [n_atoms, L - l, d_out]`: what layer l's features write, unit norm each."""
        for layer in range(n_layers):
            writes = torch.rand(n_atoms, n_layers - layer, generator=gen) < reach
            writes[:, 0] = True  # every feature writes its own layer, so its source is known
            w = torch.randn(n_atoms, n_layers - layer, d_out, generator=gen) * writes[..., None]
            self.out_atoms.append(w / w.flatten(1).norm(dim=1)[:, None, None])
        offset = torch.randn(n_layers, d_out, generator=gen)
        self.out_offset = offset / offset.norm(dim=1, keepdim=True)
        self.n_layers, self.d_in, self.d_out = n_layers, d_in, d_out

    @property
    def in_atoms(self) -> list[Tensor]:
        """`in_atoms[l] [n_atoms, d_in]`: the input directions of layer l's features."""
        return [p.atoms for p in self.layers]

    def sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """`(x [n, L, d_in], y [n, L, d_out])`."""
        codes = [p.sample_codes(n, gen) for p in self.layers]
        x = torch.stack([p.offset + c @ p.atoms for p, c in zip(self.layers, codes, strict=True)], 1)
        x = x + self.layers[0].noise * torch.randn(n, self.n_layers, self.d_in, generator=gen)
        y = self.out_offset + self.layers[0].noise * torch.randn(n, self.n_layers, self.d_out, generator=gen)
        for layer, (c, w) in enumerate(zip(codes, self.out_atoms, strict=True)):
            y[:, layer:] += (c @ w.flatten(1)).view(n, self.n_layers - layer, self.d_out)
        return x, y

    def batches(self, batch_size: int, n_tokens: int, seed: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """`n_tokens` (inputs, targets) rows in batches of `batch_size`."""
        gen = torch.Generator().manual_seed(seed)
        for start in range(0, n_tokens, batch_size):
            yield self.sample(min(batch_size, n_tokens - start), gen)


def cross_layer_recovery(decoders: list[Tensor], out_atoms: list[Tensor], threshold: float = 0.9) -> float:
    """Fraction of all layers' planted atoms matched at cosine >= `threshold` by a decoder of a
    feature of the same source layer (`decoders[l] [F, L - l, d]`, a CLT's `W_dec`), each compared
    over all the layers it writes, concatenated."""
    matched = [
        max_cosine(dec.flatten(1), atoms.flatten(1)) >= threshold
        for dec, atoms in zip(decoders, out_atoms, strict=True)
    ]
    return float(torch.cat(matched).float().mean())


class PlantedCrosscoder:
    """Multi-layer activations from one shared sparse dictionary, for a crosscoder: each of
    `n_atoms` atoms is one unit direction over all L layers' `d_in` dimensions concatenated
    (`atoms [n_atoms, L, d_in]`), firing as `PlantedDictionary`'s do; `x [n, L, d_in]`. A crosscoder
    that works holds the atoms among its `W_dec [F, L, d_in]` rows (compare them flattened,
    `recovery(W_dec.flatten(1), atoms.flatten(1))`)."""

    def __init__(self, n_layers: int, d_in: int, n_atoms: int, **kw):
        self.flat = PlantedDictionary(n_layers * d_in, n_atoms, **kw)
        self.n_layers, self.d_in = n_layers, d_in

    @property
    def atoms(self) -> Tensor:
        return self.flat.atoms.view(-1, self.n_layers, self.d_in)

    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        return self.flat.sample(n, gen).view(n, self.n_layers, self.d_in)

    def batches(self, batch_size: int, n_tokens: int, seed: int = 0) -> Iterator[Tensor]:
        """`n_tokens` rows `[rows, L, d_in]` in batches of `batch_size`."""
        gen = torch.Generator().manual_seed(seed)
        for start in range(0, n_tokens, batch_size):
            yield self.sample(min(batch_size, n_tokens - start), gen)
