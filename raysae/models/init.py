"""Data-dependent initialisation helpers."""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def geometric_median(points: Tensor, max_iter: int = 200, tol: float = 1e-7) -> Tensor:
    """The point minimising the summed Euclidean distance to `points` [n, d].

    Weiszfeld's iterations from the mean, in float64. A point that lands on an
    input point gets a tiny distance floor instead of dividing by zero.
    """
    x = points.reshape(-1, points.shape[-1]).double()
    y = x.mean(0)
    for _ in range(max_iter):
        dist = (x - y).norm(dim=1).clamp_min(1e-12)
        w = 1.0 / dist
        y_next = (w[:, None] * x).sum(0) / w.sum()
        moved = (y_next - y).norm()
        y = y_next
        if moved <= tol * (1.0 + y.norm()):
            break
    return y.to(points.dtype)
