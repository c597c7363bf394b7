"""Which features fire on a text (issue 19 item 1), through the Flask test client and the
inference module, on the tiny analyzed store: the per-token features equal `sae.encode` of the
model's hook activations computed here, texts are cut at the limit, a model that cannot load
is a message (not a 500), and typed HTML is shown as text."""

import json
import shutil

import pytest
import torch

from raysae.activations.language_model import hook_activations, load_model
from raysae.analysis.token_text import TokenText
from raysae.checkpoint import load_sae, read_record
from raysae.config import RaysaeConfig
from raysae.dashboard import create_app
from raysae.dashboard.inference import LRU, MAX_TOKENS, Engine, InferenceError
from tests.conftest import HTML_PAYLOAD, WORDS

SAE = "browse/t000"
TEXT = "the king speaks to a fool in castle night while rain falls and the queen dreams of gold"


@pytest.fixture(scope="module")
def client(browsed_store):
    return create_app(browsed_store, seed=0).test_client()


@pytest.fixture(scope="module")
def reference(browsed_store):
    """`encode(sae_id, text)` -> (token ids, [tokens, d_sae] activations with BOS zeroed),
    computed here from the checkpoint's own config, model and SAE."""
    models = {}

    def encode(sae_id, text):
        doc = browsed_store.saes.find_one({"_id": sae_id})
        cfg = RaysaeConfig.model_validate(read_record(doc["checkpoint"])["config"])
        key = cfg.model.model_dump_json()
        if key not in models:
            models[key] = load_model(cfg.model, "cpu")
        model = models[key]
        tok = model.tokenizer
        ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
        x = hook_activations(model, torch.tensor([ids]), [cfg.model.hook_point])[cfg.model.hook_point][0]
        with torch.no_grad():
            f = load_sae(doc["checkpoint"]).encode(x.float())
        f[0] = 0  # BOS is left out, as in the analysis
        return ids, f, model

    return encode


def test_api_per_token_features_equal_encode(client, reference):
    ids, f, model = reference(SAE, TEXT)
    got = client.get(f"/api/sae/{SAE}/infer", query_string={"text": TEXT})
    assert got.status_code == 200, got.get_data(as_text=True)
    doc = got.get_json()
    assert [t["id"] for t in doc["tokens"]] == ids
    shown = TokenText(model.tokenizer)  # as the analysis shows token texts
    assert [t["text"] for t in doc["tokens"]] == [shown(i) for i in ids]
    assert doc["tokens"][0]["excluded"] and doc["tokens"][0]["features"] == []
    assert not doc["truncated"] and doc["n_text_tokens"] == len(ids) - 1
    fired = 0
    for pos, token in enumerate(doc["tokens"][1:], start=1):
        row = f[pos]
        expected = [(int(i), float(row[i])) for i in torch.argsort(row, descending=True)[:5] if row[i] > 0]
        assert [t["index"] for t in token["features"]] == [i for i, _ in expected]
        assert [t["activation"] for t in token["features"]] == pytest.approx(
            [a for _, a in expected], rel=1e-5
        )
        fired += len(expected)
    assert fired > 0, "no feature fires on the text: the comparison shows nothing"
    strongest = int(f.max(dim=0).values.argmax())
    assert doc["feature"]["index"] == strongest  # the default feature: the strongest on the text
    chosen = int(torch.argsort(f.max(dim=0).values, descending=True)[3])
    doc = client.get(f"/api/sae/{SAE}/infer", query_string={"text": TEXT, "feature": chosen}).get_json()
    acts = doc["feature"]["activations"]
    assert acts[0] is None  # BOS
    assert acts[1:] == pytest.approx(f[1:, chosen].tolist(), rel=1e-5, abs=1e-7)


def test_the_standard_sae_too(client, reference):
    ids, f, _ = reference("browse/t001", TEXT)
    doc = client.get("/api/sae/browse/t001/infer", query_string={"text": TEXT}).get_json()
    peak = f.max(dim=0).values
    assert doc["strongest"][0]["index"] == int(peak.argmax())
    assert doc["strongest"][0]["activation"] == pytest.approx(float(peak.max()), rel=1e-5)


def test_page_lists_tokens_with_feature_links_and_shading(client, reference):
    ids, f, _ = reference(SAE, TEXT)
    html = client.get(f"/sae/{SAE}/infer", query_string={"text": TEXT}).get_data(as_text=True)
    assert html.count('<tr data-position="') == len(ids)
    top = int(f[1].argmax())
    assert f'href="/sae/{SAE}/feature/{top}?text=' in html  # linked to the feature page, with the text
    assert 'id="infer-shaded"' in html and "left out (BOS/padding)" in html
    page = client.get(f"/sae/{SAE}/feature/{top}", query_string={"text": TEXT}).get_data(as_text=True)
    shaded = page.split('id="infer-shaded"')[1].split("</div>")[0]
    acts = [a.split('"')[0] for a in shaded.split('data-act="')[1:]]
    assert acts[0] == ""
    assert [float(a) for a in acts[1:]] == pytest.approx(f[1:, top].tolist(), rel=1e-5, abs=1e-7)


