"""What the browser's pages read from the store: small, index-backed queries that
project only the fields a page shows (a feature document is ~18 KB; a list page
never loads more than one page of features). Features are read from the generation
the SAE document names (`feature_filter`): a re-analysis being written is never shown."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from raysae.store import Store, feature_filter

SAE_LIST_FIELDS = {
    "name": 1,
    "sweep": 1,
    "architecture": 1,
    "model": 1,
    "hook_point": 1,
    "hook_point_out": 1,
    "kind": 1,
    "d_in": 1,
    "d_sae": 1,
    "metrics": 1,
    "tokens": 1,
    "run_dir": 1,
    "analysis.alive": 1,
    "analysis.n_tokens": 1,
    "analysis.finished_at": 1,
}

# The feature list's orderings, each by a per-SAE rank the analysis stored
# (index, or 0 = most frequent / largest max), so a page is one bounded index scan.
FEATURE_ORDERS = {"index": "index", "frequency": "rank_frequency", "max": "rank_max"}
FEATURE_ROW_FIELDS = {
    "_id": 0,
    "index": 1,
    "act_frequency": 1,
    "max_activation": 1,
    "mean_activation": 1,
    "logits.top": 1,
    "rank_frequency": 1,
    "rank_max": 1,
}
SAE_COLUMNS = ("name", "architecture", "model", "d_sae", "alive")


def sae_sort_key(column: str) -> str:
    """The document field behind a column of the SAE list (metrics are `metrics.<name>`)."""
    return {"name": "_id", "alive": "analysis.alive"}.get(column, column)


def list_saes(store: Store, sort: str = "name", descending: bool = False) -> list[dict[str, Any]]:
    field = sae_sort_key(sort)
    return list(store.saes.find({}, SAE_LIST_FIELDS).sort([(field, -1 if descending else 1), ("_id", 1)]))


def metric_names(saes: list[dict[str, Any]]) -> list[str]:
    """The metrics any listed SAE has, the headline ones first."""
    first = ["l0", "fvu", "explained_variance", "ce_loss_recovered", "dead_fraction"]
    names = {k for s in saes for k, v in (s.get("metrics") or {}).items() if isinstance(v, (int, float))}
    return [m for m in first if m in names] + sorted(names - set(first))


def get_sae(store: Store, sae_id: str) -> dict[str, Any] | None:
    return store.saes.find_one({"_id": sae_id}, {"config": 0})


@dataclass
class FeaturePage:
    rows: list[dict[str, Any]]
    page: int
    pages: int
    total: int
    order: str
    """The order the rows are in (a frequency range forces `frequency`)."""


def _frequency_at(store: Store, sae: dict[str, Any], rank: int) -> float:
    doc = store.features.find_one(
        {**feature_filter(sae), "rank_frequency": rank}, {"_id": 0, "act_frequency": 1}
    )
    if doc is None:
        raise LookupError(
            f"SAE {sae['_id']!r} has no feature of frequency rank {rank}: analyzed by an older raysae?"
        )
    return doc["act_frequency"]


def _first_rank(store: Store, sae: dict[str, Any], d_sae: int, past) -> int:
    """The first frequency rank whose frequency satisfies `past` (monotone in rank):
    a binary search of point lookups, ~log2(d_sae) index hits."""
    lo, hi = 0, d_sae
    while lo < hi:
        mid = (lo + hi) // 2
        if past(_frequency_at(store, sae, mid)):
            hi = mid
        else:
            lo = mid + 1
    return lo


def frequency_ranks(
    store: Store, sae: dict[str, Any], min_freq: float | None, max_freq: float | None
) -> tuple[int, int]:
    """[first, end) of the frequency ranks whose frequency lies in [min_freq, max_freq]
    (ranks run from the most frequent feature down)."""
    d = sae["d_sae"]
    first = 0 if max_freq is None else _first_rank(store, sae, d, lambda f: f <= max_freq)
    end = d if min_freq is None else _first_rank(store, sae, d, lambda f: f < min_freq)
    return first, max(first, end)


def list_features(
    store: Store,
    sae: dict[str, Any],
    *,
    order: str = "frequency",
    page: int = 1,
    per_page: int = 50,
    min_freq: float | None = None,
    max_freq: float | None = None,
) -> FeaturePage:
    """One page of an SAE's features in `order`; a frequency range lists in frequency order."""
    if min_freq is not None or max_freq is not None:
        order = "frequency"
        first, end = frequency_ranks(store, sae, min_freq, max_freq)
    else:
        first, end = 0, sae["d_sae"]
    field = FEATURE_ORDERS[order]
    total = end - first
    pages = max(1, -(-total // per_page))
    page = min(max(page, 1), pages)
    lo = first + (page - 1) * per_page
    hi = min(lo + per_page, end)
    rows = list(
        store.features.find({**feature_filter(sae), field: {"$gte": lo, "$lt": hi}}, FEATURE_ROW_FIELDS)
    )
    rows.sort(key=lambda r: r.get(field, 0))
    return FeaturePage(rows, page, pages, total, order)


def get_feature(store: Store, sae: dict[str, Any], index: int) -> dict[str, Any] | None:
    return store.features.find_one({**feature_filter(sae), "index": index}, {"_id": 0})


def random_alive_index(store: Store, sae: dict[str, Any], rng: random.Random) -> int | None:
    """A uniformly drawn feature that fired at least once, or None if none did
    (the alive features are the frequency ranks before `analysis.alive`)."""
    alive = int((sae.get("analysis") or {}).get("alive") or 0)
    if alive == 0:
        return None
    doc = store.features.find_one(
        {**feature_filter(sae), "rank_frequency": rng.randrange(alive)}, {"_id": 0, "index": 1}
    )
    return None if doc is None else doc["index"]


def runs_with_pareto(store: Store, saes: list[dict[str, Any]]) -> list[str]:
    """Names of the listed SAEs' sweeps that stored a Pareto plot."""
    names = sorted({s["name"] for s in saes if s.get("name")})
    found = store.sweeps.find({"_id": {"$in": names}, "pareto_png": {"$ne": None}}, {"_id": 1})
    return sorted(d["_id"] for d in found)


def pareto_png(store: Store, name: str) -> bytes | None:
    """The Pareto plot the sweep called `name` stored with its ranking, if any."""
    doc = store.sweeps.find_one({"_id": name}, {"pareto_png": 1})
    png = (doc or {}).get("pareto_png")
    return bytes(png) if png else None
