"""Config of where activations come from: the model, the text and the caches."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

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


LAYER_FIELD = "{layer}"
"""What a hook template holds where the layer goes (`model.layers`)."""
HOOK_PATTERN = r"^[A-Za-z_](?:[\w.]|\{layer\})*$"
"""A hook name (`blocks.5.hook_resid_post`), or a template holding `{layer}`."""


class ModelConfig(Section):
    """The language model whose activations the SAEs read."""

    name: str = "random"
    """Hub name (e.g. `gpt2`), a local Hugging Face model directory, or `random` (tests)."""

    layers: list[int] | None = None
    """The layers of a multi-layer cache (cross-layer transcoders, crosscoders), ascending, e.g.
    `[0, 1, 2]`. When set, `hook_point` (and `hook_point_out`) are templates holding `{layer}`
    (`blocks.{layer}.ln2.hook_normalized`) and every training row holds, for one token and from one
    forward pass, each layer's input (`acts` [L, d_in]) and target (`acts_1` [L, d_out]). Empty:
    one layer, `hook_point` a plain hook name."""

    hook_point: str = Field(default="blocks.0.hook_resid_post", pattern=HOOK_PATTERN)
    """TransformerLens hook point the SAEs read, e.g. `blocks.5.hook_resid_post`; with
    `model.layers`, a template holding `{layer}`."""

    hook_point_out: str | None = Field(default=None, pattern=HOOK_PATTERN)
    """Output (target) hook of a transcoder, e.g. `blocks.5.hook_mlp_out`. When set and different
    from `hook_point`, the training (`tokens`) cache is paired: each row holds both hooks'
    activations from one forward pass at one token (`acts` the input, `acts_1` the target),
    shuffled together. Empty: an SAE on `hook_point` alone. With `model.layers`, a template
    holding `{layer}`."""

    @field_validator("layers")
    @classmethod
    def _layers_ascending(cls, layers: list[int] | None) -> list[int] | None:
        if layers is None:
            return None
        if not layers:
            raise ValueError("is empty; give at least one layer, or leave it unset for one hook point")
        if any(layer < 0 for layer in layers):
            raise ValueError(f"layers are block indices from 0, got {layers}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"names a layer twice: {layers}")
        if layers != sorted(layers):
            raise ValueError(f"must be in ascending order, got {layers} (write {sorted(layers)})")
        return layers

    @field_validator("hook_point", "hook_point_out")
    @classmethod
    def _template_iff_layers(cls, hook: str | None, info: ValidationInfo) -> str | None:
        if hook is None or "layers" not in info.data:  # a bad `layers` is reported on its own
            return hook
        templated = LAYER_FIELD in hook
        if info.data["layers"] is not None and not templated:
            raise ValueError(f"{hook!r} must hold {LAYER_FIELD} when model.layers is set")
        if info.data["layers"] is None and templated:
            raise ValueError(f"{hook!r} holds {LAYER_FIELD}, which needs model.layers (e.g. [0, 1, 2])")
        if templated and hook.count(LAYER_FIELD) != 1:
            raise ValueError(f"{hook!r} must hold {LAYER_FIELD} once")
        return hook

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

    dtype: FloatDType | Literal["int8"] = "float32"
    """Dtype of the stored activations. `int8`: each row's vector at each hook is stored as int8
    with a float32 scale `max|v| / 127` (column `<column>_scale`), a quarter of float32's bytes; the
    reconstruction error (relative MSE, largest absolute error) is measured while writing and
    recorded in the manifest, and reading gives float32 again."""

    shard_rows: int = Field(default=32_768, gt=0)
    """Activation rows (tokens) per cache shard; 2d shards hold shard_rows // context_size contexts."""

    seed: int = 0
    """Seed of the write-time shuffle and of the per-epoch file order."""

    model_batch_size: int = Field(default=8, gt=0)
    """Contexts per model forward pass."""

    actors: ActorPoolConfig = Field(default_factory=ActorPoolConfig)
    """The pool of model actors that generates activations (for caches, or live)."""
