"""Config of the run around the SAEs: sweep, analysis, result store and tracking."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from raysae.config.base import Section


class SearchDim(Section):
    """One swept config path: exactly one of `grid`, `choice`, `uniform`, `loguniform`."""

    grid: list[Any] | None = None
    """Every value is tried (a Cartesian product with the other grid dimensions)."""

    choice: list[Any] | None = None
    """Each sample picks one value uniformly."""

    uniform: list[float] | None = None
    """`[low, high]`: each sample draws uniformly."""

    loguniform: list[float] | None = None
    """`[low, high]`, both > 0: each sample draws uniformly in log space."""

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchDim:
        given = [k for k in ("grid", "choice", "uniform", "loguniform") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of grid, choice, uniform, loguniform"
                + (f" (got {', '.join(given)})" if given else "")
            )
        values = getattr(self, given[0])
        if not values:
            raise ValueError(f"{given[0]} is empty")
        if given[0] in ("uniform", "loguniform"):
            if len(values) != 2 or not values[0] < values[1]:
                raise ValueError(f"{given[0]} needs [low, high] with low < high, got {values}")
            if given[0] == "loguniform" and values[0] <= 0:
                raise ValueError(f"loguniform needs low > 0, got {values[0]}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("grid", "choice", "uniform", "loguniform") if getattr(self, k) is not None)

    @property
    def values(self) -> list[Any]:
        return getattr(self, self.kind)


class SchedulerConfig(Section):
    """Trial scheduler of the sweep."""

    type: Literal["fifo", "asha"] = "fifo"
    """`fifo` runs every trial to the end; `asha` stops poor trials early."""

    grace_period_tokens: int = Field(default=1_000_000, gt=0)
    """ASHA: tokens every trial trains before it can be stopped."""

    reduction_factor: int = Field(default=3, gt=1)
    """ASHA: keep 1 / reduction_factor of the trials at each rung."""


class SweepConfig(Section):
    """The Ray Tune sweep over any config fields."""

    search_space: dict[str, SearchDim] = Field(default_factory=dict)
    """Dotted config path -> how it is swept, e.g. `sae.k: {grid: [32, 64]}`."""

    num_samples: int = Field(default=1, gt=0)
    """Samples of the search space (each repeats the whole grid)."""

    metric: str = "fvu"
    """Metric the sweep ranks trials by."""

    mode: Literal["min", "max"] = "min"
    """Whether `metric` is minimised or maximised."""

    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    """Trial scheduler."""

    max_concurrent_trials: int | None = Field(default=None, gt=0)
    """Trials run at once; empty derives it from the cluster's resources."""

    saes_per_trial: int = Field(default=1, gt=0)
    """SAEs trained together on each batch in one trial (a population); only per-SAE settings may then be swept."""

    seed: int = 0
    """Seed of the `choice` / `uniform` / `loguniform` draws, so a rerun samples the same trials."""


class AnalysisConfig(Section):
    """Per-feature analysis written to the store."""

    which: Literal["best", "frontier", "all"] = "best"
    """SAEs of a sweep to analyse: the best by `sweep.metric`, the L0/FVU frontier, or all."""

    n_tokens: int = Field(default=100_000, gt=0)
    """Tokens analysed per SAE (whole contexts; BOS and padding are not counted)."""

    top_examples: int = Field(default=20, gt=0)
    """Top-activating contexts kept per feature (one per context, by its peak)."""

    bands: list[list[float]] = Field(default_factory=lambda: [[0.8, 1.0], [0.4, 0.6], [0.0, 0.2]])
    """Activation bands as fractions of each feature's max, `[low, high)`; a context
    belongs to a band by its peak activation (> 0). A band reaching 1.0 includes the max."""

    band_examples: int = Field(default=5, ge=0)
    """Contexts sampled per band, and non-activating contexts per feature."""

    window_before: int = Field(default=16, ge=0)
    """Tokens shown before an example's peak."""

    window_after: int = Field(default=8, ge=0)
    """Tokens shown after an example's peak."""

    histogram_bins: int = Field(default=32, gt=1)
    """Bins of each feature's activation histogram (from 0 to its max, active tokens only)."""

    logit_tokens: int = Field(default=10, gt=0)
    """Top and bottom output tokens of each decoder direction through the unembedding."""

    batch_contexts: int = Field(default=16, gt=0)
    """Contexts per analysis batch (per `encode` call on an actor)."""

    num_actors: int = Field(default=1, gt=0)
    """Analysis actors in the pool."""

    cpus_per_actor: float = Field(default=1.0, gt=0)
    """CPUs reserved per analysis actor; also its torch thread count."""

    num_gpus_per_actor: float = Field(default=0.0, ge=0)
    """GPUs per analysis actor."""

    @model_validator(mode="after")
    def _bands_in_range(self) -> AnalysisConfig:
        for band in self.bands:
            if len(band) != 2 or not 0 <= band[0] < band[1] <= 1:
                raise ValueError(f"bands: each band is [low, high] with 0 <= low < high <= 1, got {band}")
        return self


class StoreConfig(Section):
    """The MongoDB that holds analyses."""

    uri: str | None = None
    """MongoDB URI; empty uses `MONGODB_URI`, else an embedded server under the run's `store/`."""

    database: str = "raysae"
    """Database name."""

    timeout_seconds: float = Field(default=10.0, gt=0)
    """How long connecting may take before an unreachable server is an error."""

    retry_seconds: float = Field(default=120.0, ge=0)
    """How long writes keep retrying transient errors (server restart, primary step-down)."""

    batch_size: int = Field(default=256, gt=0)
    """Feature documents per bulk upsert."""


class TrackingConfig(Section):
    """MLflow tracking."""

    uri: str | None = None
    """MLflow tracking URI; empty means `MLFLOW_TRACKING_URI`, else `sqlite:///<output_dir>/mlflow.db`
    (an `output_dir` on an object store needs one of the first two)."""

    experiment: str | None = None
    """MLflow experiment; empty means the run's `name`."""
