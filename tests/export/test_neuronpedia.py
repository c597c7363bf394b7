"""Neuronpedia export of a real tiny analysis: every feature once, values from the store."""

import json
import os

import pytest

from raysae.export.__main__ import main
from raysae.export.neuronpedia import band_fraction, layer_of

SAE = "browse/t000"


def store_uri(store):
    return os.environ.get("MONGODB_URI") or store.uri_shown  # the embedded server has no password


def test_export_writes_every_feature_in_neuronpedia_batches(browsed_store, browsed_run, tmp_path, capsys):
    cfg, _, _ = browsed_run
    main(
        [
            "neuronpedia",
            "--uri",
            store_uri(browsed_store),
            "--database",
            cfg.store.database,
            "--sae",
            SAE,
            "--out",
            str(tmp_path),
            "--features-per-batch",
            "50",
            "--model-id",
            "tiny",
        ]
    )
    assert "wrote 3 Neuronpedia batch file(s)" in capsys.readouterr().out
    batches = [json.loads((tmp_path / f"batch-{n}.json").read_text()) for n in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch-0.json", "batch-1.json", "batch-2.json"]
    features = [f for b in batches for f in b["features"]]
    assert [f["feature_index"] for f in features] == list(range(128))
    assert {(b["model_id"], b["layer"], b["sae_set"]) for b in batches} == {("tiny", 1, "raysae-browse")}

    docs = {d["index"]: d for d in browsed_store.features.find({"sae_id": SAE}, {"_id": 0})}
    for f in features:
        d = docs[f["feature_index"]]
        assert f["frac_nonzero"] == d["act_frequency"]
        assert f["pos_str"] == [t["token"] for t in d["logits"]["top"]]
        assert f["neg_values"] == [round(t["value"], 3) for t in d["logits"]["bottom"]]
        assert sum(f["freq_hist_data_bar_heights"]) == d["n_active"]
        logit_hist = d["logits"]["histogram"]
        assert f["logits_hist_data_bar_heights"] == logit_hist["counts"] and len(logit_hist["counts"]) == 40
        centres = f["logits_hist_data_bar_values"]
        assert len(centres) == 40 and centres == sorted(centres)
        assert logit_hist["edges"][0] <= centres[0] and centres[-1] <= logit_hist["edges"][-1]
        assert f["num_tokens_for_dashboard"] == 600 and f["n_tokens_in_prompt"] == 16
        top = [a for a in f["activations"] if a["bin_min"] == -1]
        assert [a["tokens"] for a in top] == [e["tokens"] for e in d["top_examples"]]
        assert all(a["bin_max"] == round(d["max_activation"], 3) for a in top)
        banded = [a for a in f["activations"] if a["bin_min"] != -1]
        n_banded = sum(len(b["examples"]) for b in d["band_examples"] if b["band"] != "non-activating")
        assert len(banded) == n_banded
        for a in banded:  # inside its band of the feature's max
            assert a["bin_min"] - 1e-3 <= max(a["values"]) <= a["bin_max"] + 1e-3


def test_unknown_sae_fails_naming_it(browsed_store, browsed_run, tmp_path, capsys):
    from raysae.cli import run_main

    cfg, _, _ = browsed_run
    with pytest.raises(SystemExit) as exit_:
        run_main(
            main,
            [
                "neuronpedia",
                "--uri",
                store_uri(browsed_store),
                "--database",
                cfg.store.database,
                "--sae",
                "browse/t999",
                "--out",
                str(tmp_path),
            ],
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "no SAE 'browse/t999'" in err and "browse/t000" in err
    assert not any(tmp_path.iterdir())


def test_band_fraction_and_layer():
    hist = {"edges": [0, 1, 2, 3, 4], "counts": [5, 3, 2, 0]}  # centres 0.5, 1.5, 2.5, 3.5
    assert band_fraction(hist, 1.0, 3.0) == 0.5
    assert band_fraction(hist, 0.0, 4.0) == 1.0
    assert band_fraction({"edges": [0, 1], "counts": [0]}, 0, 1) == 0.0
    assert layer_of("blocks.6.hook_resid_post") == 6 and layer_of("hook_embed") == 0