def test_a_long_text_is_cut_at_the_limit(client, browsed_store, reference):
    text = " ".join(WORDS[i % len(WORDS)] for i in range(400))
    _, _, model = reference(SAE, "the")
    limit = min(MAX_TOKENS, model.cfg.n_ctx - 1)  # the random model's context holds BOS + 255
    ids, f, _ = reference(SAE, " ".join(text.split()[:limit]))
    doc = client.get(f"/api/sae/{SAE}/infer", query_string={"text": text, "feature": 7}).get_json()
    assert doc["truncated"] and doc["limit"] == limit and doc["n_text_tokens"] == 400
    assert [t["id"] for t in doc["tokens"]] == ids
    assert doc["feature"]["activations"][1:] == pytest.approx(f[1:, 7].tolist(), rel=1e-5, abs=1e-7)
    html = client.get(f"/sae/{SAE}/infer", query_string={"text": text}).get_data(as_text=True)
    assert f"only its first {limit} were run" in html


@pytest.fixture
def broken_saes(browsed_store, tmp_path):
    """Two SAE documents of our own: one whose checkpoint names a missing model directory,
    one whose checkpoint directory is gone. Removed afterwards."""
    doc = browsed_store.saes.find_one({"_id": SAE})
    copy = tmp_path / "t000"
    shutil.copytree(doc["checkpoint"], copy)
    record = json.loads((copy / "raysae.json").read_text())
    record["config"]["model"]["name"] = str(tmp_path / "no-such-model")
    (copy / "raysae.json").write_text(json.dumps(record))
    made = {
        "browse/broken-model": {**doc, "_id": "browse/broken-model", "checkpoint": str(copy)},
        "browse/broken-checkpoint": {
            **doc,
            "_id": "browse/broken-checkpoint",
            "checkpoint": str(tmp_path / "gone"),
        },
    }
    browsed_store.saes.insert_many(list(made.values()))
    try:
        yield made
    finally:
        browsed_store.saes.delete_many({"_id": {"$in": list(made)}})


def test_a_model_or_checkpoint_that_cannot_load_is_a_message(client, broken_saes, tmp_path):
    reasons = {
        "browse/broken-model": "no such local model directory",
        "browse/broken-checkpoint": "does not exist",
    }
    for sae_id, reason in reasons.items():
        page = client.get(f"/sae/{sae_id}/infer", query_string={"text": TEXT})
        assert page.status_code == 503
        html = page.get_data(as_text=True)
        error = html.split('class="infer-error"')[1].split("</p>")[0]
        assert reason in error
        api = client.get(f"/api/sae/{sae_id}/infer", query_string={"text": TEXT})
        assert api.status_code == 503 and reason in api.get_json()["error"]
        with pytest.raises(InferenceError, match=reason):
            Engine().run(broken_saes[sae_id], TEXT)
    ok = client.get(f"/sae/{SAE}/infer", query_string={"text": TEXT})  # the others still run
    assert ok.status_code == 200 and "infer-error" not in ok.get_data(as_text=True)


def test_typed_html_is_shown_escaped(client):
    text = f"the king {HTML_PAYLOAD} falls"
    for url in (f"/sae/{SAE}/infer", f"/sae/{SAE}/feature/0"):
        html = client.get(url, query_string={"text": text}).get_data(as_text=True)
        assert "<script" not in html
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html


def test_empty_text_unknown_sae_and_bad_feature(client):
    html = client.get(f"/sae/{SAE}/infer", query_string={"text": "  "}).get_data(as_text=True)
    assert 'class="infer-form"' in html and "infer-tokens" not in html and "infer-error" not in html
    assert "infer-shaded" not in client.get(f"/sae/{SAE}/feature/0").get_data(as_text=True)
    assert client.get("/sae/nope/t9/infer", query_string={"text": TEXT}).status_code == 404
    missing = client.get("/api/sae/nope/t9/infer", query_string={"text": TEXT})
    assert missing.status_code == 404 and "nope/t9" in missing.get_json()["error"]
    assert client.get(f"/api/sae/{SAE}/infer").status_code == 400
    for bad in ("128", "-1", "x"):
        assert client.get(f"/sae/{SAE}/infer", query_string={"text": TEXT, "feature": bad}).status_code == 400
        api = client.get(f"/api/sae/{SAE}/infer", query_string={"text": TEXT, "feature": bad})
        assert api.status_code == 400 and "0–127" in api.get_json()["error"]


def test_models_load_once_and_the_cache_is_bounded(browsed_store):
    engine = Engine()
    docs = [browsed_store.saes.find_one({"_id": i}) for i in (SAE, "browse/t001")]
    for doc in docs * 2:
        engine.run(doc, TEXT)
    assert len(engine.models.items) == 1 and len(engine.saes.items) == 2  # one model, two SAEs
    loads = []
    cache = LRU(2)
    for key in ["a", "b", "a", "c", "a", "b"]:
        cache.get(key, lambda key=key: loads.append(key) or key)
    assert loads == ["a", "b", "c", "b"]  # "b" was the least recently used when "c" came
    assert list(cache.items) == ["a", "b"]
