"""Explanations in the browser (Flask test client): add, list, delete and validate them on the
tiny analyzed store; search by explanation text and by peak token; they outlive a re-analysis."""

import html
import random

import pytest

from raysae.dashboard import create_app
from raysae.store import explanations as store_explanations
from raysae.store import feature_filter, open_store
from tests.conftest import HTML_PAYLOAD

SAE = "browse/t000"
TAG = "test-explanations"  # the source of every explanation these tests add to the shared store


@pytest.fixture(scope="module")
def client(browsed_store):
    app = create_app(browsed_store, seed=0)
    app.config["TESTING"] = True
    yield app.test_client()
    store_explanations.collection(browsed_store).delete_many({"source": {"$regex": f"^{TAG}"}})


@pytest.fixture
def clean(browsed_store):
    yield browsed_store
    store_explanations.collection(browsed_store).delete_many({"source": {"$regex": f"^{TAG}"}})


def add(client, index, text, source=TAG, score="", sae=SAE):
    return client.post(
        f"/sae/{sae}/feature/{index}/explanations", data={"text": text, "source": source, "score": score}
    )


def stored(store, index):
    return list(store_explanations.collection(store).find({"sae_id": SAE, "index": index, "source": TAG}))


def test_added_explanations_are_listed_escaped_and_deleted(client, clean):
    text = f"{HTML_PAYLOAD} knocking on doors"
    reply = add(client, 7, text, score="0.75")
    assert reply.status_code == 303 and reply.location.endswith(f"/sae/{SAE}/feature/7#explanations")
    [doc] = stored(clean, 7)
    assert (doc["text"], doc["source"], doc["score"]) == (text, TAG, 0.75)
    page = client.get(f"/sae/{SAE}/feature/7").get_data(as_text=True)
    assert html.escape(text, quote=False) in page and HTML_PAYLOAD not in page.split('id="explanations"')[1]
    assert 'class="explanation-score">0.75<' in page
    listed = client.get(f"/api/sae/{SAE}/feature/7/explanations").get_json()
    assert [(e["text"], e["source"], e["score"], e["id"]) for e in listed] == [
        (text, TAG, 0.75, str(doc["_id"]))
    ]
    add(client, 7, "a second one", source=f"{TAG}-model")  # no score: None, and listed after the first
    listed = client.get(f"/api/sae/{SAE}/feature/7/explanations").get_json()
    assert [e["text"] for e in listed] == [text, "a second one"] and listed[1]["score"] is None
    assert client.get(f"/api/sae/{SAE}/feature/8/explanations").get_json() == []  # per feature
    gone = client.post(f"/sae/{SAE}/feature/7/explanations/{doc['_id']}/delete")
    assert gone.status_code == 303
    assert [e["text"] for e in client.get(f"/api/sae/{SAE}/feature/7/explanations").get_json()] == [
        "a second one"
    ]
    again = client.post(f"/sae/{SAE}/feature/7/explanations/{doc['_id']}/delete")
    assert again.status_code == 404
    assert client.post(f"/sae/{SAE}/feature/7/explanations/not-an-id/delete").status_code == 404


@pytest.mark.parametrize(
    "text, score, message",
    [
        ("", "", "needs a text"),
        ("   \n ", "", "needs a text"),
        ("fine", "high", "score must be a number"),
        ("fine", "nan", "finite number"),
        ("x" * (store_explanations.MAX_TEXT + 1), "", "at most 2,000 characters"),
    ],
)
def test_bad_explanations_are_refused_with_a_reason_and_not_stored(client, clean, text, score, message):
    reply = add(client, 3, text, score=score)
    assert reply.status_code == 400 and message in reply.get_data(as_text=True)
    assert stored(clean, 3) == []


def test_the_longest_explanation_allowed_is_stored(client, clean):
    assert add(client, 3, "y" * store_explanations.MAX_TEXT).status_code == 303
    assert len(stored(clean, 3)[0]["text"]) == store_explanations.MAX_TEXT


def test_features_out_of_range_and_unknown_saes_are_404(client, clean, browsed_store):
    d_sae = browsed_store.saes.find_one({"_id": SAE})["d_sae"]
    assert add(client, d_sae, "past the end").status_code == 404
    assert add(client, d_sae - 1, "the last one").status_code == 303
    assert add(client, 0, "no such SAE", sae="browse/none").status_code == 404
    assert client.get(f"/api/sae/{SAE}/feature/{d_sae}/explanations").status_code == 404
    assert [d["index"] for d in store_explanations.collection(browsed_store).find({"source": TAG})] == [
        d_sae - 1
    ]


