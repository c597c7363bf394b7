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

SAELens (since v6.45) and SAEBench's core eval define two of these differently; we
keep our names and meanings above and give theirs their own names:

- `mse_per_token`: mean over tokens of ||x - x_hat||^2 (summed over dimensions),
  SAELens's `mse`; `d_in` times our `mse`.
- `explained_variance_saelens`: 1 - mean ||x - x_hat||^2 / (E||x||^2 - ||E x||^2),
  SAELens's `explained_variance` (its `ExplainedVarianceCalculator`): the variance is
  about the mean, the error is not centred, so it is `1 - fvu` (SAELens's guard
  included: 1 or 0 when the inputs have no variance).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

SAELENS_MIN_VARIANCE = 1e-10
"""Below this summed variance per token SAELens calls the inputs constant (explained variance 1
for a perfect reconstruction, else 0)."""


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


def _ratio(a: float, b: float) -> float:
    """a / b, and for inputs without variance (b = 0) NaN or inf rather than a ZeroDivisionError:
    these fractions of the variance do not exist there (a non-finite metric fails the SAE)."""
    if b != 0:
        return a / b
    return float("nan") if a == 0 else float("inf")


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
        n, total_var = self.x.n, float(self.x.m2.sum())
        mse_per_token, var_per_token = self.sse / n, total_var / n
        if var_per_token < SAELENS_MIN_VARIANCE:  # SAELens's guard for constant inputs
            explained_saelens = 1.0 if mse_per_token < SAELENS_MIN_VARIANCE else 0.0
        else:
            explained_saelens = 1.0 - mse_per_token / var_per_token
        return {
            "mse": self.sse / (n * self.x.mean.numel()),
            "fvu": _ratio(self.sse, total_var),
            "explained_variance": 1.0 - _ratio(float(self.err.m2.sum()), total_var),
            "mse_per_token": mse_per_token,
            "explained_variance_saelens": explained_saelens,
        }
