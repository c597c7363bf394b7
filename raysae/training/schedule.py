"""Schedules as pure functions of training progress (tokens seen / token budget)."""

from __future__ import annotations


def lr_factor(progress: float, warmup: float, decay: float) -> float:
    """Linear warm-up over the first `warmup`, linear decay to 0 over the last `decay`."""
    factor = 1.0
    if warmup > 0 and progress < warmup:
        factor = min(factor, progress / warmup)
    if decay > 0 and progress > 1 - decay:
        factor = min(factor, (1 - progress) / decay)
    return max(factor, 0.0)


def ramp(progress: float, fraction: float) -> float:
    """0 -> 1 linearly over the first `fraction` of training (the sparsity warm-up)."""
    return 1.0 if fraction <= 0 else min(1.0, progress / fraction)


def annealed_k(progress: float, k_start: int, k_end: int, fraction: float) -> int:
    """k falls linearly from `k_start` to `k_end` over the first `fraction` of training."""
    if fraction <= 0 or progress >= fraction:
        return k_end
    return max(k_end, round(k_start + (k_end - k_start) * progress / fraction))
