"""What the page and API views read from a request: typed query arguments (a bad one is a 400
naming it), the SAE a path names (a 404 if the store has none), and the feature listing an SAE
page and its JSON share."""

from __future__ import annotations

import math
from typing import Any

from flask import abort, request

from raysae.dashboard import queries
from raysae.store import Store

PER_PAGE = 50
MAX_PER_PAGE = 500


def float_arg(name: str) -> float | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        abort(400, f"{name} must be a number, got {raw!r}")
    return value


def int_arg(name: str, default: int) -> int:
    raw = request.args.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        abort(400, f"{name} must be a whole number, got {raw!r}")


def sae_or_404(store: Store, sae_id: str) -> dict[str, Any]:
    sae = queries.get_sae(store, sae_id)
    if sae is None:
        abort(404, f"No SAE called {sae_id!r} in this store.")
    return sae


def feature_or_404(store: Store, sae: dict[str, Any], index: int) -> dict[str, Any]:
    doc = queries.get_feature(store, sae, index)
    if doc is None:
        abort(404, f"SAE {sae['_id']!r} has no feature {index} (its features are 0–{sae['d_sae'] - 1}).")
    return doc


def feature_listing(store: Store, sae: dict[str, Any], per_page: int = PER_PAGE) -> queries.FeaturePage:
    """The page of features the request asks for: `order`, `page`, and a firing-frequency range
    `min_pct`..`max_pct` in % of tokens (the browser shows frequencies in %; the store holds
    fractions)."""
    order = request.args.get("order", "frequency")
    if order not in queries.FEATURE_ORDERS:
        abort(400, f"order must be one of {', '.join(queries.FEATURE_ORDERS)}, got {order!r}")
    min_pct, max_pct = float_arg("min_pct"), float_arg("max_pct")
    return queries.list_features(
        store,
        sae,
        order=order,
        page=int_arg("page", 1),
        per_page=per_page,
        min_freq=None if min_pct is None else min_pct / 100,
        max_freq=None if max_pct is None else max_pct / 100,
    )
