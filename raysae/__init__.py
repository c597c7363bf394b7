"""raysae: sparse autoencoders on language-model activations, at cluster scale on Ray.

The stable Python API (docs/architecture.md, "Python API"). Importing it does not import Ray.
"""

from raysae.checkpoint import load_sae, save_sae
from raysae.config import ConfigError, RaysaeConfig, load_config
from raysae.metrics import ce_loss_recovered, evaluate
from raysae.models import ForwardOutput, SparseAutoencoder, build_sae
from raysae.training import fit

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ForwardOutput",
    "RaysaeConfig",
    "SparseAutoencoder",
    "build_sae",
    "ce_loss_recovered",
    "evaluate",
    "fit",
    "load_config",
    "load_sae",
    "save_sae",
]
