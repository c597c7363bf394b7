"""Config of the services a run reports to: the feature store (MongoDB) and MLflow tracking."""

from __future__ import annotations

from pydantic import Field

from raysae.config.base import Section


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
