"""Every page holds from 800 px to wide screens (headless Chromium): no box overlaps another,
nothing but a table's own scroll box is wider than the window, histograms fit their column.
A screenshot per page and width goes to test-artifacts/dashboard/layout-<page>-<width>.png."""

import pytest

from tests.dashboard.conftest import ARTIFACTS

SAE = "browse/t000"

# The boxes a page is laid out in; any two that are not nested must not intersect.
BOXES = (
    "main > *, main section, main section > *, .cards > .card, figure.hist, main table, "
    ".example, main form, .logit-tables > table, .scroll"
)

OVERLAPS = """sel => {
  const els = [...document.querySelectorAll(sel)].filter(e => e.getClientRects().length);
  const name = e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') +
    (e.className && typeof e.className === 'string' ? '.' + e.className.trim().split(/\\s+/).join('.') : '');
  const boxes = els.map(e => [e, e.getBoundingClientRect()]);
  const bad = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [a, r] = boxes[i], [b, s] = boxes[j];
    if (a.contains(b) || b.contains(a)) continue;
    const w = Math.min(r.right, s.right) - Math.max(r.left, s.left);
    const h = Math.min(r.bottom, s.bottom) - Math.max(r.top, s.top);
    if (w > 1 && h > 1) bad.push(name(a) + ' overlaps ' + name(b) + ` by ${w.toFixed(0)}x${h.toFixed(0)} px`);
  }
  const wide = els.filter(e => !e.closest('.scroll') && e.getBoundingClientRect().right > window.innerWidth + 1)
    .map(e => name(e) + ' ends at ' + e.getBoundingClientRect().right.toFixed(0) + ' px');
  const figures = [...document.querySelectorAll('figure.hist')].filter(f =>
    f.getBoundingClientRect().width > f.parentElement.getBoundingClientRect().width + 1).map(name);
  return {bad, wide, figures, scroll: document.documentElement.scrollWidth - window.innerWidth};
}"""


def pages(store):
    frequent = store.features.find_one({"sae_id": SAE, "rank_frequency": 0})["index"]
    return {
        "saes": "/",
        "sae": f"/sae/{SAE}",
        "feature": f"/sae/{SAE}/feature/{frequent}",
        "error": f"/sae/{SAE}/feature/999",
        "infer": f"/sae/{SAE}/infer?text=the+king+and+the+queen+speak+of+gold",
        "feature-text": f"/sae/{SAE}/feature/{frequent}?text=the+king+speaks#try-feature",
        "search": "/search?q=king&by=token",
    }


@pytest.mark.parametrize("width", [800, 1400])
def test_pages_hold_at_every_width(browser, site, browsed_store, width):
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    try:
        for name, path in pages(browsed_store).items():
            page.goto(site + path)
            found = page.evaluate(OVERLAPS, BOXES)
            has_api = name in ("saes", "sae", "feature", "feature-text")
            assert page.locator("header a.api").count() == has_api, f"{name}: no JSON link"
            page.screenshot(path=ARTIFACTS / f"layout-{name}-{width}.png", full_page=True)
            assert found["bad"] == [], f"{name} at {width} px"
            assert found["wide"] == [] and found["scroll"] <= 0, f"{name} at {width} px: {found}"
            assert found["figures"] == [], f"{name} at {width} px: a histogram wider than its column"
    finally:
        context.close()


def test_histograms_have_axes_with_ticks(page, site, browsed_store):
    page.goto(site + pages(browsed_store)["feature"])
    for figure in ("#activation-hist", "#logit-hist"):
        labels = page.locator(f"{figure} text.tick-label").all_text_contents()
        assert len(labels) >= 4, f"{figure}: {labels}"
    page.goto(site + pages(browsed_store)["sae"])
    decades = page.locator("#density-hist text.tick-label").all_text_contents()
    assert any(t.endswith("%") for t in decades)


def test_the_favicon_is_served(page, site):
    response = page.goto(site + "/favicon.ico")
    assert response.status == 200 and "svg" in response.headers["content-type"]
