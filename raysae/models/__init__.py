"""SAE architectures (plain PyTorch, no Ray), behind one registry keyed by SAELens names."""

from __future__ import annotations

from raysae.config import ConfigError, SAEConfig, sae_problems
from raysae.models.base import ForwardOutput, SparseAutoencoder
from raysae.models.batchtopk import BatchTopKSAE
from raysae.models.init import geometric_median
from raysae.models.jumprelu import JumpReLUSAE
from raysae.models.standard import StandardSAE
from raysae.models.topk import TopKSAE

ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {
    cls.architecture: cls for cls in (StandardSAE, TopKSAE, BatchTopKSAE, JumpReLUSAE)
}


def build_sae(sae_config: SAEConfig, d_in: int) -> SparseAutoencoder:
    """A freshly initialised SAE of the configured architecture for inputs of width `d_in`."""
    if sae_config.d_in is not None and sae_config.d_in != d_in:
        raise ConfigError([("sae.d_in", f"is {sae_config.d_in} but the activations have width {d_in}")])
    problems = list(sae_problems(sae_config, d_in))
    if problems:
        raise ConfigError(problems)
    return ARCHITECTURES[sae_config.architecture](sae_config, d_in)


__all__ = [
    "ARCHITECTURES",
    "BatchTopKSAE",
    "ForwardOutput",
    "JumpReLUSAE",
    "SparseAutoencoder",
    "StandardSAE",
    "TopKSAE",
    "build_sae",
    "geometric_median",
]
