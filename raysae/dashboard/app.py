"""The feature browser: server-rendered Flask pages over the analysis store.

Routes (SAE ids contain slashes, e.g. `quickstart-sweep/t001`):
    /                                  SAEs with their metrics (?sort=COLUMN&desc=1)
    /sae/<sae_id>                      density histogram, alive/dead, feature list
                                       (?order=index|frequency|max&page=N&min_pct=&max_pct=,
                                       a firing-frequency range in % of tokens)
    /sae/<sae_id>/feature/<index>      one feature: statistics, histograms, logits, neighbours,
                                       examples
    /sae/<sae_id>/goto?index=N         jump to a feature
    /sae/<sae_id>/random               a random alive feature
    /pareto/<name>.png                 a sweep's Pareto plot (stored with its ranking)
    /api/...                           each page's data as JSON, for notebooks (`api`)
Inference (`inference_views`) and explanations and search (`explanation_views`) add their own.
"""

from __future__ import annotations

import functools
import io
import logging
import random
from typing import Any

from flask import Flask, abort, jsonify, redirect, render_template, request, send_file, url_for
from pymongo import errors as mongo_errors
from werkzeug.exceptions import HTTPException

from raysae.dashboard import api, explanation_views, inference_views, queries, render, request_args
from raysae.store import Store, StoreError

log = logging.getLogger("raysae.dashboard")


def create_app(store: Store, *, title: str = "raysae feature browser", seed: int | None = None) -> Flask:
    app = Flask(__name__)
    app.config["store"] = store
    rng = random.Random(seed)
    app.jinja_env.globals.update(
        title=title,
        shade=render.token_shade,
        number=render.number,
        percent=render.percent,
        frequency=render.frequency,
        token_text=render.token_text,
        logit_token=render.logit_token,
        metric_label=render.metric_label,
        metric_value=render.metric_value,
        model_name=render.model_name,
    )

    def sae_or_404(sae_id: str) -> dict:
        return request_args.sae_or_404(store, sae_id)

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
        doc = request_args.feature_or_404(store, sae, index)
        hist = doc.get("histogram") or {}
        bars = (
            render.histogram_bars(hist["edges"], hist["counts"], unit="tokens")
            if hist.get("counts")
            else None
        )
        logit_hist = (doc.get("logits") or {}).get("histogram")
        logit_bars = (
            render.histogram_bars(logit_hist["edges"], logit_hist["counts"], unit="tokens")
            if logit_hist and logit_hist.get("counts")
            else None
        )
        return render_template("feature.html", sae=sae, f=doc, bars=bars, logit_bars=logit_bars)

    @app.get("/sae/<path:sae_id>/goto")
    def goto(sae_id: str):
        sae_or_404(sae_id)
        return redirect(url_for("feature", sae_id=sae_id, index=request_args.int_arg("index", 0)))

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
        listing = request_args.feature_listing(store, sae)
        density = (sae.get("analysis") or {}).get("density")
        bars = (
            render.histogram_bars(density["log10_edges"], density["counts"], log_x=True, unit="features")
            if density
            else None
        )
        return render_template(
            "sae.html",
            sae=sae,
            listing=listing,
            order=listing.order,
            min_pct=request_args.float_arg("min_pct"),
            max_pct=request_args.float_arg("max_pct"),
            density=density,
            bars=bars,
        )

    @app.get("/pareto/<name>.png")
    def pareto(name: str):
        png = queries.pareto_png(store, name)
        if png is None:
            abort(404, f"No Pareto plot for a run called {name!r}.")
        return send_file(io.BytesIO(png), mimetype="image/png")

    @app.get("/favicon.ico")
    def favicon():
        return redirect(url_for("static", filename="favicon.svg"), code=301)

    api.register(app, store)
    inference_views.register(app, store)
    explanation_views.register(app, store)

    def error_page(code: int, name: str, message: str):
        # The JSON API answers errors in JSON; pages get the error page.
        if request.path.startswith("/api/"):
            return jsonify({"error": message, "status": code}), code
        return render_template("error.html", code=code, name=name, message=message), code

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return error_page(exc.code or 500, exc.name, exc.description or exc.name)

    @app.errorhandler(LookupError)
    def old_analysis(exc: LookupError):
        message = f"{exc.args[0] if exc.args else exc} Rerun `raysae analyze` on this SAE."
        return error_page(500, "Incomplete analysis", message)

    @app.errorhandler(StoreError)
    def store_lost(exc: StoreError):
        log.error("%s", exc)
        return error_page(503, "Store unavailable", str(exc))

    @app.errorhandler(mongo_errors.PyMongoError)
    def store_error(exc: mongo_errors.PyMongoError):
        log.error("store error: %s", exc)
        message = f"The store at {store.uri_shown} did not answer: {str(exc).splitlines()[0][:200]}"
        try:
            if store.revive(grace_s=1.0):
                message += " Its embedded server had stopped and was restarted: reload the page."
        except StoreError as failed:
            message += f" {failed}"
        return error_page(503, "Store unavailable", message)

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
