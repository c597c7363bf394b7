"""raysae: sparse autoencoders on language-model activations, at cluster scale on Ray.

The stable Python API (docs/architecture.md, "Python API"). Importing it does not import Ray.
"""

from importlib.metadata import PackageNotFoundError, version

from raysae.checkpoint import load_sae, save_sae
from raysae.config import ConfigError, RaysaeConfig, load_config
from raysae.metrics import ce_loss_recovered, evaluate
from raysae.models import ForwardOutput, SparseAutoencoder, build_sae
from raysae.training import fit

try:
    __version__ = version("raysae")  # the one version number: pyproject.toml's, from the metadata
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

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
