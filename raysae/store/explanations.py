"""Feature explanations (text, who wrote it, an optional score) and the searches over them.

Explanations live in their own collection, `explanations`, one document per explanation
(`sae_id`, `index`, `text`, `source`, `score`, `created_at`), not inside the feature
documents: a re-analysis writes a new feature generation and deletes the old documents,
and what people wrote about a feature must outlive that. Both the browser and the
`raysae explanations` command go through the functions here.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId

from raysae.store.client import Store, feature_filter

COLLECTION = "explanations"
MAX_TEXT = 2000
"""Characters an explanation may have: a sentence or a paragraph, not a document."""
MAX_SOURCE = 200
SEARCH_LIMIT = 100
"""Results one search returns at most; the caller is told when there were more."""

INDEXES = [
    ([("sae_id", 1), ("index", 1)], {}),
]


def collection(store: Store) -> Any:
    return store.db[COLLECTION]


def ensure_indexes(store: Store) -> None:
    """The (sae_id, index) index the feature page and export read by; idempotent."""
    for keys, options in INDEXES:
        store.retrying(
            f"creating index {keys} on {COLLECTION}",
            lambda k=keys, o=options: collection(store).create_index(k, **o),
        )


def validate(text: Any, source: Any = "user", score: Any = None) -> tuple[str, str, float | None]:
    """(text, source, score) cleaned, or ValueError saying what is wrong: text must be a
    non-empty string of at most MAX_TEXT characters, source a non-empty string (default
    "user"), score absent or a finite number (a string holding one is read)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("an explanation needs a text (it is empty)")
    text = text.strip()
    if len(text) > MAX_TEXT:
        raise ValueError(f"an explanation has at most {MAX_TEXT:,} characters; this one has {len(text):,}")
    source = (source.strip() if isinstance(source, str) else source) or "user"
    if not isinstance(source, str) or len(source) > MAX_SOURCE:
        raise ValueError(f"source must be a name of at most {MAX_SOURCE} characters, got {source!r:.60}")
    if isinstance(score, str):
        score = score.strip() or None
    if score is not None:
        try:
            if isinstance(score, bool):
                raise TypeError
            value = float(score)
        except (TypeError, ValueError):
            raise ValueError(f"score must be a number, got {score!r:.60}") from None
        if not math.isfinite(value):
            raise ValueError(f"score must be a finite number, got {score!r:.60}")
        score = value
    return text, source, score


def document(sae_id: str, index: int, text: Any, source: Any = "user", score: Any = None) -> dict[str, Any]:
    """A validated explanation document (see `validate`), stamped now."""
    text, source, score = validate(text, source, score)
    doc: dict[str, Any] = {"sae_id": sae_id, "index": int(index), "text": text, "source": source}
    if score is not None:
        doc["score"] = score
    doc["created_at"] = datetime.datetime.now(datetime.UTC)
    return doc


def add(store: Store, sae_id: str, index: int, text: Any, source: Any = "user", score: Any = None) -> str:
    """Store one explanation of feature `index` of `sae_id`; returns its id."""
    doc = document(sae_id, index, text, source, score)
    result = store.retrying(
        f"writing an explanation of {sae_id} #{index}", lambda: collection(store).insert_one(doc)
    )
    return str(result.inserted_id)


def add_many(store: Store, docs: Iterable[Mapping[str, Any]]) -> int:
    """Store documents made by `document` (all of them, or an error); returns how many."""
    batch = [dict(d) for d in docs]
    if batch:
        store.retrying(
            f"writing {len(batch)} explanations", lambda: collection(store).insert_many(batch, ordered=True)
        )
    return len(batch)


