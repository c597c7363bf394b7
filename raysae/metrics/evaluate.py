"""`evaluate(sae, batches)`: reconstruction and sparsity metrics over held-out activations,
SAEBench's core set among them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from raysae.metrics.latents import LatentWeights, latent_weights
from raysae.metrics.reconstruction import ReconstructionStats
from raysae.metrics.shrinkage import ShrinkageStats
from raysae.metrics.sparsity import FiringStats


@dataclass
class Evaluation:
    """Everything one evaluation pass gives."""

    metrics: dict[str, float]
    """`evaluate`'s metrics."""
    frequency: Tensor
    """[d_sae] fraction of the evaluated tokens on which each latent fired."""
    latents: LatentWeights | None
    """Per-latent weight statistics; None when `latent_similarity` was off."""


def evaluate(
    sae,
    batches: Iterable[Tensor | tuple[Tensor, Tensor]],
    *,
    dense_threshold: float = 0.1,
    max_tokens: int | None = None,
    latent_similarity: bool = True,
) -> dict[str, float]:
    """Metrics of `sae` in eval mode over `batches` ([rows, d_in], or (inputs, targets) pairs).

    A transcoder's reconstruction metrics compare its output with the targets (the output
    hook); an SAE's compare with its inputs, whatever the batches pair them with.

    Reconstruction (`raysae.metrics.reconstruction`): `mse`, `fvu`, `explained_variance`,
    and SAELens's `mse_per_token`, `explained_variance_saelens`. Geometry
    (`raysae.metrics.shrinkage`): `cossim`, `l2_norm_in`, `l2_norm_out`, `l2_ratio`,
    `relative_reconstruction_bias`. Sparsity (`raysae.metrics.sparsity`): `l0`, `l1`,
    `dead_fraction` (latents that never fired over these tokens), `dense_fraction` (firing
    on more than `dense_threshold` of them), `frac_alive`, `freq_over_1_percent`,
    `freq_over_10_percent`, `normalized_freq_over_1_percent`,
    `normalized_freq_over_10_percent`. Weights (`raysae.metrics.latents`, unless
    `latent_similarity` is off, which saves 2 d_sae^2 d_in multiply-adds):
    `average_max_encoder_cosine_sim`, `average_max_decoder_cosine_sim`. And `n_tokens`.
    """
    return evaluate_in_detail(
        sae,
        batches,
        dense_threshold=dense_threshold,
        max_tokens=max_tokens,
        latent_similarity=latent_similarity,
    ).metrics


def evaluate_with_frequency(
    sae,
    batches: Iterable[Tensor | tuple[Tensor, Tensor]],
    *,
    dense_threshold: float = 0.1,
    max_tokens: int | None = None,
) -> tuple[dict[str, float], Tensor]:
    """`evaluate`'s metrics and each feature's firing frequency, from one pass."""
    result = evaluate_in_detail(sae, batches, dense_threshold=dense_threshold, max_tokens=max_tokens)
    return result.metrics, result.frequency


@torch.no_grad()
def evaluate_in_detail(
    sae,
    batches: Iterable[Tensor | tuple[Tensor, Tensor]],
    *,
    dense_threshold: float = 0.1,
    max_tokens: int | None = None,
    latent_similarity: bool = True,
) -> Evaluation:
    """`evaluate`'s metrics, each latent's firing frequency and its weight statistics."""
    was_training = sae.training
    sae.eval()
    device = sae.W_enc.device
    recon, shrinkage, firing = ReconstructionStats(), ShrinkageStats(), FiringStats(sae.d_sae)
    try:
        for batch in batches:
            if max_tokens is not None and recon.n_tokens >= max_tokens:
                break
            x, target = batch if isinstance(batch, tuple | list) else (batch, None)
            if max_tokens is not None:
                x = x[: max_tokens - recon.n_tokens]
                target = None if target is None else target[: len(x)]
            x = inputs = x.to(device)
            acts = sae.encode(inputs)
            if getattr(sae, "is_transcoder", False):
                if target is None:
                    raise ValueError("evaluating a transcoder needs (inputs, targets) batches")
                x = target.to(device)  # what the output is compared with
                x_hat = sae.reconstruct(inputs, acts)
            else:
                x_hat = sae.decode(acts)
            recon.update(x, x_hat)
            shrinkage.update(x, x_hat)
            firing.update(acts)
        latents = latent_weights(sae) if latent_similarity else None
    finally:
        sae.train(was_training)
    metrics = {
        **recon.result(),
        **shrinkage.result(),
        **firing.result(dense_threshold),
        **(latents.result() if latents is not None else {}),
        "n_tokens": recon.n_tokens,
    }
    return Evaluation(metrics, firing.frequency(), latents)
