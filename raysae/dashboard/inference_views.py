"""Which features fire on a text: the browser's inference pages (issue 19 item 1).

Routes:
    /sae/<sae_id>/infer?text=...&feature=N       the text's tokens with their top features, and
                                                 the text shaded by feature N (default: the strongest)
    /api/sae/<sae_id>/infer?text=...&feature=N   the same as JSON
Template globals: `infer_feature(sae, index, text)` (the feature page's "try this feature on
your text": an `Inference`, or the reason it could not run, a string) and `infer_limit`.
"""

from __future__ import annotations

from typing import Any

from flask import abort, jsonify, render_template, request

from raysae.dashboard import request_args
from raysae.dashboard.inference import MAX_TOKENS, Engine, Inference, InferenceError, as_json


def _feature_arg(sae: dict[str, Any]) -> int | None:
    """`feature=N` in range, None when absent; a message (str) when it is not a feature."""
    raw = request.args.get("feature", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) >= int(sae["d_sae"]):
        raise ValueError(f"feature must be a whole number in 0–{int(sae['d_sae']) - 1}, got {raw!r}")
    return int(raw)


def register(app: Any, store: Any) -> None:
    """Adds this part's routes and template globals to the browser app. The engine (models and
    SAEs loaded on demand, on the CPU) is `app.config["inference"]`, so a caller may set another."""
    app.config.setdefault("inference", Engine())

    def engine() -> Engine:
        return app.config["inference"]

    def infer_feature(sae: dict[str, Any], index: int, text: str) -> Inference | str:
        try:
            return engine().run(sae, text, feature=index)
        except InferenceError as exc:
            return str(exc)

    app.jinja_env.globals.update(infer_feature=infer_feature, infer_limit=MAX_TOKENS)

    @app.get("/sae/<path:sae_id>/infer")
    def infer_page(sae_id: str):
        sae = request_args.sae_or_404(store, sae_id)
        text = request.args.get("text", "")
        try:
            feature = _feature_arg(sae)
        except ValueError as exc:
            abort(400, str(exc))
        result, error, status = None, None, 200
        if text.strip():
            try:
                result = engine().run(sae, text, feature=feature)
            except InferenceError as exc:
                # The browser runs where the model may not be (another machine, assets not
                # downloaded): the page says why, with 503 (the page itself works).
                error, status = str(exc), 503
        page = render_template("infer.html", sae=sae, text=text, result=result, error=error)
        return page, status

    @app.get("/api/sae/<path:sae_id>/infer")
    def infer_api(sae_id: str):
        sae = request_args.sae_or_404(store, sae_id)  # under /api/: a JSON 404 (app.error_page)
        text = request.args.get("text", "")
        if not text.strip():
            return jsonify(error="text is empty: pass ?text=..."), 400
        try:
            feature = _feature_arg(sae)
        except ValueError as exc:
            return jsonify(error=str(exc)), 400
        try:
            return jsonify(as_json(engine().run(sae, text, feature=feature)))
        except InferenceError as exc:
            return jsonify(error=str(exc)), 503
