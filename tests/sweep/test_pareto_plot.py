"""The sweep's Pareto plot and its store document (what the browser shows)."""

from raysae.sweep.pareto_plot import pareto_png, sweep_document

ROWS = [
    {"sae_id": f"s/t{i}", "architecture": a, "l0": l0, "fvu": f}
    for i, (a, l0, f) in enumerate([("topk", 32, 0.2), ("jumprelu", 60, 0.1), ("standard", 40, 0.3)])
]


def test_pareto_plot_is_drawn_only_with_numbers():
    png = pareto_png(ROWS)
    assert png is not None and png.startswith(b"\x89PNG") and len(png) > 5_000
    assert pareto_png([{"sae_id": "s/t0", "status": "failed"}]) is None


def test_the_sweep_document_marks_the_frontier():
    doc = sweep_document(
        "s", [*ROWS, {"sae_id": "s/t3", "status": "failed"}], metric="fvu", mode="min", png=b"x"
    )
    assert doc["_id"] == "s" and doc["y"] == "fvu" and doc["pareto_png"] == b"x"
    frontier = {p["sae_id"]: p["frontier"] for p in doc["points"]}
    assert frontier == {"s/t0": True, "s/t1": True, "s/t2": False}  # t2 is beaten by t0 on both axes
    ev = sweep_document(
        "s",
        [{**r, "explained_variance": 1 - r["fvu"]} for r in ROWS],
        metric="explained_variance",
        mode="max",
        png=None,
    )
    assert ev["y"] == "explained_variance" and {p["sae_id"] for p in ev["points"] if p["frontier"]} == {
        "s/t0",
        "s/t1",
    }


def test_the_plot_has_a_title_and_a_log_l0_axis():
    from raysae.config import load_config
    from raysae.sweep.pareto_plot import pareto_figure, pareto_title

    cfg = load_config(
        None, ["name=mysweep", "model.name=assets/smollm2-135m", "model.hook_point=blocks.5.hook_resid_post"]
    )
    title = pareto_title(cfg, [{**r, "tokens": 180224} for r in ROWS])
    assert title == "mysweep: assets/smollm2-135m, blocks.5.hook_resid_post, 180,224 tokens"
    assert pareto_title(cfg, [{"tokens": 1000}, {"tokens": 4096}]).endswith(", 1,000-4,096 tokens")
    ax = pareto_figure(ROWS, title=title).axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    assert ax.get_title() == title and "L0" in ax.get_xlabel() and ax.get_ylabel() == "fvu"
    assert pareto_figure(ROWS, y="fvu").axes[0].get_title() == ""  # a title only when given
    assert pareto_figure([{"sae_id": "s/t0", "status": "failed"}]) is None
