"""The feature browser in headless Chromium against a store from a real tiny analysis
(fixtures in conftest.py). Screenshots go to test-artifacts/dashboard/."""

from raysae.dashboard.render import logit_token, number
from tests.conftest import HTML_PAYLOAD
from tests.dashboard.conftest import ARTIFACTS

SAE = "browse/t000"


def test_sae_list_sorts_and_leads_to_an_sae_page(page, site):
    page.goto(site)
    assert page.locator("table.saes tbody tr").count() == 2
    page.get_by_role("link", name="FVU", exact=True).click()
    rows = page.locator("table.saes tbody tr td:first-child").all_inner_texts()
    assert [r.split()[0] for r in rows] == ["browse/t001", "browse/t000"]  # fvu 0.3, 0.5
    page.screenshot(path=ARTIFACTS / "saes.png", full_page=True)
    page.get_by_role("link", name=SAE).click()
    page.wait_for_url(f"**/sae/{SAE}")
    assert page.locator("h1").inner_text() == SAE
    assert page.locator("figure.hist rect").count() > 3  # the density histogram
    alive, dead = int(page.locator("#alive").inner_text()), int(page.locator("#dead").inner_text())
    assert alive + dead == 128 and dead > 0
    assert page.locator("table.features tbody tr").count() == 50
    page.screenshot(path=ARTIFACTS / "sae.png", full_page=True)
    page.get_by_role("link", name="next →").click()
    assert "page 2 of 3" in page.locator("p.count").inner_text()
    page.locator("#random").click()
    page.wait_for_url(f"**/sae/{SAE}/feature/*")
    assert "never fired" not in page.locator("#frequency").inner_text()


def test_feature_page_shows_stats_shaded_examples_and_logits(page, site, browsed_store):
    doc = browsed_store.features.find_one({"sae_id": SAE, "rank_frequency": 0})  # the most frequent feature
    page.goto(f"{site}/sae/{SAE}/feature/{doc['index']}")
    assert page.locator("#feature-index").inner_text() == str(doc["index"])
    assert page.locator("#max-activation").inner_text() == number(doc["max_activation"])
    examples = page.locator("#top-examples .example")
    assert examples.count() == len(doc["top_examples"]) == 4
    first = doc["top_examples"][0]
    tokens = examples.first.locator(".tok")
    assert tokens.count() == len(first["tokens"])
    peak = examples.first.locator(".tok.peak")
    assert peak.get_attribute("title") == number(first["max_activation"], 4)  # hover shows the value
    assert "rgba(255, 140, 0, 1" in peak.get_attribute("style")  # the top example's peak: full shade
    shaded = [
        s
        for s in tokens.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
        if s not in ("rgba(0, 0, 0, 0)", "transparent")
    ]
    assert shaded, "no token of the top example is highlighted"
    peak.hover()
    for side in ("top", "bottom"):
        shown = page.locator(f"#logits-{side} tbody td:first-child").all_inner_texts()
        assert shown == [logit_token(t["token"]) for t in doc["logits"][side]]
    assert page.locator("h3").count() >= 1  # band examples
    page.screenshot(path=ARTIFACTS / "feature.png", full_page=True)


def test_corpus_html_renders_as_text(page, site, browsed_store):
    doc = browsed_store.features.find_one({"sae_id": SAE, "top_examples.tokens": HTML_PAYLOAD})
    assert doc is not None, "no top example holds the HTML payload"
    page.goto(f"{site}/sae/{SAE}/feature/{doc['index']}")
    assert HTML_PAYLOAD in page.locator("#top-examples").inner_text()
    assert page.evaluate("window.pwned") is None  # the payload did not run
    assert page.locator("main script").count() == 0
    page.screenshot(path=ARTIFACTS / "escaped.png", full_page=True)


def test_missing_feature_is_a_404_page(page, site):
    response = page.goto(f"{site}/sae/{SAE}/feature/999")
    assert response.status == 404
    assert "has no feature 999" in page.locator("p.error").inner_text()
    response = page.goto(f"{site}/sae/not/there")
    assert response.status == 404 and "No SAE called" in page.inner_text("main")


def test_neighbour_and_match_links_carry_the_decoder_cosines(page, site, browsed_store):
    import numpy as np

    from raysae import load_sae

    saes = {s["_id"]: s for s in browsed_store.saes.find({"_id": {"$in": [SAE, "browse/t001"]}})}
    W = {k: load_sae(s["checkpoint"]).W_dec.detach().double().numpy() for k, s in saes.items()}
    unit = {k: w / np.linalg.norm(w, axis=1, keepdims=True) for k, w in W.items()}
    index = browsed_store.features.find_one({"sae_id": SAE, "rank_frequency": 0})["index"]
    cos = unit[SAE] @ unit[SAE][index]
    cos[index] = -np.inf
    nearest = np.argsort(-cos, kind="stable")[:10]
    page.goto(f"{site}/sae/{SAE}/feature/{index}")
    rows = page.locator("#neighbours tbody tr")
    assert rows.count() == 10
    for row, j in zip(rows.all(), nearest, strict=True):
        link, shown = row.locator("td").all()
        assert link.locator("a").get_attribute("href") == f"/sae/{SAE}/feature/{j}"
        assert shown.inner_text() == f"{cos[j]:.3f}"
    other = unit["browse/t001"] @ unit[SAE][index]
    match = page.locator("#matches tbody tr")
    assert match.count() == 1
    sae_cell, feature_cell, cosine_cell = match.locator("td").all()
    assert sae_cell.inner_text() == "browse/t001" and cosine_cell.inner_text() == f"{other.max():.3f}"
    feature_cell.locator("a").click()
    page.wait_for_url(f"**/sae/browse/t001/feature/{int(other.argmax())}")
