"""Ray resources, in one shape wherever raysae starts a pool of actors or workers."""

from __future__ import annotations

from pydantic import Field

from raysae.config.base import Section


class ActorPoolConfig(Section):
    """A Ray Data actor pool (`map_batches` with `ActorPoolStrategy`)."""

    num: int = Field(default=1, gt=0)
    """Actors in the pool."""

    cpus: float = Field(default=1.0, gt=0)
    """CPUs reserved per actor; also its torch thread count."""

    gpus: float = Field(default=0.0, ge=0)
    """GPUs per actor (0 on CPU machines, 1 on GPU nodes; fractions share one)."""


class WorkersConfig(Section):
    """The Ray Train workers of one training run (data parallel)."""

    num: int = Field(default=1, gt=0)
    """Data-parallel workers; `train.batch_size` is split evenly among them."""

    cpus: float = Field(default=0.5, gt=0)
    """CPUs reserved per worker; fractional by default so Ray Data keeps CPUs to read with."""

    gpu: bool = False
    """Give each worker one GPU (and train there)."""

    resources: dict[str, float] = Field(default_factory=dict)
    """Further Ray resources each worker asks for, e.g. `{"accelerator_type:A10G": 0.001}` to pin
    a GPU type, or a custom resource that only some nodes advertise."""
