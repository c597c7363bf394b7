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
from raysae.models.base import ForwardOutput, SparseAutoencoder
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
    trains as it is saved (a BatchTopK SAE is saved as `jumprelu`, which loads as JumpReLU)."""
    cls = ARCHITECTURES.get(saelens_architecture)
    return cls if cls is not None and cls.saelens_architecture == saelens_architecture else None


def width_problems(sae_config: SAEConfig, d_in: int) -> Iterator[tuple[str, str]]:
    """What is wrong with `sae_config` for activations of width `d_in` (its architecture's checks)."""
    return ARCHITECTURES[sae_config.architecture].width_problems(sae_config, d_in)


def build_sae(sae_config: SAEConfig, d_in: int) -> SparseAutoencoder:
    """A freshly initialised SAE of the configured architecture for inputs of width `d_in`."""
    if sae_config.d_in is not None and sae_config.d_in != d_in:
        raise ConfigError([("sae.d_in", f"is {sae_config.d_in} but the activations have width {d_in}")])
    problems = list(width_problems(sae_config, d_in))
    if problems:
        raise ConfigError(problems)
    return ARCHITECTURES[sae_config.architecture](sae_config, d_in)


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
    "width_problems",
]
