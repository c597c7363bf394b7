"""The MongoDB result store (docs/architecture.md, "Store"): a real server, or the embedded default.

`open_store` is the one way in, for the analysis that writes and for the browser
and the export that read.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from raysae.config import StoreConfig, redact
from raysae.errors import StoreError
from raysae.run_dir import RunDir
from raysae.store.client import Store, feature_filter, is_transient
from raysae.store.embedded import EmbeddedServer

__all__ = [
    "EmbeddedServer",
    "Store",
    "StoreError",
    "feature_filter",
    "is_transient",
    "open_store",
    "store_folder",
]


def store_folder(directory: str | os.PathLike) -> Path:
    """An existing embedded store's folder, given it or the run directory that holds it."""
    d = Path(directory)
    if not (d / "db").is_dir() and (d / RunDir.STORE / "db").is_dir():
        d = d / RunDir.STORE
    if not (d / "db").is_dir():
        raise StoreError(
            f"{directory}: no embedded store here (expected {d / 'db'}; it is written by "
            f"`python -m raysae.analyze` or a sweep, under <output_dir>/<name>/store)"
        )
    return d


@contextlib.contextmanager
def open_store(
    uri: str | None,
    store_dir: str | os.PathLike | None = None,
    settings: StoreConfig | None = None,
    *,
    create: bool = False,
) -> Iterator[Store]:
    """The MongoDB at `uri`; with none, an embedded server over `store_dir` that runs until
    the block ends. `create` (writers): the folder may be new, its location is printed, and
    the indexes are put in place; else (readers) `store_dir` must hold a store, or be the run
    directory that does. `settings` gives the database, timeouts, retries and batch size.
    The embedded server is a child of this process that ends with it; if it dies, the
    store's next failing operation restarts it (`Store.revive`)."""
    s = settings or StoreConfig()
    server = None
    if uri is None:
        if store_dir is None:
            raise StoreError("no store: give --uri URI (or set MONGODB_URI) or --store DIR")
        folder = Path(store_dir) if create else store_folder(store_dir)
        server = EmbeddedServer(folder).start()
        uri = server.uri
        if create:
            print(f"store: embedded MongoDB-wire server at {uri} (data in {folder.resolve()})", flush=True)
    elif create:
        print(f"store: {redact(uri)}", flush=True)
    try:
        with Store(
            uri,
            s.database,
            timeout_s=s.timeout_seconds,
            retry_s=s.retry_seconds,
            batch_size=s.batch_size,
            server=server,
        ) as store:
            if create:
                store.ensure_indexes()
            yield store
    finally:
        if server is not None:
            server.stop()
