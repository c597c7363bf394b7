"""SAE architectures (plain PyTorch: no Ray, no `torch.distributed`, no files), behind one registry.

Adding an architecture: a file here with its `SparseAutoencoder` subclass (its
name, the SAELens class it saves as, its width checks, its activation and
losses), one entry in `ARCHITECTURES`, and its name in the config's
`Architecture` choices (tests/models/test_registry.py checks the two agree).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from raysae.errors import ConfigError
from raysae.models.base import ForwardOutput, SparseAutoencoder, saved_transcoder_architecture
from raysae.models.batchtopk import BatchTopKSAE
from raysae.models.gated import GatedSAE
from raysae.models.init import geometric_median
from raysae.models.jumprelu import JumpReLUSAE
from raysae.models.matryoshka import MatryoshkaBatchTopKSAE
from raysae.models.standard import StandardSAE
from raysae.models.topk import TopKSAE

if TYPE_CHECKING:
    from raysae.config.sae import SAEConfig

ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {
    cls.architecture: cls
    for cls in (StandardSAE, TopKSAE, BatchTopKSAE, JumpReLUSAE, MatryoshkaBatchTopKSAE, GatedSAE)
}
"""Training architecture name -> class."""


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
    """What is wrong with `sae_config` for activations of width `d_in` (its architecture's checks)."""
    return ARCHITECTURES[sae_config.architecture].width_problems(sae_config, d_in)


def build_sae(sae_config: SAEConfig, d_in: int, d_out: int | None = None) -> SparseAutoencoder:
    """A freshly initialised SAE of the configured architecture for inputs of width `d_in`
    (a transcoder's targets of width `d_out`; an SAE's `d_out` is `d_in`)."""
    if sae_config.d_in is not None and sae_config.d_in != d_in:
        raise ConfigError([("sae.d_in", f"is {sae_config.d_in} but the activations have width {d_in}")])
    problems = list(width_problems(sae_config, d_in))
    if problems:
        raise ConfigError(problems)
    if sae_config.kind == "sae":
        d_out = None  # an SAE writes its input's space whatever width its cache pairs it with
    elif d_out is None:
        raise ConfigError([("model.hook_point_out", f"sae.kind={sae_config.kind} needs an output hook")])
    return ARCHITECTURES[sae_config.architecture](sae_config, d_in, d_out)


__all__ = [
    "ARCHITECTURES",
    "BatchTopKSAE",
    "ForwardOutput",
    "GatedSAE",
    "JumpReLUSAE",
    "MatryoshkaBatchTopKSAE",
    "SparseAutoencoder",
    "StandardSAE",
    "TopKSAE",
    "build_sae",
    "geometric_median",
    "saelens_class",
    "saved_kind",
    "saved_transcoder_architecture",
    "width_problems",
]
