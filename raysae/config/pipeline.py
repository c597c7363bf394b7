"""Config of where activations come from: the model, the text and the caches."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raysae.config.base import Section
from raysae.config.sae import FloatDType


class RandomModelConfig(Section):
    """Shape of the tiny randomly initialised model used when `model.name` is `random`."""

    d_model: int = Field(default=64, gt=0)
    """Residual-stream width."""

    n_layers: int = Field(default=2, gt=0)
    """Number of transformer blocks."""

    n_heads: int = Field(default=4, gt=0)
    """Attention heads per block."""

    d_vocab: int = Field(default=512, gt=0)
    """Vocabulary size."""

    n_ctx: int = Field(default=256, gt=0)
    """Longest context the model accepts."""

    seed: int = 0
    """Seed of the random weights."""


class ModelConfig(Section):
    """The language model whose activations the SAEs read."""

    name: str = "random"
    """Hub name (e.g. `gpt2`), a local Hugging Face model directory, or `random` (tests)."""

    hook_point: str = "blocks.0.hook_resid_post"
    """TransformerLens hook point to read, e.g. `blocks.5.hook_resid_post`."""

    dtype: FloatDType = "float32"
    """Dtype the model runs in."""

    random: RandomModelConfig = Field(default_factory=RandomModelConfig)
    """Shape of the random model; used only when `name` is `random`."""


class DataConfig(Section):
    """The text corpus and how it is cut into contexts."""

    path: str | None = None
    """Local text/json/parquet file or folder, or a hub dataset name."""

    split: str = "train"
    """Dataset split to read."""

    text_column: str = "text"
    """Column holding the raw text."""

    context_size: int = Field(default=128, gt=1)
    """Tokens per packed context, BOS included."""

    prepend_bos: bool = True
    """Start every context with the tokenizer's BOS token."""

    exclude_bos: bool = True
    """Leave BOS and padding positions out of training activations."""

    seed: int = 0
    """Seed of the document shuffle before packing."""


class ActivationsConfig(Section):
    """How activations are produced, stored and read."""

    source: Literal["cache", "live"] = "cache"
    """`cache`: read (and first build) sharded files on disk; `live`: stream from the model."""

    cache_dir: str = "cache"
    """Folder (or URI) holding activation caches, shared by every trial."""

    n_tokens: int = Field(default=1_000_000, gt=0)
    """Activation rows to generate for the training cache."""

    dtype: FloatDType = "float32"
    """Dtype of the stored activations."""

    shard_rows: int = Field(default=65_536, gt=0)
    """Rows per cache shard."""

    model_batch_size: int = Field(default=8, gt=0)
    """Contexts per model forward pass."""

    num_actors: int = Field(default=1, gt=0)
    """Model actors in the generation pool."""

    num_gpus_per_actor: float = Field(default=0.0, ge=0)
    """GPUs per generation actor (0 on CPU machines, 1 on GPU nodes)."""
