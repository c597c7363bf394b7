"""Reconstruction quality, accumulated exactly over any number of batches.

Per-dimension running statistics are merged with Chan et al.'s parallel update
in float64, so streaming, batch order and splitting across workers give the
same numbers as one pass over all the data.

- `mse`: mean over tokens and dimensions of (x - x_hat)^2, in input units.
- `fvu`: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2, the per-dimension mean
  taken over the evaluated tokens (not zero). `1 - fvu` is R^2.
- `explained_variance`: 1 - sum_d Var(x_d - x_hat_d) / sum_d Var(x_d), which
  ignores a constant offset in the error (scikit-learn's
  `explained_variance_score`, variance-weighted).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class _Moments:
    """Count, mean and summed squared deviation per dimension."""

    n: int
    mean: Tensor
    m2: Tensor

    @classmethod
    def of(cls, x: Tensor) -> _Moments:
        mean = x.mean(0)
        return cls(x.shape[0], mean, (x - mean).pow(2).sum(0))

    def merge(self, other: _Moments) -> _Moments:
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta.pow(2) * (self.n * other.n / n)
        return _Moments(n, mean, m2)


class ReconstructionStats:
    """Accumulates inputs and errors; `update(x, x_hat)` per batch, `merge` across workers."""

    def __init__(self) -> None:
        self.x: _Moments | None = None
        self.err: _Moments | None = None
        self.sse = 0.0

    def update(self, x: Tensor, x_hat: Tensor) -> None:
        x = x.detach().double().reshape(-1, x.shape[-1])
        err = x - x_hat.detach().double().reshape(-1, x.shape[-1])
        self._add(_Moments.of(x), _Moments.of(err), float(err.pow(2).sum()))

    def merge(self, other: ReconstructionStats) -> ReconstructionStats:
        if other.x is not None and other.err is not None:
            self._add(other.x, other.err, other.sse)
        return self

    def _add(self, x: _Moments, err: _Moments, sse: float) -> None:
        self.x = x if self.x is None else self.x.merge(x)
        self.err = err if self.err is None else self.err.merge(err)
        self.sse += sse

    @property
    def n_tokens(self) -> int:
        return 0 if self.x is None else self.x.n

    def result(self) -> dict[str, float]:
        if self.x is None or self.err is None:
            raise ValueError("no activations were evaluated")
        total_var = float(self.x.m2.sum())
        return {
            "mse": self.sse / (self.x.n * self.x.mean.numel()),
            "fvu": self.sse / total_var,
            "explained_variance": 1.0 - float(self.err.m2.sum()) / total_var,
        }
