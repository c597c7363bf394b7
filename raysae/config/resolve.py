"""The config resolved against the environment: which MLflow and which feature store a run uses,
and whether a run directory's location allows them (checked before any work)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from raysae import filesystem
from raysae.config.root import RaysaeConfig
from raysae.errors import ConfigError

MLFLOW_DB = "mlflow.db"
"""The default MLflow store: a SQLite file in `output_dir`, beside the run directories."""


def split_userinfo(uri: str) -> tuple[str, tuple[str, str] | None]:
    """(`uri` without its `user:password@`, the decoded (user, password) or None). The userinfo
    runs to the last `@` of the authority, so a password may hold an `@`."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


def configured_tracking_uri(cfg: RaysaeConfig) -> str | None:
    """`tracking.uri`, else `MLFLOW_TRACKING_URI`, as given (credentials included); None when unset."""
    return cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def tracking_credentials(cfg: RaysaeConfig) -> tuple[str, str] | None:
    """(user, password) from the tracking URI's userinfo, for `MLFLOW_TRACKING_USERNAME`/`_PASSWORD`;
    None when the URI has none."""
    configured = configured_tracking_uri(cfg)
    return split_userinfo(configured)[1] if configured else None


def tracking_uri(cfg: RaysaeConfig) -> str:
    """`tracking.uri`, else `MLFLOW_TRACKING_URI`, else `sqlite:///<output_dir>/mlflow.db`, always
    without `user:password@`: this is the URI MLflow is given, and MLflow prints it in its own log
    lines (`API request to …` on every retry). The credentials go through `tracking_credentials`."""
    configured = configured_tracking_uri(cfg)
    if configured:
        return split_userinfo(configured)[0]
    if filesystem.is_remote(cfg.output_dir):
        raise ConfigError(
            [
                (
                    "tracking.uri",
                    f"output_dir is {cfg.output_dir}, and MLflow's default SQLite file needs a local folder: "
                    "set tracking.uri or MLFLOW_TRACKING_URI (a tracking server, or a local sqlite:///… file)",
                )
            ]
        )
    return f"sqlite:///{Path(cfg.output_dir).resolve() / MLFLOW_DB}"


def store_uri(cfg: RaysaeConfig) -> str | None:
    """`store.uri`, else `MONGODB_URI`, else None (the embedded server)."""
    return cfg.store.uri or os.environ.get("MONGODB_URI") or None


def embedded_store_problem(cfg: RaysaeConfig, store_dir: filesystem.Location) -> tuple[str, str] | None:
    """(config path, message) when no store is configured and the embedded one would have to
    keep its data in `store_dir` on an object store, which it cannot; else None."""
    if store_uri(cfg) is not None or not filesystem.is_remote(store_dir):
        return None
    return (
        "store.uri",
        f"the embedded store keeps its data in a local folder, not in {store_dir}: "
        "set store.uri or MONGODB_URI to a MongoDB server",
    )


def check_run_storage(cfg: RaysaeConfig, store_dir: filesystem.Location | None = None) -> None:
    """Before any work: a run directory on an object store holds files only, so MLflow (and, when
    the run analyzes into the store at `store_dir`, the feature store) must be servers."""
    problems = []
    try:
        tracking_uri(cfg)
    except ConfigError as exc:
        problems += exc.problems
    store = embedded_store_problem(cfg, store_dir) if store_dir is not None else None
    if store:
        problems.append(store)
    if problems:
        raise ConfigError(problems)
