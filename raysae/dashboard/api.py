"""The browser's JSON API, one route beside each page, for notebooks:

    /api/saes                              the SAE list (the list page's fields) and the sweeps
                                           with a Pareto plot
    /api/sae/<sae_id>                      the SAE document and one page of its features
                                           (?order=&page=&per_page=&min_pct=&max_pct=, as the page)
    /api/sae/<sae_id>/feature/<index>      the whole feature document

Errors come back as `{"error": message, "status": code}` with that status. Non-finite floats
(a NaN metric of a diverged SAE) are sent as null: JSON has no NaN.
"""

from __future__ import annotations

import math
from typing import Any

from flask import Flask, jsonify

from raysae.dashboard import queries, request_args
from raysae.store import Store


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def register(app: Flask, store: Store) -> None:
    @app.get("/api/saes")
    def api_saes():
        saes = queries.list_saes(store, "name")
        return jsonify(finite({"saes": saes, "pareto_runs": queries.runs_with_pareto(store, saes)}))

    @app.get("/api/sae/<path:sae_id>")
    def api_sae(sae_id: str):
        sae = request_args.sae_or_404(store, sae_id)
        per_page = min(
            max(request_args.int_arg("per_page", request_args.PER_PAGE), 1), request_args.MAX_PER_PAGE
        )
        listing = request_args.feature_listing(store, sae, per_page)
        return jsonify(
            finite(
                {
                    "sae": sae,
                    "features": listing.rows,
                    "page": listing.page,
                    "pages": listing.pages,
                    "total": listing.total,
                    "order": listing.order,
                }
            )
        )

    @app.get("/api/sae/<path:sae_id>/feature/<int:index>")
    def api_feature(sae_id: str, index: int):
        sae = request_args.sae_or_404(store, sae_id)
        return jsonify(finite(request_args.feature_or_404(store, sae, index)))
