"""Writing analyses to MongoDB (docs/architecture.md, "Store") with pymongo: indexes, batched
idempotent upserts, and retries with back-off on transient errors.

Documents are keyed on unique indexes (`saes._id`; `features` (sae_id, index)),
so repeating a write (after a retry, or a rerun of the whole analysis) replaces,
never duplicates.
After the last batch, `write_features` reads back which indices are present
and writes any that are missing, so even writes acknowledged by a server that
then crashed before making them durable are not lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pymongo
from pymongo import errors as mongo_errors

from raysae.config import redact
from raysae.errors import StoreError

log = logging.getLogger("raysae.store")

FEATURE_INDEXES = [
    ([("sae_id", 1), ("index", 1)], {"unique": True}),
    ([("sae_id", 1), ("act_frequency", -1)], {}),
    ([("sae_id", 1), ("max_activation", -1)], {}),
    # The browser pages by rank ranges: bounded index scans that fetch one page of
    # documents, where a sort + skip fetches every feature first on some servers.
    ([("sae_id", 1), ("rank_frequency", 1)], {}),
    ([("sae_id", 1), ("rank_max", 1)], {}),
]
"""Every field the writers and the browser filter or sort on, per SAE."""

SAE_INDEXES = [([("sweep", 1)], {}), ([("name", 1)], {})]

SWEEPS = "sweeps"
"""One document per sweep (`_id` = its name): its ranking, L0/FVU points and Pareto plot."""

DUPLICATE_KEY = 11000

TRANSIENT_CODES = {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
"""Server error codes that mean "try again": host unreachable/not found, network
timeout, shutdown in progress, primary stepped down, exceeded time limit, socket
exception, not writable primary, interrupted at shutdown / by a state change."""


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, mongo_errors.ConnectionFailure):  # AutoReconnect, NotPrimary, timeouts
        return True
    if isinstance(exc, mongo_errors.BulkWriteError):
        errs = exc.details.get("writeErrors", []) + exc.details.get("writeConcernErrors", [])
        return bool(errs) and all(e.get("code") in TRANSIENT_CODES for e in errs)
    if isinstance(exc, mongo_errors.OperationFailure):
        return exc.code in TRANSIENT_CODES or exc.has_error_label("RetryableWriteError")
    return False


class Store:
    """A MongoDB database holding the `saes` and `features` collections."""

    def __init__(
        self,
        uri: str,
        database: str = "raysae",
        *,
        timeout_s: float = 10.0,
        retry_s: float = 120.0,
        batch_size: int = 256,
    ):
        self.uri_shown = redact(uri)
        self.retry_s = retry_s
        self.batch_size = batch_size
        ms = int(timeout_s * 1000)
        try:
            self.client = pymongo.MongoClient(
                uri,
                serverSelectionTimeoutMS=ms,
                connectTimeoutMS=ms,
                socketTimeoutMS=max(ms, 60_000),
                retryWrites=True,
                appname="raysae",
            )
        except (mongo_errors.ConfigurationError, ValueError, TypeError) as exc:
            raise StoreError(f"store URI {self.uri_shown!r} is malformed: {exc}") from None
        try:
            self.client.admin.command("ping")
        except mongo_errors.PyMongoError as exc:
            self.client.close()
            raise StoreError(
                f"cannot reach the store at {self.uri_shown} within {timeout_s:g} s: "
                f"{str(exc).splitlines()[0][:300]}"
            ) from None
        self.db = self.client[database]
        self.saes = self.db["saes"]
        self.features = self.db["features"]
        self.sweeps = self.db[SWEEPS]

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        """`fn()`, retried with exponential back-off while errors are transient and
        `retry_s` has not passed since the first failure."""
        deadline = None
        delay = 0.25
        while True:
            try:
                return fn()
            except mongo_errors.PyMongoError as exc:
                if not is_transient(exc):
                    raise StoreError(f"{what} failed at {self.uri_shown}: {exc}") from exc
                now = time.monotonic()
                deadline = deadline or now + self.retry_s
                if now >= deadline:
                    raise StoreError(
                        f"{what} failed at {self.uri_shown}: still unreachable after "
                        f"{self.retry_s:g} s of retries ({exc})"
                    ) from exc
                log.warning("%s: %s; retrying in %.1f s", what, str(exc).splitlines()[0][:200], delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def ensure_indexes(self) -> None:
        for collection, indexes in ((self.features, FEATURE_INDEXES), (self.saes, SAE_INDEXES)):
            for keys, options in indexes:
                self.retrying(
                    f"creating index {keys} on {collection.name}",
                    lambda c=collection, k=keys, o=options: c.create_index(k, **o),
                )

    def put_sae(self, doc: Mapping[str, Any]) -> None:
        self.retrying(
            f"writing SAE {doc['_id']}",
            lambda: self.saes.replace_one({"_id": doc["_id"]}, dict(doc), upsert=True),
        )

    def put_sweep(self, doc: Mapping[str, Any]) -> None:
        self.retrying(
            f"writing sweep {doc['_id']}",
            lambda: self.sweeps.replace_one({"_id": doc["_id"]}, dict(doc), upsert=True),
        )

    def set_sae_fields(self, sae_id: str, fields: Mapping[str, Any]) -> None:
        self.retrying(
            f"updating SAE {sae_id}", lambda: self.saes.update_one({"_id": sae_id}, {"$set": dict(fields)})
        )

    def write_features(
        self,
        sae_id: str,
        document: Callable[[int], dict[str, Any]],
        d_sae: int,
        *,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        """Replace every feature document of `sae_id`: the old ones are deleted, the
        new ones (`document(i)` for i in 0..d_sae-1) inserted in batches. Returns
        the number written.

        Inserting is ~3x faster than replace-upserts on the embedded server; the
        unique (sae_id, index) index turns a repeated insert (a retry after a
        lost acknowledgement) into a duplicate-key error that is ignored, and the
        final read-back inserts anything a crashed server dropped, building those
        documents again. `on_batch(n_written)` runs after each batch.
        """
        self.retrying(
            f"removing the old features of {sae_id}", lambda: self.features.delete_many({"sae_id": sae_id})
        )
        started = time.perf_counter()
        for written, indices in self._batches(range(d_sae)):
            self._insert(sae_id, [document(i) for i in indices])
            if on_batch:
                on_batch(written)
            if written % (self.batch_size * 16) == 0:
                log.info(
                    "%s: %d/%d feature documents written (%.0f/s)",
                    sae_id,
                    written,
                    d_sae,
                    written / (time.perf_counter() - started),
                )
        for _ in range(3):  # read back: a crashed server may have dropped acknowledged writes
            missing = sorted(set(range(d_sae)) - self.present_indices(sae_id))
            if not missing:
                return d_sae
            log.warning(
                "%s: %d feature documents missing after the write; writing them again", sae_id, len(missing)
            )
            for _, indices in self._batches(missing):
                self._insert(sae_id, [document(i) for i in indices])
        raise StoreError(f"{sae_id}: feature documents still missing at {self.uri_shown} after rewriting")

    def _batches(self, indices: Sequence[int]):
        """(number done after this batch, the batch's indices), `batch_size` at a time."""
        for start in range(0, len(indices), self.batch_size):
            batch = indices[start : start + self.batch_size]
            yield start + len(batch), batch

    def present_indices(self, sae_id: str) -> set[int]:
        return self.retrying(
            f"reading feature indices of {sae_id}",
            lambda: {d["index"] for d in self.features.find({"sae_id": sae_id}, {"index": 1, "_id": 0})},
        )

    def _insert(self, sae_id: str, docs: list[dict[str, Any]]) -> None:
        def insert():
            try:  # pymongo adds an _id to each document; retries send the same ones
                self.features.insert_many(docs, ordered=False)
            except mongo_errors.BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
                # duplicates only: those documents are already there (an earlier attempt wrote them)

        self.retrying(f"writing features {docs[0]['index']}..{docs[-1]['index']} of {sae_id}", insert)
