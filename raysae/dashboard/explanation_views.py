"""Feature explanations and search: the browser's explanation pages (issue 19 item 4).

Routes:
    POST /sae/<sae_id>/feature/<index>/explanations               add one (form: text, source, score)
    POST /sae/<sae_id>/feature/<index>/explanations/<id>/delete   remove one
    GET  /search?q=TEXT&by=explanation|token&sae=SAE_ID            features by explanation or peak token
    GET  /api/search?...                                           the same, as JSON
    GET  /api/sae/<sae_id>/feature/<index>/explanations            a feature's explanations, as JSON

The feature page's partial (_feature_explanations.html) lists a feature's explanations
through the `explanations_of(sae_id, index)` template global.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import abort, jsonify, redirect, render_template, request, url_for
from pymongo import errors as mongo_errors

from raysae.dashboard import request_args
from raysae.store import Store, StoreError
from raysae.store import explanations as store_explanations

log = logging.getLogger("raysae.dashboard")

SEARCH_KINDS = {"explanation": "explanation text", "token": "top token"}
MAX_QUERY = 200
"""Characters a search query may have."""


def _ensure_indexes(store: Store) -> None:
    # A read-only user on a real MongoDB cannot create indexes: the browser still serves,
    # reads are only slower.
    try:
        store_explanations.ensure_indexes(store)
    except (StoreError, mongo_errors.PyMongoError) as exc:
        log.warning("could not create the explanations index: %s", str(exc).splitlines()[0][:200])


def _feature_or_404(store: Store, sae_id: str, index: int) -> None:
    sae = request_args.sae_or_404(store, sae_id)
    if not 0 <= index < int(sae.get("d_sae", 0)):
        abort(404, f"SAE {sae_id!r} has no feature {index} (its features are 0–{sae.get('d_sae', 0) - 1}).")


def _search_args(store: Store) -> tuple[str, str, str | None]:
    """(query, kind, SAE id or None) from the query string; 400 on a bad kind or SAE, or a long query."""
    q = request.args.get("q", "")
    by = request.args.get("by", "explanation")
    if by not in SEARCH_KINDS:
        abort(400, f"by must be one of {', '.join(SEARCH_KINDS)}, got {by!r:.60}")
    if len(q) > MAX_QUERY:
        abort(400, f"a search has at most {MAX_QUERY} characters; this one has {len(q):,}")
    sae_id = request.args.get("sae", "").strip() or None
    if sae_id is not None and store.saes.find_one({"_id": sae_id}, {"_id": 1}) is None:
        abort(400, f"No SAE called {sae_id!r:.120} in this store.")
    return q, by, sae_id


def _search(store: Store, q: str, by: str, sae_id: str | None) -> store_explanations.Found | None:
    if by == "explanation":
        # An empty or blank text would match everything: no search until something is typed.
        return store_explanations.search_text(store, q.strip(), sae_id) if q.strip() else None
    return store_explanations.search_token(store, q, sae_id) if q else None


def register(app: Any, store: Store) -> None:
    """Adds this part's routes and template globals to the browser app."""
    _ensure_indexes(store)
    app.jinja_env.globals.update(
        explanations_of=lambda sae_id, index: store_explanations.of_feature(store, sae_id, index),
        max_explanation=store_explanations.MAX_TEXT,
    )

    @app.post("/sae/<path:sae_id>/feature/<int:index>/explanations")
    def add_explanation(sae_id: str, index: int):
        _feature_or_404(store, sae_id, index)
        form = request.form
        try:
            store_explanations.add(
                store, sae_id, index, form.get("text", ""), form.get("source"), form.get("score")
            )
        except ValueError as exc:
            abort(400, str(exc))
        return redirect(url_for("feature", sae_id=sae_id, index=index, _anchor="explanations"), code=303)

    @app.post("/sae/<path:sae_id>/feature/<int:index>/explanations/<explanation_id>/delete")
    def delete_explanation(sae_id: str, index: int, explanation_id: str):
        _feature_or_404(store, sae_id, index)
        if not store_explanations.delete(store, sae_id, index, explanation_id):
            abort(404, f"Feature {index} of {sae_id!r} has no explanation {explanation_id!r:.40}.")
        return redirect(url_for("feature", sae_id=sae_id, index=index, _anchor="explanations"), code=303)

    @app.get("/api/sae/<path:sae_id>/feature/<int:index>/explanations")
    def api_explanations(sae_id: str, index: int):
        _feature_or_404(store, sae_id, index)
        return jsonify(store_explanations.of_feature(store, sae_id, index))

    @app.get("/search")
    def search():
        q, by, sae_id = _search_args(store)
        found = _search(store, q, by, sae_id)
        saes = [d["_id"] for d in store.saes.find({}, {"_id": 1}).sort("_id", 1)]
        return render_template(
            "search.html",
            q=q,
            by=by,
            sae_id=sae_id,
            saes=saes,
            kinds=SEARCH_KINDS,
            found=found,
            limit=store_explanations.SEARCH_LIMIT,
        )

    @app.get("/api/search")
    def api_search():
        q, by, sae_id = _search_args(store)
        found = _search(store, q, by, sae_id)
        results = [
            {**r, "url": url_for("feature", sae_id=r["sae_id"], index=r["index"])}
            for r in (found.results if found else [])
        ]
        return jsonify(
            {
                "q": q,
                "by": by,
                "sae": sae_id,
                "results": results,
                "more": bool(found and found.more),
                "limit": store_explanations.SEARCH_LIMIT,
            }
        )
