"""`evaluate(sae, batches)`: reconstruction and sparsity metrics over held-out activations."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from raysae.metrics.reconstruction import ReconstructionStats
from raysae.metrics.sparsity import FiringStats


def evaluate(
    sae,
    batches: Iterable[Tensor],
    *,
    dense_threshold: float = 0.1,
    max_tokens: int | None = None,
) -> dict[str, float]:
    """Metrics of `sae` in eval mode over `batches` ([rows, d_in]).

    Returns `mse`, `fvu`, `explained_variance`, `l0`, `dead_fraction` (features
    that never fired over these tokens), `dense_fraction` (features firing on more
    than `dense_threshold` of them) and `n_tokens`.
    """
    return evaluate_with_frequency(sae, batches, dense_threshold=dense_threshold, max_tokens=max_tokens)[0]


@torch.no_grad()
def evaluate_with_frequency(
    sae,
    batches: Iterable[Tensor],
    *,
    dense_threshold: float = 0.1,
    max_tokens: int | None = None,
) -> tuple[dict[str, float], Tensor]:
    """`evaluate`'s metrics and each feature's firing frequency, from one pass."""
    was_training = sae.training
    sae.eval()
    device = sae.W_enc.device
    recon, firing = ReconstructionStats(), FiringStats(sae.d_sae)
    try:
        for batch in batches:
            if max_tokens is not None and recon.n_tokens >= max_tokens:
                break
            if max_tokens is not None:
                batch = batch[: max_tokens - recon.n_tokens]
            x = batch.to(device)
            acts = sae.encode(x)
            recon.update(x, sae.decode(acts))
            firing.update(acts)
    finally:
        sae.train(was_training)
    metrics = {**recon.result(), **firing.result(dense_threshold), "n_tokens": recon.n_tokens}
    return metrics, firing.frequency()
