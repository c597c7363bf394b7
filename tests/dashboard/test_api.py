"""The browser's JSON API (Flask test client) against a store from a real tiny analysis: each
route returns what the store and the queries return, errors come back as JSON."""

import math

import pytest

from raysae.dashboard import api, create_app, queries

SAE = "browse/t000"


@pytest.fixture(scope="module")
def client(browsed_store):
    return create_app(browsed_store, seed=0).test_client()


def test_sae_list_is_every_sae_in_the_store(client, browsed_store):
    body = client.get("/api/saes").get_json()
    assert [s["_id"] for s in body["saes"]] == sorted(
        d["_id"] for d in browsed_store.saes.find({}, {"_id": 1})
    )
    assert body["pareto_runs"] == ["browse"]
    assert {"model", "hook_point", "metrics", "d_sae"} <= set(body["saes"][0])


def test_sae_page_data_is_the_pages_listing(client, browsed_store):
    sae = queries.get_sae(browsed_store, SAE)
    body = client.get(f"/api/sae/{SAE}?order=max&page=2&per_page=20").get_json()
    expected = queries.list_features(browsed_store, sae, order="max", page=2, per_page=20)
    assert [r["index"] for r in body["features"]] == [r["index"] for r in expected.rows]
    assert (body["page"], body["pages"], body["total"]) == (2, 7, 128)
    assert body["sae"]["_id"] == SAE and body["sae"]["d_sae"] == 128


def test_a_frequency_range_in_percent_is_the_fraction_range(client, browsed_store):
    freqs = sorted({d["act_frequency"] for d in browsed_store.features.find({"sae_id": SAE})})
    q1, q2 = len(freqs) // 4, len(freqs) // 2
    # Bounds between two distinct frequencies, so the % -> fraction rounding cannot decide.
    lo, hi = (freqs[q1 - 1] + freqs[q1]) / 2, (freqs[q2] + freqs[q2 + 1]) / 2
    body = client.get(f"/api/sae/{SAE}?min_pct={lo * 100!r}&max_pct={hi * 100!r}&per_page=500").get_json()
    inside = sorted(
        (d for d in browsed_store.features.find({"sae_id": SAE}) if lo <= d["act_frequency"] <= hi),
        key=lambda d: (-d["act_frequency"], d["index"]),
    )
    assert len(inside) > 5
    assert [r["index"] for r in body["features"]] == [d["index"] for d in inside]
    assert body["order"] == "frequency" and body["total"] == len(inside)


def test_feature_is_the_whole_document(client, browsed_store):
    doc = browsed_store.features.find_one({"sae_id": SAE, "index": 7}, {"_id": 0})
    body = client.get(f"/api/sae/{SAE}/feature/7").get_json()
    assert body["index"] == 7 and body["top_examples"] == doc["top_examples"]
    assert body["act_frequency"] == doc["act_frequency"] and body["logits"]["top"] == doc["logits"]["top"]


@pytest.mark.parametrize(
    "url,code,says",
    [
        ("/api/sae/no/such", 404, "No SAE called 'no/such'"),
        (f"/api/sae/{SAE}/feature/128", 404, "has no feature 128 (its features are 0–127)"),
        (f"/api/sae/{SAE}?order=size", 400, "order must be one of"),
        (f"/api/sae/{SAE}?min_pct=inf", 400, "min_pct must be a number"),
        ("/api/nothing", 404, "was not found"),
    ],
)
def test_errors_are_json_with_their_status(client, url, code, says):
    response = client.get(url)
    assert response.status_code == code and response.is_json
    assert says in response.get_json()["error"] and response.get_json()["status"] == code


def test_a_nan_metric_is_sent_as_null(client, browsed_store):
    doc = dict(browsed_store.saes.find_one({"_id": SAE}), _id="browse/diverged")
    doc["metrics"] = {**doc["metrics"], "fvu": math.nan}
    browsed_store.put_sae(doc)
    try:
        text = client.get("/api/saes").get_data(as_text=True)
        assert "NaN" not in text
        diverged = next(
            s for s in client.get("/api/saes").get_json()["saes"] if s["_id"] == "browse/diverged"
        )
        assert diverged["metrics"]["fvu"] is None
    finally:
        browsed_store.saes.delete_one({"_id": "browse/diverged"})
    assert api.finite({"a": [1.0, math.inf, {"b": -math.inf}], "c": "x"}) == {
        "a": [1.0, None, {"b": None}],
        "c": "x",
    }
