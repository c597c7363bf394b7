"""Typed, strict configuration (docs/architecture.md, "Config").

`load_config(path, overrides)` is the one way in; every command and test uses it.
One module per section (`activations`, `sae`, `train`, `sweep`, `analysis`,
`services`, `resources`), the whole (`root`), the rules of populations and search
spaces, loading, and resolution against the environment (`resolve`).
"""

from raysae.config.activations import ActivationsConfig, DataConfig, ModelConfig, RandomModelConfig
from raysae.config.analysis import AnalysisConfig
from raysae.config.base import MEMBER, OPERATIONAL, SHARED, Scope, ScopedSection, Section
from raysae.config.loading import dump_config, load_config, parse_override, redact, validate_config
from raysae.config.paths import MOVED_KEYS, flatten_dotted, known_path, set_dotted
from raysae.config.population import check_population, member_configs, member_path_problem
from raysae.config.resources import ActorPoolConfig, WorkersConfig
from raysae.config.root import RaysaeConfig
from raysae.config.sae import SAEConfig
from raysae.config.services import StoreConfig, TrackingConfig
from raysae.config.sweep import SchedulerConfig, SearchDim, SweepConfig
from raysae.config.train import TrainConfig
from raysae.errors import ConfigError

__all__ = [
    "MEMBER",
    "MOVED_KEYS",
    "OPERATIONAL",
    "SHARED",
    "ActivationsConfig",
    "ActorPoolConfig",
    "AnalysisConfig",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "RaysaeConfig",
    "RandomModelConfig",
    "SAEConfig",
    "SchedulerConfig",
    "Scope",
    "ScopedSection",
    "SearchDim",
    "Section",
    "StoreConfig",
    "SweepConfig",
    "TrackingConfig",
    "TrainConfig",
    "WorkersConfig",
    "check_population",
    "dump_config",
    "flatten_dotted",
    "known_path",
    "load_config",
    "member_configs",
    "member_path_problem",
    "parse_override",
    "redact",
    "set_dotted",
    "validate_config",
]