def public(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An explanation as the API and the templates see it: `id` a string, `created_at` ISO 8601."""
    created = doc.get("created_at")
    if isinstance(created, datetime.datetime):
        if created.tzinfo is None:  # the server hands back naive UTC
            created = created.replace(tzinfo=datetime.UTC)
        created = created.isoformat()
    return {
        "id": str(doc["_id"]),
        "sae_id": doc["sae_id"],
        "index": doc["index"],
        "text": doc["text"],
        "source": doc.get("source", "user"),
        "score": doc.get("score"),
        "created_at": created,
    }


def of_feature(store: Store, sae_id: str, index: int) -> list[dict[str, Any]]:
    """The explanations of one feature, oldest first."""
    query = {"sae_id": sae_id, "index": int(index)}
    docs = store.retrying(
        f"reading the explanations of {sae_id} #{index}",
        lambda: list(collection(store).find(query).sort([("created_at", 1), ("_id", 1)])),
    )
    return [public(d) for d in docs]


def every(store: Store, sae_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Every explanation (of one SAE with `sae_id`), by SAE, feature and age."""
    query = {} if sae_id is None else {"sae_id": sae_id}
    order = [("sae_id", 1), ("index", 1), ("created_at", 1), ("_id", 1)]
    for doc in collection(store).find(query).sort(order):
        yield public(doc)


def delete(store: Store, sae_id: str, index: int, explanation_id: str) -> bool:
    """Remove one explanation of feature `index` of `sae_id`; False when there is no such one."""
    try:
        oid = ObjectId(explanation_id)
    except (InvalidId, TypeError):
        return False
    query = {"_id": oid, "sae_id": sae_id, "index": int(index)}
    result = store.retrying(
        f"deleting explanation {explanation_id}", lambda: collection(store).delete_one(query)
    )
    return result.deleted_count == 1


@dataclass(frozen=True)
class Found:
    """A search's results (at most `limit`) and whether more matched."""

    results: list[dict[str, Any]]
    more: bool


def search_text(store: Store, query: str, sae_id: str | None = None, limit: int = SEARCH_LIMIT) -> Found:
    """Explanations whose text contains `query` (a case-insensitive substring, not a pattern),
    by SAE and feature."""
    where: dict[str, Any] = {"text": {"$regex": re.escape(query), "$options": "i"}}
    if sae_id is not None:
        where["sae_id"] = sae_id
    docs = store.retrying(
        f"searching explanations for {query!r}",
        lambda: list(collection(store).find(where).sort([("sae_id", 1), ("index", 1)]).limit(limit + 1)),
    )
    return Found([public(d) for d in docs[:limit]], len(docs) > limit)


TOKEN_PREFIXES = ("", " ", "  ", "\n", "\n\n", "\t")
TOKEN_SUFFIXES = ("", " ", "\n")


def token_variants(token: str) -> list[str]:
    """The `peak_tokens` a typed token matches: exactly it, and it stripped with the
    whitespace tokens commonly carry around it (a leading space, a line break, a tab).
    An exact `$in` on the multikey index: a `$regex` on `peak_tokens` scans every feature
    document on the embedded server (13 s on 16,384 features, against 22 ms)."""
    core = token.strip()
    if not core:
        return [token]
    return sorted({token} | {p + core + s for p in TOKEN_PREFIXES for s in TOKEN_SUFFIXES})


def search_token(store: Store, token: str, sae_id: str | None = None, limit: int = SEARCH_LIMIT) -> Found:
    """Features whose top examples peak on `token` (the analysis's `peak_tokens`), in the
    analysis each SAE document names, by SAE and index; each result names the token matched."""
    sae_query = {} if sae_id is None else {"_id": sae_id}
    saes = list(store.saes.find(sae_query, {"_id": 1, "analysis.generation": 1}).sort("_id", 1))
    variants = token_variants(token)
    wanted = set(variants)
    results: list[dict[str, Any]] = []
    for sae in saes:
        where = {**feature_filter(sae), "peak_tokens": {"$in": variants}}
        left = limit + 1 - len(results)
        docs = store.retrying(
            f"searching {sae['_id']} for the peak token {token!r}",
            lambda w=where, n=left: list(
                store.features.find(w, {"_id": 0, "index": 1, "peak_tokens": 1}).sort("index", 1).limit(n)
            ),
        )
        for d in docs:
            matched = next((t for t in d.get("peak_tokens") or [] if t in wanted), token)
            results.append({"sae_id": sae["_id"], "index": d["index"], "token": matched})
        if len(results) > limit:
            break
    return Found(results[:limit], len(results) > limit)


def feature_exists(store: Store, sae_id: str, index: int) -> bool:
    """Whether `sae_id` is in the store and has a feature `index` (0 <= index < d_sae)."""
    sae = store.saes.find_one({"_id": sae_id}, {"d_sae": 1})
    return sae is not None and 0 <= index < int(sae.get("d_sae", 0))
