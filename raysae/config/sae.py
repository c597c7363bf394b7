"""Config of the SAE itself and of its training schedule."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from raysae.config.base import Section

Architecture = Literal["standard", "topk", "batchtopk", "jumprelu"]
FloatDType = Literal["float32", "bfloat16", "float16"]


class SAEConfig(Section):
    """One sparse autoencoder: architecture, size and the loss terms it trains with."""

    architecture: Architecture = "topk"
    """SAELens architecture name: `standard` (ReLU + L1), `topk`, `batchtopk` or `jumprelu`."""

    d_in: int | None = Field(default=None, gt=0)
    """Width of the activations; left empty, it is read from the model or the cache."""

    expansion_factor: int = Field(default=8, gt=0)
    """d_sae = expansion_factor * d_in, unless `d_sae` is given."""

    d_sae: int | None = Field(default=None, gt=0)
    """Number of latents; overrides `expansion_factor` when set."""

    k: int = Field(default=32, gt=0)
    """Active latents per token (topk), or on average per token over a batch (batchtopk)."""

    k_aux: int | None = Field(default=None, gt=0)
    """Dead latents used by the AuxK loss; empty means d_in // 2 (Gao et al. 2024)."""

    aux_coefficient: float = Field(default=1 / 32, ge=0)
    """Weight of the AuxK loss that revives dead latents (topk, batchtopk); 0 turns it off."""

    dead_tokens_threshold: int = Field(default=10_000_000, gt=0)
    """A latent counts as dead for AuxK after this many training tokens without firing."""

    l1_coefficient: float = Field(default=5.0, ge=0)
    """Weight of the L1 penalty (scaled by decoder row norms) of the standard architecture."""

    l0_coefficient: float = Field(default=1.0, ge=0)
    """Weight of the L0 penalty of the jumprelu architecture."""

    jumprelu_bandwidth: float = Field(default=0.05, gt=0)
    """Width of the rectangle kernel of JumpReLU's straight-through threshold gradient."""

    jumprelu_init_threshold: float = Field(default=0.01, gt=0)
    """Initial JumpReLU threshold of every latent (in normalised activation units)."""

    batchtopk_threshold_momentum: float = Field(default=0.99, ge=0, lt=1)
    """EMA momentum of BatchTopK's inference threshold (the smallest activation kept per batch)."""

    normalize_activations: bool = True
    """Scale inputs to mean norm sqrt(d_in), estimated from data; folded into the weights on save."""

    b_dec_init: Literal["geometric_median", "mean", "zeros"] = "geometric_median"
    """How the decoder bias is initialised from the first batch."""

    dtype: FloatDType = "float32"
    """Dtype of the parameters."""

    seed: int = 0
    """Seed of the weight initialisation."""


class TrainConfig(Section):
    """The optimisation of one SAE: token budget, batch, learning-rate and sparsity schedules."""

    total_tokens: int = Field(default=10_000_000, gt=0)
    """Training tokens (activation rows) seen by each SAE."""

    batch_size: int = Field(default=4096, gt=0)
    """Activation rows per optimiser step."""

    lr: float = Field(default=3e-4, gt=0)
    """Peak Adam learning rate."""

    adam_beta1: float = Field(default=0.9, ge=0, lt=1)
    """Adam's first-moment decay."""

    adam_beta2: float = Field(default=0.999, ge=0, lt=1)
    """Adam's second-moment decay."""

    lr_warmup_fraction: float = Field(default=0.01, ge=0, le=1)
    """Fraction of the budget over which the learning rate rises linearly from 0."""

    lr_decay_fraction: float = Field(default=0.2, ge=0, le=1)
    """Final fraction of the budget over which the learning rate decays linearly to 0."""

    sparsity_warmup_fraction: float = Field(default=0.05, ge=0, le=1)
    """Fraction of the budget over which the L1 / L0 coefficient rises linearly from 0."""

    k_anneal_fraction: float = Field(default=0.0, ge=0, le=1)
    """Fraction of the budget over which k falls linearly from `k_anneal_start` to `sae.k`."""

    k_anneal_start: int | None = Field(default=None, gt=0)
    """Starting k of the annealing; empty means min(4 * k, d_sae)."""

    grad_clip_norm: float | None = Field(default=1.0, gt=0)
    """Clip the gradient to this global norm; empty turns clipping off."""

    init_tokens: int = Field(default=4096, gt=0)
    """Rows of the first batch(es) used to estimate the input scale and the decoder-bias median."""

    device: str = "auto"
    """Torch device of the bare loop: `auto` (cuda when available), `cpu`, `cuda`, `cuda:1`, ..."""

    log_every_steps: int = Field(default=50, gt=0)
    """Report training metrics every this many steps."""

    eval_tokens: int = Field(default=100_000, gt=0)
    """Held-out activation rows for evaluation: the cache's last shards (whole shards), or extra live contexts."""

    dense_threshold: float = Field(default=0.1, gt=0, le=1)
    """A latent firing on more than this fraction of tokens counts as dense."""

    seed: int = 0
    """Seed of the training loop (data order of synthetic sources, AuxK ties)."""

    num_workers: int = Field(default=1, gt=0)
    """Data-parallel Ray Train workers (`python -m raysae.train`, sweeps); the batch is split among them."""

    use_gpu: bool = False
    """Give each Ray Train worker one GPU (and train there)."""

    cpus_per_worker: float = Field(default=0.5, gt=0)
    """CPUs reserved per Ray Train worker; fractional by default so Ray Data keeps CPUs to read with."""

    worker_resources: dict[str, float] = Field(default_factory=dict)
    """Further Ray resources each Train worker asks for, e.g. `{"accelerator_type:A10G": 0.001}` to pin
    a GPU type, or a custom resource that only some nodes advertise."""

    max_failures: int = Field(default=2, ge=-1)
    """Times a run restarts from its latest checkpoint after a worker dies; -1 means forever."""

    checkpoint_every_tokens: int | None = Field(default=None, gt=0)
    """Training tokens between checkpoints; empty means ten checkpoints per run."""

    checkpoints_to_keep: int = Field(default=2, gt=0)
    """Most recent training checkpoints kept on disk."""

    eval_every_tokens: int | None = Field(default=None, gt=0)
    """Evaluate on held-out activations every this many tokens (and log it); empty: only at the end."""

    ce_contexts: int = Field(default=16, ge=0)
    """Held-out contexts for CE-loss recovered and KL at the end; 0 skips them (no model is loaded)."""

    population: list[dict[str, Any]] = Field(default_factory=list)
    """K SAEs trained on the same batches: one mapping of `sae.*` / per-SAE `train.*` overrides each."""
