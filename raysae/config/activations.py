"""Config of where activations come from: the model, the text and the caches."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raysae.config.base import FloatDType, Section, SharedStorage
from raysae.config.resources import ActorPoolConfig


class RandomModelConfig(Section):
    """Shape of the tiny randomly initialised model used when `model.name` is `random`."""

    d_model: int = Field(default=64, gt=0)
    """Residual-stream width."""

    n_layers: int = Field(default=2, gt=0)
    """Number of transformer blocks."""

    n_heads: int = Field(default=4, gt=0)
    """Attention heads per block."""

    d_vocab: int | None = Field(default=None, gt=0)
    """Vocabulary size; empty means the tokenizer's."""

    n_ctx: int = Field(default=256, gt=0)
    """Longest context the model accepts."""

    seed: int = 0
    """Seed of the random weights."""


class ModelConfig(Section):
    """The language model whose activations the SAEs read."""

    name: str = "random"
    """Hub name (e.g. `gpt2`), a local Hugging Face model directory, or `random` (tests)."""

    hook_point: str = Field(default="blocks.0.hook_resid_post", pattern=r"^[A-Za-z_][\w.]*$")
    """TransformerLens hook point the SAEs read, e.g. `blocks.5.hook_resid_post`."""

    hook_point_out: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*$")
    """Output (target) hook of a transcoder, e.g. `blocks.5.hook_mlp_out`. When set and different
    from `hook_point`, the training (`tokens`) cache is paired: each row holds both hooks'
    activations from one forward pass at one token (`acts` the input, `acts_1` the target),
    shuffled together. Empty: an SAE on `hook_point` alone."""

    extra_hook_points: list[str] = Field(default_factory=list)
    """More hook points whose caches `raysae.generate` fills in the same forward pass."""

    tokenizer: str | None = None
    """Local tokenizer directory; empty uses the model's own (required for `random`)."""

    dtype: FloatDType = "float32"
    """Dtype the model runs in."""

    device: str = "auto"
    """Torch device of the model actors: `auto` (cuda when the actor has a GPU), `cpu`, `cuda`."""

    random: RandomModelConfig = Field(default_factory=RandomModelConfig)
    """Shape of the random model; used only when `name` is `random`."""


class DataConfig(Section):
    """The text corpus and how it is cut into contexts."""

    path: str | None = None
    """Local text/json/jsonl/parquet file or folder of them, or a hub dataset name."""

    split: str = "train"
    """Dataset split to read."""

    text_column: str = "text"
    """Column holding the raw text."""

    context_size: int = Field(default=128, gt=1)
    """Tokens per packed context, BOS included."""

    prepend_bos: bool = True
    """Start every context with the tokenizer's BOS token."""

    exclude_bos: bool = True
    """Leave BOS positions out of training activations (contexts are packed, never padded)."""

    seed: int = 0
    """Seed of the document shuffle before packing."""


class ActivationsConfig(Section):
    """How activations are produced, stored and read."""

    source: Literal["cache", "live"] = "cache"
    """`cache`: read (and first build) sharded files on disk; `live`: stream from the model."""

    cache_dir: SharedStorage = "cache"
    """Folder holding activation caches, shared by every trial: a path, a `file://` URI, or an
    object-store URI (`s3://bucket/prefix`, `gs://…`; credentials from the environment) that
    every node of a cluster reads."""

    layouts: list[Literal["tokens", "contexts"]] = Field(default_factory=lambda: ["tokens"])
    """Caches `raysae.generate` builds: `tokens` (1d rows for training), `contexts` (2d, analysis)."""

    n_tokens: int = Field(default=1_000_000, gt=0)
    """Activation rows in the training (`tokens`) cache."""

    n_contexts: int = Field(default=256, gt=0)
    """Contexts in the analysis (`contexts`) cache."""

    shuffle_buffer_shards: int = Field(default=4, gt=0)
    """The `tokens` layout is shuffled across contexts in buffers of this many shards."""

    dtype: FloatDType = "float32"
    """Dtype of the stored activations."""

    shard_rows: int = Field(default=32_768, gt=0)
    """Activation rows (tokens) per cache shard; 2d shards hold shard_rows // context_size contexts."""

    seed: int = 0
    """Seed of the write-time shuffle and of the per-epoch file order."""

    model_batch_size: int = Field(default=8, gt=0)
    """Contexts per model forward pass."""

    actors: ActorPoolConfig = Field(default_factory=ActorPoolConfig)
    """The pool of model actors that generates activations (for caches, or live)."""
