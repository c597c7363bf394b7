"""Config of the per-feature analysis written to the store."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from raysae.config.base import Section
from raysae.config.resources import ActorPoolConfig


class AnalysisConfig(Section):
    """Per-feature analysis written to the store."""

    which: Literal["best", "frontier", "all"] = "best"
    """SAEs of a sweep to analyze: the best by `sweep.metric`, the L0/FVU frontier, or all."""

    n_tokens: int = Field(default=100_000, gt=0)
    """Tokens analyzed per SAE (whole contexts; BOS and padding are not counted)."""

    top_examples: int = Field(default=20, gt=0)
    """Top-activating contexts kept per feature (one per context, by its peak)."""

    bands: list[list[float]] = Field(default_factory=lambda: [[0.8, 1.0], [0.4, 0.6], [0.0, 0.2]])
    """Activation bands as fractions of each feature's max, `[low, high)`; a context
    belongs to a band by its peak activation (> 0). A band reaching 1.0 includes the max."""

    band_examples: int = Field(default=5, ge=0)
    """Contexts sampled per band, and non-activating contexts per feature."""

    window_before: int = Field(default=16, ge=0)
    """Tokens shown before an example's peak."""

    window_after: int = Field(default=8, ge=0)
    """Tokens shown after an example's peak."""

    histogram_bins: int = Field(default=32, gt=1)
    """Bins of each feature's activation histogram (from 0 to its max, active tokens only)."""

    logit_tokens: int = Field(default=10, gt=0)
    """Top and bottom output tokens of each decoder direction through the unembedding."""

    logit_bins: int = Field(default=40, gt=1)
    """Bins of each feature's histogram of its logits over the whole vocabulary (min to max)."""

    neighbours: int = Field(default=10, ge=0)
    """Nearest other features of the same SAE by decoder cosine, kept per feature (0: none)."""

    batch_contexts: int = Field(default=16, gt=0)
    """Contexts per analysis batch (per `encode` call on an actor)."""

    actors: ActorPoolConfig = Field(default_factory=ActorPoolConfig)
    """The pool of actors that encode activations with the SAEs."""

    @model_validator(mode="after")
    def _bands_in_range(self) -> AnalysisConfig:
        for band in self.bands:
            if len(band) != 2 or not 0 <= band[0] < band[1] <= 1:
                raise ValueError(f"bands: each band is [low, high] with 0 <= low < high <= 1, got {band}")
        return self
