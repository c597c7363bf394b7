"""The feature browser: server-rendered Flask pages over the analysis store.

Routes (SAE ids contain slashes, e.g. `quickstart-sweep/t001`):
    /                                  SAEs with their metrics (?sort=COLUMN&desc=1)
    /sae/<sae_id>                      density histogram, alive/dead, feature list
                                       (?order=index|frequency|max&page=N&min_freq=&max_freq=)
    /sae/<sae_id>/feature/<index>      one feature
    /sae/<sae_id>/goto?index=N         jump to a feature
    /sae/<sae_id>/random               a random alive feature
    /pareto/<name>.png                 a sweep's Pareto plot (stored with its ranking)
"""

from __future__ import annotations

import functools
import io
import logging
import random
from typing import Any

from flask import Flask, abort, redirect, render_template, request, send_file, url_for
from pymongo import errors as mongo_errors
from werkzeug.exceptions import HTTPException

from raysae.dashboard import queries, render
from raysae.store import Store, StoreError

log = logging.getLogger("raysae.dashboard")

PER_PAGE = 50


def _float_arg(name: str) -> float | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        abort(400, f"{name} must be a number, got {raw!r}")


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        abort(400, f"{name} must be a whole number, got {raw!r}")


def create_app(store: Store, *, title: str = "raysae feature browser", seed: int | None = None) -> Flask:
    app = Flask(__name__)
    app.config["store"] = store
    rng = random.Random(seed)
    app.jinja_env.globals.update(
        title=title,
        shade=render.token_shade,
        number=render.number,
        frequency=render.frequency,
        token_text=render.token_text,
    )

    def sae_or_404(sae_id: str) -> dict:
        sae = queries.get_sae(store, sae_id)
        if sae is None:
            abort(404, f"No SAE called {sae_id!r} in this store.")
        return sae

    @app.before_request
    def store_alive():
        # An embedded store server that died is started again before the page reads from
        # it (a poll of the child: no cost while it runs), so the browser recovers.
        store.revive()

    @app.get("/")
    def sae_list():
        sort = request.args.get("sort", "name")
        descending = request.args.get("desc") == "1"
        saes = queries.list_saes(store, "name")
        metrics = queries.metric_names(saes)
        columns = list(queries.SAE_COLUMNS) + [f"metrics.{m}" for m in metrics]
        if sort not in columns:
            abort(400, f"cannot sort by {sort!r}; columns: {', '.join(columns)}")
        saes = queries.list_saes(store, sort, descending)
        runs = queries.runs_with_pareto(store, saes)
        return render_template(
            "saes.html", saes=saes, metrics=metrics, sort=sort, descending=descending, runs=runs
        )

    @app.get("/sae/<path:sae_id>/feature/<int:index>")
    def feature(sae_id: str, index: int):
        sae = sae_or_404(sae_id)
        doc = queries.get_feature(store, sae, index)
        if doc is None:
            abort(404, f"SAE {sae_id!r} has no feature {index} (its features are 0–{sae['d_sae'] - 1}).")
        hist = doc.get("histogram") or {}
        bars = render.histogram_bars(hist.get("edges", [0, 1]), hist.get("counts", []))
        return render_template("feature.html", sae=sae, f=doc, bars=bars)

    @app.get("/sae/<path:sae_id>/goto")
    def goto(sae_id: str):
        sae_or_404(sae_id)
        return redirect(url_for("feature", sae_id=sae_id, index=_int_arg("index", 0)))

    @app.get("/sae/<path:sae_id>/random")
    def random_feature(sae_id: str):
        sae = sae_or_404(sae_id)
        index = queries.random_alive_index(store, sae, rng)
        if index is None:
            abort(404, f"SAE {sae_id!r} has no alive feature: none fired on the analyzed tokens.")
        return redirect(url_for("feature", sae_id=sae_id, index=index))

    @app.get("/sae/<path:sae_id>")
    def sae_page(sae_id: str):
        sae = sae_or_404(sae_id)
        order = request.args.get("order", "frequency")
        if order not in queries.FEATURE_ORDERS:
            abort(400, f"order must be one of {', '.join(queries.FEATURE_ORDERS)}, got {order!r}")
        min_freq, max_freq = _float_arg("min_freq"), _float_arg("max_freq")
        listing = queries.list_features(
            store,
            sae,
            order=order,
            page=_int_arg("page", 1),
            per_page=PER_PAGE,
            min_freq=min_freq,
            max_freq=max_freq,
        )
        density = (sae.get("analysis") or {}).get("density")
        bars = (
            render.histogram_bars(density["log10_edges"], density["counts"], log_x=True) if density else None
        )
        return render_template(
            "sae.html",
            sae=sae,
            listing=listing,
            order=listing.order,
            min_freq=min_freq,
            max_freq=max_freq,
            density=density,
            bars=bars,
        )

    @app.get("/pareto/<name>.png")
    def pareto(name: str):
        png = queries.pareto_png(store, name)
        if png is None:
            abort(404, f"No Pareto plot for a run called {name!r}.")
        return send_file(io.BytesIO(png), mimetype="image/png")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = exc.code or 500
        return render_template("error.html", code=code, name=exc.name, message=exc.description), code

    @app.errorhandler(LookupError)
    def old_analysis(exc: LookupError):
        message = f"{exc.args[0] if exc.args else exc} Rerun `python -m raysae.analyze` on this SAE."
        return render_template("error.html", code=500, name="Incomplete analysis", message=message), 500

    @app.errorhandler(StoreError)
    def store_lost(exc: StoreError):
        log.error("%s", exc)
        return render_template("error.html", code=503, name="Store unavailable", message=str(exc)), 503

    @app.errorhandler(mongo_errors.PyMongoError)
    def store_error(exc: mongo_errors.PyMongoError):
        log.error("store error: %s", exc)
        message = f"The store at {store.uri_shown} did not answer: {str(exc).splitlines()[0][:200]}"
        try:
            if store.revive(grace_s=1.0):
                message += " Its embedded server had stopped and was restarted: reload the page."
        except StoreError as failed:
            message += f" {failed}"
        return render_template("error.html", code=503, name="Store unavailable", message=message), 503

    def retry_after_revive(view: Any) -> Any:
        # A server that died and was restarted leaves pymongo's pooled connections to it dead:
        # the first read on one fails. The page is read again once, on a fresh connection.
        @functools.wraps(view)
        def read_again(*args: Any, **kwargs: Any) -> Any:
            try:
                return view(*args, **kwargs)
            except mongo_errors.ConnectionFailure:
                store.revive(grace_s=1.0)
                return view(*args, **kwargs)

        return read_again

    for endpoint, view in list(app.view_functions.items()):
        if endpoint != "static":
            app.view_functions[endpoint] = retry_after_revive(view)
    return app
