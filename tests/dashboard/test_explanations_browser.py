"""Explanations in headless Chromium: add one holding HTML on a feature page, see it shown as
text, find the feature by it from the search page and click through (fixtures in conftest.py)."""

import pytest

from raysae.store import explanations as store_explanations
from tests.conftest import HTML_PAYLOAD
from tests.dashboard.conftest import ARTIFACTS

SAE = "browse/t001"
SOURCE = "test-explanations-browser"


@pytest.fixture
def cleanup(browsed_store):
    yield
    store_explanations.collection(browsed_store).delete_many({"source": SOURCE})


def test_an_explanation_is_added_shown_escaped_found_by_search_and_deleted(
    page, site, browsed_store, cleanup
):
    index = browsed_store.features.find_one({"sae_id": SAE, "rank_frequency": 1})["index"]
    text = f"{HTML_PAYLOAD} knocking"
    page.goto(f"{site}/sae/{SAE}/feature/{index}")
    form = page.locator("#add-explanation")
    form.locator("textarea[name=text]").fill(text)
    assert form.locator("input[name=source]").input_value() == "user"  # the default
    form.locator("input[name=source]").fill(SOURCE)
    form.locator("input[name=score]").fill("0.8")
    form.get_by_role("button", name="Add").click()
    page.wait_for_url(f"**/sae/{SAE}/feature/{index}#explanations")
    shown = page.locator("#explanations .explanation")
    assert shown.count() == 1
    assert shown.locator(".explanation-text").inner_text() == text  # the markup as text
    assert SOURCE in shown.locator(".explanation-meta").inner_text() and "0.8" in shown.inner_text()
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("#explanations script").count() == 0
    page.screenshot(path=ARTIFACTS / "feature-explanation.png", full_page=True)

    page.goto(f"{site}/search")
    page.get_by_label("search text").fill("KNOCKING")  # any case
    page.get_by_label("search by").select_option("explanation")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/search?*")
    results = page.locator("table.search-results tbody tr")
    assert results.count() == 1 and results.locator(".explanation-text").inner_text() == text
    assert page.evaluate("typeof window.pwned") == "undefined"
    page.screenshot(path=ARTIFACTS / "search.png", full_page=True)
    results.locator("a.feature-link").click()
    page.wait_for_url(f"**/sae/{SAE}/feature/{index}")
    assert page.locator("#feature-index").inner_text() == str(index)

    page.locator("#explanations .explanation-delete button").click()
    page.wait_for_url(f"**/sae/{SAE}/feature/{index}#explanations")
    assert page.locator("#explanations .explanation").count() == 0
    assert store_explanations.of_feature(browsed_store, SAE, index) == []