def test_search_by_explanation_is_a_case_insensitive_substring(client, clean):
    add(client, 5, "Knocking at the gate")
    add(client, 9, "door KNOCKING, loud")
    add(client, 9, "abc", source=f"{TAG}-b")
    add(client, 11, "knocking", sae="browse/t001")
    found = client.get("/api/search?q=knocking&by=explanation").get_json()
    assert [(r["sae_id"], r["index"]) for r in found["results"]] == [(SAE, 5), (SAE, 9), ("browse/t001", 11)]
    assert found["results"][0]["url"] == f"/sae/{SAE}/feature/5" and found["more"] is False
    only = client.get(f"/api/search?q=KNOCK&sae={SAE}").get_json()  # by explanation is the default
    assert [r["index"] for r in only["results"]] == [5, 9]
    assert client.get("/api/search?q=a.c").get_json()["results"] == []  # a substring, not a pattern
    assert [r["text"] for r in client.get("/api/search?q=ABC").get_json()["results"]] == ["abc"]
    page = client.get("/search?q=gate&by=explanation").get_data(as_text=True)
    assert f'href="/sae/{SAE}/feature/5"' in page and "Knocking at the gate" in page
    assert "Nothing matched" in client.get("/search?q=zebra").get_data(as_text=True)
    assert client.get("/search?q=x&by=colour").status_code == 400
    assert client.get("/search?q=x&sae=browse/none").status_code == 400
    assert client.get("/search").status_code == 200  # the empty form


# --- by peak token, and a re-analysis, on a store of documents written here ------------------


@pytest.fixture(scope="module")
def token_store(tmp_path_factory):
    """Two SAEs whose features have `peak_tokens`; each SAE also has a stale generation whose
    documents must never be found."""
    rng = random.Random(3)
    vocab = [" the", "the", "the\n", " then", "bathe", " king", "king", " queen", "\tthe "]
    with open_store(None, tmp_path_factory.mktemp("tokens"), create=True) as store:
        for sae_id, d_sae in (("tok/a", 300), ("tok/b", 40)):
            store.put_sae({"_id": sae_id, "d_sae": d_sae, "analysis": {"generation": "new"}})
            for generation in ("old", "new"):
                store.features.insert_many(
                    [
                        {
                            "sae_id": sae_id,
                            "generation": generation,
                            "index": i,
                            "peak_tokens": rng.sample(vocab, rng.randint(0, 3)),
                        }
                        for i in range(d_sae)
                    ]
                )
        yield store


def expected_tokens(store, wanted, sae_id=None):
    """The features whose peak tokens, stripped, equal `wanted` stripped: by a scan in Python."""
    out = []
    for sae in store.saes.find({} if sae_id is None else {"_id": sae_id}).sort("_id", 1):
        docs = store.features.find(feature_filter(sae)).sort("index", 1)
        out += [
            (sae["_id"], d["index"])
            for d in docs
            if any(t.strip() == wanted.strip() for t in d["peak_tokens"])
        ]
    return out


@pytest.mark.parametrize("typed", ["the", " the", "the ", "king"])
def test_search_by_token_ignores_the_spaces_around_it(token_store, typed):
    app = create_app(token_store)
    client = app.test_client()
    want = expected_tokens(token_store, typed)
    assert len(want) > store_explanations.SEARCH_LIMIT or typed == "king"
    found = client.get(f"/api/search?by=token&q={typed}").get_json()
    got = [(r["sae_id"], r["index"]) for r in found["results"]]
    assert got == want[: store_explanations.SEARCH_LIMIT]
    assert found["more"] is (len(want) > store_explanations.SEARCH_LIMIT)
    assert all(r["token"].strip() == typed.strip() for r in found["results"])
    one = client.get(f"/api/search?by=token&q={typed}&sae=tok/b").get_json()
    assert [(r["sae_id"], r["index"]) for r in one["results"]] == expected_tokens(token_store, typed, "tok/b")
    page = client.get(f"/search?by=token&q={typed}&sae=tok/b").get_data(as_text=True)
    assert page.count('class="feature-link"') == len(one["results"])
    if found["more"]:
        assert "more matched" in client.get(f"/search?by=token&q={typed}").get_data(as_text=True)


def test_explanations_outlive_a_reanalysis(token_store):
    store_explanations.ensure_indexes(token_store)
    store_explanations.ensure_indexes(token_store)  # idempotent
    kept = store_explanations.add(token_store, "tok/b", 4, "fires on the", "gpt-4o-mini", 0.5)
    token_store.write_features("tok/b", lambda i: {"index": i, "peak_tokens": []}, 40)  # a new generation
    generations = token_store.features.distinct("generation", {"sae_id": "tok/b"})
    assert len(generations) == 1 and generations != ["new"]
    [e] = store_explanations.of_feature(token_store, "tok/b", 4)
    assert (e["id"], e["text"], e["source"], e["score"]) == (kept, "fires on the", "gpt-4o-mini", 0.5)
    assert store_explanations.search_token(token_store, "the", "tok/b").results == []


def test_search_by_token_on_the_analyzed_store_finds_the_features_peaking_on_it(client, browsed_store):
    sae = browsed_store.saes.find_one({"_id": SAE})
    docs = list(browsed_store.features.find(feature_filter(sae)).sort("index", 1))
    first = next(d for d in docs if d.get("top_examples"))["top_examples"][0]
    token = first["tokens"][first["peak"]]
    want = [  # from the top examples themselves, not the analysis's peak_tokens
        d["index"]
        for d in docs
        if any(ex["tokens"][ex["peak"]].strip() == token.strip() for ex in d.get("top_examples") or [])
    ]
    found = client.get("/api/search", query_string={"by": "token", "q": token.strip(), "sae": SAE}).get_json()
    assert want and [r["index"] for r in found["results"]] == want[: store_explanations.SEARCH_LIMIT]
