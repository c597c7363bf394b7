"""Config of an SAE's training: token budget, batch, schedules, and how the run executes.

Each field's `Scope` says whether the SAEs of a population may differ in it and
whether a resumed run may change it (`raysae.config.base.Scope`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from raysae.config.base import MEMBER, OPERATIONAL, SHARED, ScopedSection
from raysae.config.resources import WorkersConfig


class TrainConfig(ScopedSection):
    """The optimisation of one SAE: token budget, batch, learning-rate and sparsity schedules."""

    total_tokens: Annotated[int, SHARED] = Field(default=10_000_000, gt=0)
    """Training tokens (activation rows) seen by each SAE."""

    batch_size: Annotated[int, SHARED] = Field(default=4096, gt=0)
    """Activation rows per optimiser step."""

    lr: Annotated[float, MEMBER] = Field(default=3e-4, gt=0)
    """Peak Adam learning rate."""

    adam_beta1: Annotated[float, MEMBER] = Field(default=0.9, ge=0, lt=1)
    """Adam's first-moment decay."""

    adam_beta2: Annotated[float, MEMBER] = Field(default=0.999, ge=0, lt=1)
    """Adam's second-moment decay."""

    lr_warmup_fraction: Annotated[float, MEMBER] = Field(default=0.01, ge=0, le=1)
    """Fraction of the budget over which the learning rate rises linearly from 0."""

    lr_decay_fraction: Annotated[float, MEMBER] = Field(default=0.2, ge=0, le=1)
    """Final fraction of the budget over which the learning rate decays linearly to 0."""

    sparsity_warmup_fraction: Annotated[float, MEMBER] = Field(default=0.05, ge=0, le=1)
    """Fraction of the budget over which the L1 / L0 coefficient rises linearly from 0."""

    k_anneal_fraction: Annotated[float, MEMBER] = Field(default=0.0, ge=0, le=1)
    """Fraction of the budget over which k falls linearly from `k_anneal_start` to `sae.k`."""

    k_anneal_start: Annotated[int | None, MEMBER] = Field(default=None, gt=0)
    """Starting k of the annealing; empty means min(4 * k, d_sae)."""

    grad_clip_norm: Annotated[float | None, MEMBER] = Field(default=1.0, gt=0)
    """Clip the gradient to this global norm; empty turns clipping off."""

    init_tokens: Annotated[int, SHARED] = Field(default=4096, gt=0)
    """Rows of the first batch(es) used to estimate the input scale and the decoder-bias median."""

    device: Annotated[str, OPERATIONAL] = "auto"
    """Torch device of the bare loop: `auto` (cuda when available), `cpu`, `cuda`, `cuda:1`, ..."""

    precision: Annotated[Literal["fp32", "bf16"], OPERATIONAL] = "fp32"
    """Arithmetic of the step: `fp32`, or `bf16` (bf16 matmuls and pre-activations under autocast,
    fp32 master weights, Adam state and losses; checkpoints are saved in `sae.dtype` either way)."""

    log_every_steps: Annotated[int, OPERATIONAL] = Field(default=50, gt=0)
    """Report training metrics every this many steps."""

    eval_tokens: Annotated[int, SHARED] = Field(default=100_000, gt=0)
    """Held-out activation rows for evaluation: the cache's last shards (whole shards), or extra live contexts."""

    dense_threshold: Annotated[float, SHARED] = Field(default=0.1, gt=0, le=1)
    """A latent firing on more than this fraction of tokens counts as dense."""

    seed: Annotated[int, MEMBER] = 0
    """Seed of the training loop (data order of synthetic sources, AuxK ties)."""

    feature_shards: Annotated[int, OPERATIONAL] = Field(default=1, gt=0)
    """Multi-layer dictionaries: split the features (every layer's encoder columns and decoder
    rows, and their optimiser state) across this many workers, which encode their slice and sum
    their reconstructions; the workers are `feature_shards` times the data-parallel replicas.
    `sae.d_sae` (per layer) must divide by it."""

    workers: Annotated[WorkersConfig, OPERATIONAL] = Field(default_factory=WorkersConfig)
    """The Ray Train workers (`python -m raysae.train`, sweeps): how many, and what each reserves."""

    max_failures: Annotated[int, OPERATIONAL] = Field(default=2, ge=-1)
    """Times a run restarts from its latest checkpoint after a worker dies; -1 means forever."""

    checkpoint_every_tokens: Annotated[int | None, OPERATIONAL] = Field(default=None, gt=0)
    """Training tokens between checkpoints; empty means ten checkpoints per run."""

    checkpoints_to_keep: Annotated[int, OPERATIONAL] = Field(default=2, gt=0)
    """Most recent training checkpoints kept on disk."""

    eval_every_tokens: Annotated[int | None, OPERATIONAL] = Field(default=None, gt=0)
    """Evaluate on held-out activations every this many tokens (and log it); empty: only at the end."""

    ce_contexts: Annotated[int, OPERATIONAL] = Field(default=16, ge=0)
    """Held-out contexts for CE-loss recovered and KL at the end; 0 skips them (no model is loaded)."""

    population: Annotated[list[dict[str, Any]], OPERATIONAL] = Field(default_factory=list)
    """K SAEs trained on the same batches: one mapping of `sae.*` / per-SAE `train.*` overrides each."""
