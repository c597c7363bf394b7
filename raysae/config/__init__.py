"""Typed, strict configuration (DESIGN.md §3).

`load_config(path, overrides)` is the one way in; every command and test uses it.
"""

from raysae.config.base import ConfigError, Section
from raysae.config.loading import (
    dump_config,
    flatten_dotted,
    known_path,
    load_config,
    member_configs,
    member_path_problem,
    parse_override,
    redact,
    set_dotted,
    validate_config,
)
from raysae.config.pipeline import ActivationsConfig, DataConfig, ModelConfig, RandomModelConfig
from raysae.config.root import RaysaeConfig, sae_problems
from raysae.config.run import (
    AnalysisConfig,
    SchedulerConfig,
    SearchDim,
    StoreConfig,
    SweepConfig,
    TrackingConfig,
)
from raysae.config.sae import SAEConfig, TrainConfig

__all__ = [
    "ActivationsConfig",
    "AnalysisConfig",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "RandomModelConfig",
    "RaysaeConfig",
    "SAEConfig",
    "SchedulerConfig",
    "SearchDim",
    "Section",
    "StoreConfig",
    "SweepConfig",
    "TrackingConfig",
    "TrainConfig",
    "dump_config",
    "flatten_dotted",
    "known_path",
    "load_config",
    "member_configs",
    "member_path_problem",
    "parse_override",
    "redact",
    "sae_problems",
    "set_dotted",
    "validate_config",
]
