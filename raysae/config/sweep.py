"""Config of a sweep: the search space, the ranking and the trial scheduler."""

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
