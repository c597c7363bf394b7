"""The MongoDB result store (DESIGN.md §6): a real server, or the embedded default."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from raysae import storage
from raysae.config import ConfigError, RaysaeConfig, redact
from raysae.store.client import Store, is_transient
from raysae.store.embedded import EmbeddedServer
from raysae.store.errors import StoreError

__all__ = [
    "EmbeddedServer",
    "Store",
    "StoreError",
    "connect",
    "embedded_store_problem",
    "is_transient",
    "open_store",
    "store_uri",
]


def store_uri(cfg: RaysaeConfig) -> str | None:
    """`store.uri`, else `MONGODB_URI`, else None (the embedded server)."""
    return cfg.store.uri or os.environ.get("MONGODB_URI") or None


def embedded_store_problem(cfg: RaysaeConfig, store_dir: storage.Location) -> tuple[str, str] | None:
    """(config path, message) when no store is configured and the embedded one would have to
    keep its data in `store_dir` on an object store, which it cannot; else None."""
    if store_uri(cfg) is not None or not storage.is_remote(store_dir):
        return None
    return (
        "store.uri",
        f"the embedded store keeps its data in a local folder, not in {store_dir}: "
        "set store.uri or MONGODB_URI to a MongoDB server",
    )


@contextlib.contextmanager
def open_store(cfg: RaysaeConfig, store_dir: str | os.PathLike) -> Iterator[Store]:
    """The configured store with its indexes in place; with no URI configured, an
    embedded server over `store_dir` that runs until the block ends."""
    s = cfg.store
    uri = store_uri(cfg)
    server = None
    problem = embedded_store_problem(cfg, store_dir)
    if problem:
        raise ConfigError([problem])
    if uri is None:
        server = EmbeddedServer(Path(store_dir)).start()
        uri = server.uri
        print(
            f"store: embedded MongoDB-wire server at {uri} (data in {Path(store_dir).resolve()})", flush=True
        )
    else:
        print(f"store: {redact(uri)}", flush=True)
    try:
        with Store(
            uri, s.database, timeout_s=s.timeout_seconds, retry_s=s.retry_seconds, batch_size=s.batch_size
        ) as store:
            store.ensure_indexes()
            yield store
    finally:
        if server is not None:
            server.stop()


def store_folder(directory: str | os.PathLike) -> Path:
    """The embedded store's folder, given it or the run directory that holds it."""
    d = Path(directory)
    if not (d / "db").is_dir() and (d / "store" / "db").is_dir():
        d = d / "store"
    if not (d / "db").is_dir():
        raise StoreError(
            f"{directory}: no embedded store here (expected {d / 'db'}; it is written by "
            f"`python -m raysae.analyze` or a sweep, under <output_dir>/<name>/store)"
        )
    return d


@contextlib.contextmanager
def connect(
    uri: str | None, store_dir: str | os.PathLike | None, database: str = "raysae", timeout_s: float = 10.0
) -> Iterator[Store]:
    """A finished run's store, for reading: a MongoDB at `uri`, or an embedded server
    started over `store_dir` (a run's `store/` or the run directory) until the block ends."""
    server = None
    if store_dir is not None:
        server = EmbeddedServer(store_folder(store_dir)).start()
        uri = server.uri
    elif uri is None:
        raise StoreError("no store: give --uri URI (or set MONGODB_URI) or --store DIR")
    try:
        with Store(uri, database, timeout_s=timeout_s) as store:
            yield store
    finally:
        if server is not None:
            server.stop()
