"""What the templates draw: histogram geometry with ticks, frequency and token formats."""

import math

import pytest

from raysae.dashboard import render


def test_nice_ticks_are_round_inside_the_range():
    assert render.nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert render.nice_ticks(0.13, 7.9) == [2, 4, 6]
    assert render.nice_ticks(-3.2, 2.5) == [-2, 0, 2]
    ticks = render.nice_ticks(1e-4, 3.7e-3)
    assert all(1e-4 <= t <= 3.7e-3 for t in ticks) and 2 <= len(ticks) <= 6


def test_histogram_bars_span_the_plot_with_ticks_at_their_values():
    bars = render.histogram_bars([0.0, 1.0, 2.0, 4.0], [5, 0, 10], width=400, height=200)
    p = bars["plot"]
    assert bars["bars"][0]["x"] == p["x"] and math.isclose(
        bars["bars"][2]["x"] + bars["bars"][2]["w"] + 1, p["x"] + p["w"]
    )
    assert bars["bars"][2]["h"] == pytest.approx(p["h"]) and bars["bars"][0]["h"] == pytest.approx(p["h"] / 2)
    assert bars["bars"][1]["h"] == 0  # an empty bin has no bar
    # x ticks sit where their value falls on the axis.
    for t in bars["x_ticks"]:
        value = float(t["label"])
        assert t["x"] == pytest.approx(p["x"] + value / 4 * p["w"], abs=0.01)
    assert [t["label"] for t in bars["y_ticks"]] == ["0", "5", "10"]
    assert bars["y_ticks"][-1]["y"] == pytest.approx(p["y"]) and bars["y_ticks"][0]["y"] == pytest.approx(
        p["bottom"]
    )


def test_log_frequency_ticks_are_decades_shown_in_percent():
    bars = render.histogram_bars([-4.5, -3.2, -1.9, -0.6], [1, 2, 3], log_x=True)
    assert [t["label"] for t in bars["x_ticks"]] == ["0.01%", "0.1%", "1%", "10%"]
    assert "0.0316%" in bars["bars"][0]["label"] or "0.00316%" in bars["bars"][0]["label"]


def test_a_histogram_of_nothing_says_so():
    bars = render.histogram_bars([0.0, 1.0], [0])
    assert bars["empty"] and bars["bars"][0]["h"] == 0


def test_frequency_is_a_percentage_everywhere():
    assert render.percent(0.0042) == "0.42%"
    assert render.percent(1.0) == "100%"
    assert render.percent(0) == "0%"
    assert render.percent(None) == "—"
    assert render.percent(3e-8) == "3.00e-06%"
    assert render.frequency(0.0042) == "0.42% (1 in 238 tokens)"
    assert render.frequency(0.0) == "never fired"


def test_logit_tokens_show_their_spaces():
    assert render.logit_token(" the") == "␣the"
    assert render.logit_token("the ") == "the␣"
    assert render.logit_token("the") == "the"
    assert render.logit_token("  ") == "␣␣"
    assert render.logit_token("\n") == "↵"
    assert render.logit_token("") == "∅"


def test_metric_columns_have_human_headers():
    assert render.metric_label("fvu")[0] == "FVU"
    assert render.metric_label("some_new_metric") == ("some new metric", "some_new_metric")
    assert render.metric_value("dead_fraction", 0.25) == "25%"
    assert render.metric_value("l0", 31.25) == "31.2"
    assert render.model_name("/work/assets/smollm2-135m/") == "smollm2-135m"
    assert render.model_name("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
