"""The browser's queries and pages (Flask test client) against a store from a real tiny analysis."""

import random

import pytest

from raysae.dashboard import create_app, queries

SAE = "browse/t000"


@pytest.fixture(scope="module")
def client(browsed_store):
    return create_app(browsed_store, seed=0).test_client()


def all_features(store, sae_id):
    """Every feature document of the SAE, fetched whole: the independent reference."""
    return list(
        store.features.find(
            {"sae_id": sae_id}, {"_id": 0, "index": 1, "act_frequency": 1, "max_activation": 1}
        )
    )


def every_page(store, sae, **kw):
    first = queries.list_features(store, sae, per_page=50, **kw)
    rows = list(first.rows)
    for page in range(2, first.pages + 1):
        rows += queries.list_features(store, sae, per_page=50, page=page, **kw).rows
    return first, [r["index"] for r in rows]


@pytest.mark.parametrize(
    "order,key",
    [
        ("index", lambda d: d["index"]),
        ("frequency", lambda d: (-d["act_frequency"], d["index"])),
        ("max", lambda d: (-d["max_activation"], d["index"])),
    ],
)
def test_pages_list_every_feature_once_in_order(browsed_store, order, key):
    sae = queries.get_sae(browsed_store, SAE)
    reference = [d["index"] for d in sorted(all_features(browsed_store, SAE), key=key)]
    first, listed = every_page(browsed_store, sae, order=order)
    assert first.total == sae["d_sae"] == 128 and first.pages == 3
    assert listed == reference


def test_a_frequency_range_lists_exactly_the_features_inside_it(browsed_store):
    sae = queries.get_sae(browsed_store, SAE)
    docs = all_features(browsed_store, SAE)
    freqs = sorted({d["act_frequency"] for d in docs})
    assert len(freqs) > 10
    lo, hi = freqs[len(freqs) // 4], freqs[3 * len(freqs) // 4]  # bounds that are real values: inclusive
    inside = sorted(
        (d for d in docs if lo <= d["act_frequency"] <= hi), key=lambda d: (-d["act_frequency"], d["index"])
    )
    first, listed = every_page(browsed_store, sae, min_freq=lo, max_freq=hi)
    assert first.total == len(inside) and listed == [d["index"] for d in inside]
    _, none = every_page(browsed_store, sae, min_freq=2.0)
    assert none == []


def test_random_alive_features_fired_and_cover_the_alive_set(browsed_store):
    sae = queries.get_sae(browsed_store, SAE)
    freq = {d["index"]: d["act_frequency"] for d in all_features(browsed_store, SAE)}
    alive = {i for i, f in freq.items() if f > 0}
    assert sae["analysis"]["alive"] == len(alive) and len(alive) < 128  # the fixture's SAE has dead features
    rng = random.Random(1)
    drawn = {queries.random_alive_index(browsed_store, sae, rng) for _ in range(600)}
    assert drawn == alive


def test_density_histogram_counts_every_feature(browsed_store):
    sae = queries.get_sae(browsed_store, SAE)
    density = sae["analysis"]["density"]
    assert sum(density["counts"]) + density["dead"] == sae["d_sae"]
    assert density["dead"] == sae["d_sae"] - sae["analysis"]["alive"]


def test_sae_list_sorts_by_a_metric_and_links_the_pareto_plot(client):
    up = client.get("/?sort=metrics.fvu").get_data(as_text=True)
    down = client.get("/?sort=metrics.fvu&desc=1").get_data(as_text=True)
    assert up.index("browse/t001") < up.index("browse/t000")  # fvu 0.3 before 0.5
    assert down.index("browse/t000") < down.index("browse/t001")
    assert 'href="/pareto/browse.png"' in up
    png = client.get("/pareto/browse.png")
    assert png.status_code == 200 and png.data[:4] == b"\x89PNG"


def test_pages_render_and_link(client, browsed_store):
    page = client.get(f"/sae/{SAE}?order=max&page=2").get_data(as_text=True)
    sae = queries.get_sae(browsed_store, SAE)
    second = queries.list_features(browsed_store, sae, order="max", page=2).rows
    for r in second:
        assert f'href="/sae/{SAE}/feature/{r["index"]}"' in page
    goto = client.get(f"/sae/{SAE}/goto?index=7")
    assert goto.status_code == 302 and goto.location.endswith(f"/sae/{SAE}/feature/7")
    feature = client.get(f"/sae/{SAE}/feature/7")
    assert feature.status_code == 200 and 'id="feature-index">7<' in feature.get_data(as_text=True)


@pytest.mark.parametrize(
    "url,code,says",
    [
        ("/sae/no/such/sae", 404, "No SAE called"),
        (f"/sae/{SAE}/feature/128", 404, "has no feature 128"),
        ("/sae/no-such/feature/1", 404, "No SAE called"),
        ("/pareto/nothing.png", 404, "No Pareto plot"),
        (f"/sae/{SAE}?page=two", 400, "page must be a whole number"),
        (f"/sae/{SAE}?order=size", 400, "order must be one of"),
        (f"/sae/{SAE}?min_pct=lots", 400, "min_pct must be a number"),
        (f"/sae/{SAE}?max_pct=nan", 400, "max_pct must be a number"),
        ("/?sort=password", 400, "cannot sort by"),
        ("/nowhere", 404, "Not Found"),
    ],
)
def test_bad_addresses_get_an_error_page_not_a_traceback(client, url, code, says):
    response = client.get(url)
    body = response.get_data(as_text=True)
    assert response.status_code == code
    assert says in body.replace("&#39;", "'") and "Traceback" not in body and "<html" in body
