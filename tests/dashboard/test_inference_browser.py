"""Which features fire on a text, in headless Chromium (fixtures in conftest.py): typed on the
SAE page, per-token features, a click through to a feature whose shading on the text equals
`sae.encode` computed here; typed HTML stays text. Screenshots: infer-1400.png, infer-800.png."""

import pytest
import torch

from raysae.activations.language_model import hook_activations, load_model
from raysae.checkpoint import load_sae, read_record
from raysae.config import RaysaeConfig
from tests.conftest import HTML_PAYLOAD
from tests.dashboard.conftest import ARTIFACTS

SAE = "browse/t000"
TEXT = "the queen whispers to the fool under stars and the king sleeps while blood falls"


@pytest.fixture(scope="module")
def encoded(browsed_store):
    """(token ids, [tokens, d_sae] activations, BOS zeroed) of TEXT, from the checkpoint's own
    config, model and SAE."""
    doc = browsed_store.saes.find_one({"_id": SAE})
    cfg = RaysaeConfig.model_validate(read_record(doc["checkpoint"])["config"])
    model = load_model(cfg.model, "cpu")
    ids = [model.tokenizer.bos_token_id, *model.tokenizer(TEXT, add_special_tokens=False)["input_ids"]]
    hook = cfg.model.hook_point
    x = hook_activations(model, torch.tensor([ids]), [hook])[hook][0]
    with torch.no_grad():
        f = load_sae(doc["checkpoint"]).encode(x.float())
    f[0] = 0  # BOS is left out, as in the analysis
    return ids, f


def boxes_apart(page, selectors):
    """The elements' bounding boxes do not intersect, and none is wider than the window."""
    boxes = [page.locator(s).first.bounding_box() for s in selectors]
    width = page.viewport_size["width"]
    for s, b in zip(selectors, boxes, strict=True):
        assert b is not None and b["x"] >= 0 and b["x"] + b["width"] <= width + 1, s
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a and b
            apart = (
                a["x"] + a["width"] <= b["x"]
                or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"]
                or b["y"] + b["height"] <= a["y"]
            )
            assert apart, (a, b)


def test_type_a_text_see_features_and_click_through_to_the_shading(page, site, encoded):
    ids, f = encoded
    page.goto(f"{site}/sae/{SAE}")
    page.locator("#infer textarea").fill(TEXT)
    page.locator("#infer button[type=submit]").click()
    page.wait_for_url(f"**/sae/{SAE}/infer?**")
    rows = page.locator("#infer-tokens tbody tr")
    assert rows.count() == len(ids)
    for pos in (1, len(ids) - 1):
        shown = rows.nth(pos).locator("a.feat").evaluate_all("els => els.map(e => +e.dataset.index)")
        row = f[pos]
        assert shown == [int(i) for i in torch.argsort(row, descending=True)[:5] if row[i] > 0]
    for width in (1400, 800):
        page.set_viewport_size({"width": width, "height": 1000})
        boxes_apart(page, ["form.infer-form", "#infer-shaded", ".infer-strongest", "#infer-tokens"])
        page.screenshot(path=ARTIFACTS / f"infer-{width}.png", full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})

    link = rows.nth(1).locator("a.feat").first
    index = int(link.get_attribute("data-index") or -1)
    link.click()
    page.wait_for_url(f"**/sae/{SAE}/feature/{index}?**")
    assert page.locator("#feature-index").inner_text() == str(index)
    assert page.locator("#try-feature textarea").input_value() == TEXT
    toks = page.locator("#try-feature #infer-shaded .tok")
    acts = toks.evaluate_all("els => els.map(e => e.dataset.act)")
    assert len(acts) == len(ids) and acts[0] == ""
    assert [float(a) for a in acts[1:]] == pytest.approx(f[1:, index].tolist(), rel=1e-5, abs=1e-7)
    colours = toks.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert colours[1] not in ("rgba(0, 0, 0, 0)", "transparent")  # it fired there: shaded
    page.screenshot(path=ARTIFACTS / "infer-feature.png", full_page=True)


def test_typed_script_stays_text(page, site):
    text = f"the king {HTML_PAYLOAD} falls"
    page.goto(f"{site}/sae/{SAE}")
    page.locator("#infer textarea").fill(text)
    page.locator("#infer button[type=submit]").click()
    page.wait_for_url(f"**/sae/{SAE}/infer?**")
    assert HTML_PAYLOAD in page.locator("#infer-tokens").inner_text()
    assert page.locator("#infer-tokens script, #infer-shaded script").count() == 0
    page.locator("#infer-tokens a.feat").first.click()
    page.wait_for_url(f"**/sae/{SAE}/feature/**")
    assert HTML_PAYLOAD in page.locator("#try-feature #infer-shaded").inner_text()
    assert page.evaluate("typeof window.pwned") == "undefined"
