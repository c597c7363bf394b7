"""The whole config and the checks that span fields or sections."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import Field

from raysae.config.activations import ActivationsConfig, DataConfig, ModelConfig
from raysae.config.analysis import AnalysisConfig
from raysae.config.base import Section, SharedStorage
from raysae.config.sae import SAEConfig
from raysae.config.services import StoreConfig, TrackingConfig
from raysae.config.sweep import SweepConfig
from raysae.config.train import TrainConfig
from raysae.models import width_problems


class RaysaeConfig(Section):
    """Everything one raysae command needs (docs/architecture.md, "Config")."""

    name: str = Field(default="raysae", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """Run name: the run directory is `<output_dir>/<name>/` and SAE ids start with it."""

    output_dir: SharedStorage = "runs"
    """Folder that holds run directories, shared by every node of a cluster: a path, a `file://`
    URI, or an object-store URI (`s3://bucket/runs`; then `tracking.uri` and `store.uri` name servers)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    """The language model and hook point."""

    data: DataConfig = Field(default_factory=DataConfig)
    """The text corpus."""

    activations: ActivationsConfig = Field(default_factory=ActivationsConfig)
    """Activation generation and caches."""

    sae: SAEConfig = Field(default_factory=SAEConfig)
    """The SAE architecture and loss terms."""

    train: TrainConfig = Field(default_factory=TrainConfig)
    """Optimisation and schedules."""

    sweep: SweepConfig = Field(default_factory=SweepConfig)
    """The hyperparameter sweep."""

    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    """Feature analysis."""

    store: StoreConfig = Field(default_factory=StoreConfig)
    """Where analyses are stored."""

    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    """MLflow tracking."""


def cross_field_problems(cfg: RaysaeConfig) -> Iterator[tuple[str, str]]:
    """Checks that span several fields; each yields `(dotted_path, message)`."""
    if cfg.sae.d_in is not None:
        yield from width_problems(cfg.sae, cfg.sae.d_in)
    t = cfg.train
    if t.lr_warmup_fraction + t.lr_decay_fraction > 1:
        yield (
            "train.lr_decay_fraction",
            f"lr_warmup_fraction + lr_decay_fraction = "
            f"{t.lr_warmup_fraction + t.lr_decay_fraction:g} exceeds 1",
        )
    if t.k_anneal_start is not None and t.k_anneal_start < cfg.sae.k:
        yield "train.k_anneal_start", f"must be >= sae.k={cfg.sae.k}, got {t.k_anneal_start}"
    if t.batch_size > t.total_tokens:
        yield "train.batch_size", f"batch_size={t.batch_size} exceeds total_tokens={t.total_tokens}"
