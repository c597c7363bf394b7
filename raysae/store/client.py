"""Writing analyses to MongoDB (docs/architecture.md, "Store") with pymongo: indexes, batched
idempotent upserts, and retries with back-off on transient errors.

Documents are keyed on unique indexes (`saes._id`; `features` (sae_id, generation, index)),
so repeating a write (after a retry, or a rerun of the whole analysis) replaces,
never duplicates.
After the last batch, `write_features` reads back which indices are present
and writes any that are missing, so even writes acknowledged by a server that
then crashed before making them durable are not lost.

An SAE's features are written as a new *generation* beside the previous one,
which stays readable; only once every new document is in does the SAE's document
name the new generation (`analysis.generation`), and then the others are
deleted. Readers ask for the generation the SAE document names (`feature_filter`),
so they never see a half-written analysis.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pymongo
from pymongo import errors as mongo_errors

from raysae.config import redact
from raysae.errors import StoreError

if TYPE_CHECKING:
    from raysae.store.embedded import EmbeddedServer

log = logging.getLogger("raysae.store")

FEATURE_INDEXES = [
    ([("sae_id", 1), ("generation", 1), ("index", 1)], {"unique": True}),
    ([("sae_id", 1), ("generation", 1), ("act_frequency", -1)], {}),
    ([("sae_id", 1), ("generation", 1), ("max_activation", -1)], {}),
    # The browser pages by rank ranges: bounded index scans that fetch one page of
    # documents, where a sort + skip fetches every feature first on some servers.
    ([("sae_id", 1), ("generation", 1), ("rank_frequency", 1)], {}),
    ([("sae_id", 1), ("generation", 1), ("rank_max", 1)], {}),
    # Multikey (one entry per distinct peak token): "features whose top examples peak on
    # token X" is an index lookup, not a scan of every document's examples.
    ([("sae_id", 1), ("generation", 1), ("peak_tokens", 1)], {}),
]
"""Every field the writers and the browser filter or sort on, per SAE and generation."""

LEGACY_FEATURE_INDEXES = [
    "sae_id_1_index_1",
    "sae_id_1_act_frequency_-1",
    "sae_id_1_max_activation_-1",
    "sae_id_1_rank_frequency_1",
    "sae_id_1_rank_max_1",
]
"""Indexes of stores written before generations: the unique one would refuse a second
generation, the others only slow writes. `ensure_indexes` drops them."""

SAE_INDEXES = [([("sweep", 1)], {}), ([("name", 1)], {})]

SWEEPS = "sweeps"
"""One document per sweep (`_id` = its name): its ranking, L0/FVU points and Pareto plot."""

DUPLICATE_KEY = 11000

TRANSIENT_CODES = {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436}
"""Server error codes that mean "try again": host unreachable/not found, network
timeout, shutdown in progress, primary stepped down, exceeded time limit, socket
exception, not writable primary, interrupted at shutdown / by a state change."""


def feature_filter(sae: Mapping[str, Any]) -> dict[str, Any]:
    """The query for the features of the analysis an SAE document names: its complete
    generation (None, which also matches a missing field, for stores written before generations)."""
    return {"sae_id": sae["_id"], "generation": (sae.get("analysis") or {}).get("generation")}


def new_generation() -> str:
    return uuid.uuid4().hex[:16]


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
    """A MongoDB database holding the `saes` and `features` collections; with `server` (the
    embedded one behind `uri`), a server that died is restarted when an operation fails."""

    def __init__(
        self,
        uri: str,
        database: str = "raysae",
        *,
        timeout_s: float = 10.0,
        retry_s: float = 120.0,
        batch_size: int = 256,
        server: EmbeddedServer | None = None,
    ):
        self.uri_shown = redact(uri)
        self.server = server
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
                if self.revive(grace_s=1.0):
                    delay = 0.25
                    continue  # at once: the restarted server has the same port and data
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

    def revive(self, grace_s: float = 0.0) -> bool:
        """Restart the embedded server if it died (see `EmbeddedServer.revive`); True when it did."""
        return self.server is not None and self.server.revive(grace_s)

    def ensure_indexes(self) -> None:
        present = self.retrying("listing feature indexes", lambda: list(self.features.index_information()))
        for name in LEGACY_FEATURE_INDEXES:
            if name in present:
                self.retrying(f"dropping index {name}", lambda n=name: self.features.drop_index(n))
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
        publish: Callable[[str], None] | None = None,
    ) -> int:
        """Replace every feature document of `sae_id` with `document(i)` for i in 0..d_sae-1;
        returns the number written. The new documents go in as a new generation; once all
        are in, `publish(generation)` writes the SAE document that names it (by default
        `analysis.generation` is set on the existing one), and only then are the other
        generations deleted, so until the new analysis is complete readers see the old one.

        Inserting is ~3x faster than replace-upserts on the embedded server; the
        unique (sae_id, generation, index) index turns a repeated insert (a retry after a
        lost acknowledgement) into a duplicate-key error that is ignored, and the
        final read-back inserts anything a crashed server dropped, building those
        documents again. `on_batch(n_written)` runs after each batch.
        """
        generation = new_generation()

        def build(i: int) -> dict[str, Any]:
            return {**document(i), "sae_id": sae_id, "generation": generation}

        started = time.perf_counter()
        for written, indices in self._batches(range(d_sae)):
            self._insert(sae_id, [build(i) for i in indices])
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
            missing = sorted(set(range(d_sae)) - self.present_indices(sae_id, generation))
            if not missing:
                break
            log.warning(
                "%s: %d feature documents missing after the write; writing them again", sae_id, len(missing)
            )
            for _, indices in self._batches(missing):
                self._insert(sae_id, [build(i) for i in indices])
        else:
            raise StoreError(f"{sae_id}: feature documents still missing at {self.uri_shown} after rewriting")
        if publish is not None:
            publish(generation)
        else:
            self.set_sae_fields(sae_id, {"analysis.generation": generation})
        self.retrying(  # the previous analysis, and any a crash left half-written
            f"removing the old features of {sae_id}",
            lambda: self.features.delete_many({"sae_id": sae_id, "generation": {"$ne": generation}}),
        )
        return d_sae

    def _batches(self, indices: Sequence[int]):
        """(number done after this batch, the batch's indices), `batch_size` at a time."""
        for start in range(0, len(indices), self.batch_size):
            batch = indices[start : start + self.batch_size]
            yield start + len(batch), batch

    def present_indices(self, sae_id: str, generation: str | None) -> set[int]:
        """The feature indices of one generation of `sae_id` in the store."""
        query = {"sae_id": sae_id, "generation": generation}
        return self.retrying(
            f"reading feature indices of {sae_id}",
            lambda: {d["index"] for d in self.features.find(query, {"index": 1, "_id": 0})},
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
