"""SAE architectures (plain PyTorch: no Ray, no `torch.distributed`, no files), behind one registry.

Adding an architecture: a file here with its `SparseAutoencoder` subclass (its
name, the SAELens class it saves as, its width checks, its activation and
losses), one entry in `ARCHITECTURES`, and its name in the config's
`Architecture` choices (tests/models/test_registry.py checks the two agree).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, overload

from raysae.errors import ConfigError
from raysae.models.base import ForwardOutput, SparseAutoencoder, saved_transcoder_architecture
from raysae.models.batchtopk import BatchTopKSAE
from raysae.models.clt import CrossLayerTranscoder
from raysae.models.crosscoder import Crosscoder
from raysae.models.gated import GatedSAE
from raysae.models.init import geometric_median
from raysae.models.jumprelu import JumpReLUSAE
from raysae.models.matryoshka import MatryoshkaBatchTopKSAE
from raysae.models.multilayer import (
    FeatureComm,
    MultiLayerDictionary,
    Unsharded,
    merge_states,
    select_topk,
    shard_slice,
    split_state,
)
from raysae.models.standard import StandardSAE
from raysae.models.topk import TopKSAE

if TYPE_CHECKING:
    from raysae.config.sae import SAEConfig

ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {
    cls.architecture: cls
    for cls in (StandardSAE, TopKSAE, BatchTopKSAE, JumpReLUSAE, MatryoshkaBatchTopKSAE, GatedSAE)
}
"""Training architecture name -> class."""

MULTILAYER_KINDS: dict[str, type[MultiLayerDictionary]] = {
    "clt": CrossLayerTranscoder,
    "crosscoder": Crosscoder,
}
"""`sae.kind` of a multi-layer dictionary -> its class (its `sae.architecture` picks the activation)."""


def saelens_class(saelens_architecture: str) -> type[SparseAutoencoder] | None:
    """The architecture that a SAELens checkpoint of this inference class loads as: the one that
    trains as it is saved (a BatchTopK SAE is saved as `jumprelu`, which loads as JumpReLU; a
    `jumprelu_skip_transcoder` as a JumpReLU skip transcoder: `saved_kind` gives the kind)."""
    cls = ARCHITECTURES.get(saelens_architecture)
    if cls is not None and cls.saelens_architecture == saelens_architecture:
        return cls
    for cls in ARCHITECTURES.values():
        if cls.transcoder_ok and cls.saelens_architecture == cls.architecture:
            for kind in ("transcoder", "skip_transcoder"):
                if saved_transcoder_architecture(cls.saelens_architecture, kind) == saelens_architecture:
                    return cls
    return None


def saved_kind(saelens_architecture: str) -> str:
    """`sae.kind` of a checkpoint saved as this cfg.json `architecture`."""
    if saelens_architecture.endswith("skip_transcoder"):
        return "skip_transcoder"
    return "transcoder" if saelens_architecture.endswith("transcoder") else "sae"


def width_problems(sae_config: SAEConfig, d_in: int) -> Iterator[tuple[str, str]]:
    """What is wrong with `sae_config` for activations of width `d_in` (its architecture's checks;
    a multi-layer dictionary's own)."""
    if sae_config.kind in MULTILAYER_KINDS:
        return MULTILAYER_KINDS[sae_config.kind].width_problems(sae_config, d_in)
    return ARCHITECTURES[sae_config.architecture].width_problems(sae_config, d_in)


@overload
def build_sae(sae_config: SAEConfig, d_in: int, d_out: int | None = None) -> SparseAutoencoder: ...
@overload
def build_sae(
    sae_config: SAEConfig,
    d_in: int,
    d_out: int | None = None,
    *,
    n_layers: int | None = None,
    shard: tuple[int, int] = (0, 1),
) -> SparseAutoencoder | MultiLayerDictionary: ...
def build_sae(
    sae_config: SAEConfig,
    d_in: int,
    d_out: int | None = None,
    *,
    n_layers: int | None = None,
    shard: tuple[int, int] = (0, 1),
) -> SparseAutoencoder | MultiLayerDictionary:
    """A freshly initialised SAE of the configured architecture for inputs of width `d_in`
    (a transcoder's targets of width `d_out`; an SAE's `d_out` is `d_in`).

    `sae.kind` `clt` / `crosscoder` builds a multi-layer dictionary over `n_layers` layers
    (`model.layers`), holding the features of `shard = (index, shards)` (all of them by default)."""
    if sae_config.d_in is not None and sae_config.d_in != d_in:
        raise ConfigError([("sae.d_in", f"is {sae_config.d_in} but the activations have width {d_in}")])
    if sae_config.kind in MULTILAYER_KINDS:
        return _build_multilayer(sae_config, d_in, d_out, n_layers, shard)
    problems = list(width_problems(sae_config, d_in))
    if problems:
        raise ConfigError(problems)
    if sae_config.kind == "sae":
        d_out = None  # an SAE writes its input's space whatever width its cache pairs it with
    elif d_out is None:
        raise ConfigError([("model.hook_point_out", f"sae.kind={sae_config.kind} needs an output hook")])
    return ARCHITECTURES[sae_config.architecture](sae_config, d_in, d_out)


def _build_multilayer(
    sae_config: SAEConfig, d_in: int, d_out: int | None, n_layers: int | None, shard: tuple[int, int]
) -> MultiLayerDictionary:
    if n_layers is None:
        raise ConfigError(
            [("model.layers", f"sae.kind={sae_config.kind} needs the layers it reads (model.layers)")]
        )
    index, shards = shard
    if sae_config.kind == "clt":
        return CrossLayerTranscoder(sae_config, n_layers, d_in, d_out, shard_index=index, shards=shards)
    return Crosscoder(sae_config, n_layers, d_in, shard_index=index, shards=shards)


__all__ = [
    "ARCHITECTURES",
    "BatchTopKSAE",
    "Crosscoder",
    "CrossLayerTranscoder",
    "FeatureComm",
    "ForwardOutput",
    "GatedSAE",
    "JumpReLUSAE",
    "MULTILAYER_KINDS",
    "MatryoshkaBatchTopKSAE",
    "MultiLayerDictionary",
    "SparseAutoencoder",
    "StandardSAE",
    "TopKSAE",
    "Unsharded",
    "build_sae",
    "geometric_median",
    "merge_states",
    "saelens_class",
    "saved_kind",
    "saved_transcoder_architecture",
    "select_topk",
    "shard_slice",
    "split_state",
    "width_problems",
]
