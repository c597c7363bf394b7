"""Config of the SAE itself: architecture, size and loss terms."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from raysae.config.base import MEMBER, SHARED, FloatDType, ScopedSection

Architecture = Literal["standard", "topk", "batchtopk", "jumprelu", "matryoshka_batchtopk", "gated"]
"""The names of `raysae.models.ARCHITECTURES` (tests/models/test_registry.py keeps them equal)."""


class SAEConfig(ScopedSection):
    """One sparse autoencoder: architecture, size and the loss terms it trains with."""

    architecture: Annotated[Architecture, MEMBER] = "topk"
    """SAELens architecture name: `standard` (ReLU + L1), `topk`, `batchtopk`, `jumprelu`,
    `matryoshka_batchtopk` (BatchTopK with nested prefix losses) or `gated` (gate + magnitude paths)."""

    kind: Annotated[Literal["sae", "transcoder", "skip_transcoder", "clt", "crosscoder"], MEMBER] = "sae"
    """What it reconstructs: `sae` its input (`model.hook_point`); `transcoder` the output hook
    (`model.hook_point_out`) from the input hook, the same tokens of a paired cache; a
    `skip_transcoder` adds a dense linear map from input to output (`W_skip`). Every
    architecture but `gated` and `matryoshka_batchtopk` trains as either. Multi-layer
    dictionaries over `model.layers`: `clt`, a cross-layer transcoder (each layer's features read
    that layer's input hook and write the output hook of that and every later layer), and
    `crosscoder`, one dictionary read from and written to every layer (acausal); both train as
    `topk`, `batchtopk` or `jumprelu`."""

    topk_scope: Annotated[Literal["layer", "model"], MEMBER] = "layer"
    """Multi-layer top-k: `layer` keeps `k` features per layer per token; `model` keeps
    `k * layers` per token over all layers' features jointly (whole-model top-k)."""

    skip_connection: Annotated[bool, MEMBER] = False
    """CLT only: a dense linear map per layer from its input to its output (`W_skip`, zero at init)."""

    d_in: Annotated[int | None, SHARED] = Field(default=None, gt=0)
    """Width of the activations; left empty, it is read from the model or the cache."""

    expansion_factor: Annotated[int, MEMBER] = Field(default=8, gt=0)
    """d_sae = expansion_factor * d_in, unless `d_sae` is given (per layer for `clt`)."""

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

    matryoshka_widths: Annotated[list[int] | None, MEMBER] = None
    """Nested prefix widths of matryoshka_batchtopk, strictly increasing; d_sae is appended when
    the last is smaller (as SAELens does). Unset: [d_sae/16, d_sae/4, d_sae]."""

    jumprelu_sparsity_loss_mode: Annotated[Literal["step", "quadratic"], MEMBER] = "step"
    """JumpReLU's sparsity penalty (SAELens's names): `step` is l0_coefficient * L0; `quadratic`
    (Gemma Scope 2) is l0_coefficient * (2 / target_l0) * (L0 - target_l0)^2 per token."""

    target_l0: Annotated[float | None, MEMBER] = Field(default=None, gt=0)
    """The firing latents per token that the `quadratic` JumpReLU penalty pulls towards; required by it."""

    gated_aux_detach_decoder: Annotated[bool, MEMBER] = False
    """Gated: the auxiliary gate-path reconstruction uses a frozen copy of the decoder (the paper's,
    dictionary_learning's); false trains the decoder through it too, as SAELens 6.54 does."""

    normalize_activations: Annotated[bool, MEMBER] = True
    """Scale inputs to mean norm sqrt(d_in), estimated from data; folded into the weights on save."""

    b_dec_init: Annotated[Literal["geometric_median", "mean", "zeros"], MEMBER] = "geometric_median"
    """How the decoder bias is initialised from the first batch."""

    dtype: Annotated[FloatDType, MEMBER] = "float32"
    """Dtype of the parameters."""

    seed: Annotated[int, MEMBER] = 0
    """Seed of the weight initialisation."""
