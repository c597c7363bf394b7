"""Config of the SAE itself: architecture, size and loss terms."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from raysae.config.base import MEMBER, SHARED, FloatDType, ScopedSection

Architecture = Literal["standard", "topk", "batchtopk", "jumprelu"]
"""The names of `raysae.models.ARCHITECTURES` (tests/models/test_registry.py keeps them equal)."""


class SAEConfig(ScopedSection):
    """One sparse autoencoder: architecture, size and the loss terms it trains with."""

    architecture: Annotated[Architecture, MEMBER] = "topk"
    """SAELens architecture name: `standard` (ReLU + L1), `topk`, `batchtopk` or `jumprelu`."""

    d_in: Annotated[int | None, SHARED] = Field(default=None, gt=0)
    """Width of the activations; left empty, it is read from the model or the cache."""

    expansion_factor: Annotated[int, MEMBER] = Field(default=8, gt=0)
    """d_sae = expansion_factor * d_in, unless `d_sae` is given."""

    d_sae: Annotated[int | None, MEMBER] = Field(default=None, gt=0)
    """Number of latents; overrides `expansion_factor` when set."""

    k: Annotated[int, MEMBER] = Field(default=32, gt=0)
    """Active latents per token (topk), or on average per token over a batch (batchtopk)."""

    k_aux: Annotated[int | None, MEMBER] = Field(default=None, gt=0)
    """Dead latents used by the AuxK loss; empty means d_in // 2 (Gao et al. 2024)."""

    aux_coefficient: Annotated[float, MEMBER] = Field(default=1 / 32, ge=0)
    """Weight of the AuxK loss that revives dead latents (topk, batchtopk); 0 turns it off."""

    dead_tokens_threshold: Annotated[int, MEMBER] = Field(default=10_000_000, gt=0)
    """A latent counts as dead for AuxK after this many training tokens without firing."""

    l1_coefficient: Annotated[float, MEMBER] = Field(default=5.0, ge=0)
    """Weight of the L1 penalty (scaled by decoder row norms) of the standard architecture."""

    l0_coefficient: Annotated[float, MEMBER] = Field(default=1.0, ge=0)
    """Weight of the L0 penalty of the jumprelu architecture."""

    jumprelu_bandwidth: Annotated[float, MEMBER] = Field(default=0.05, gt=0)
    """Width of the rectangle kernel of JumpReLU's straight-through threshold gradient."""

    jumprelu_init_threshold: Annotated[float, MEMBER] = Field(default=0.01, gt=0)
    """Initial JumpReLU threshold of every latent (in normalised activation units)."""

    batchtopk_threshold_momentum: Annotated[float, MEMBER] = Field(default=0.99, ge=0, lt=1)
    """EMA momentum of BatchTopK's inference threshold (the smallest activation kept per batch)."""

    normalize_activations: Annotated[bool, MEMBER] = True
    """Scale inputs to mean norm sqrt(d_in), estimated from data; folded into the weights on save."""

    b_dec_init: Annotated[Literal["geometric_median", "mean", "zeros"], MEMBER] = "geometric_median"
    """How the decoder bias is initialised from the first batch."""

    dtype: Annotated[FloatDType, MEMBER] = "float32"
    """Dtype of the parameters."""

    seed: Annotated[int, MEMBER] = 0
    """Seed of the weight initialisation."""
