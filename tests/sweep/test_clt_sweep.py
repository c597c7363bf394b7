"""A sweep trains cross-layer transcoders over every layer of the tiny model from one cache pass
(TopK and JumpReLU in one population), with pooled and per-layer FVU, L0 and the replacement
model's CE-loss recovered in results.csv; the saved CLTs reload and reproduce their FVU."""

import csv
import json
from pathlib import Path

import pytest
import torch

from raysae import load_sae
from raysae.activations import read_cache, verify_cache
from raysae.activations.build import training_hooks
from raysae.activations.cache import cache_dir
from raysae.metrics import evaluate_layers
from raysae.run_dir import write_config
from raysae.sweep.__main__ import main as sweep_main

IN, OUT = "blocks.{layer}.ln2.hook_normalized", "blocks.{layer}.hook_mlp_out"


@pytest.fixture(scope="module")
def sweep(train_config, tmp_path_factory):
    cfg = train_config(
        "clts",
        f"model.hook_point={IN}",
        f"model.hook_point_out={OUT}",
        "model.layers=[0, 1]",
        "sae.kind=clt",
        "sae.jumprelu_init_threshold=0.001",
        "sweep.search_space={sae.architecture: {grid: [topk, jumprelu]}}",
        "sweep.saes_per_trial=2",
    )
    config_file = write_config(cfg, tmp_path_factory.mktemp("clt-sweep-config"))
    code = sweep_main([str(config_file)])
    out = Path(cfg.output_dir) / "clts"
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    return cfg, code, out, rows


def test_clts_train_in_one_pass_with_per_layer_metrics(sweep):
    cfg, code, out, rows = sweep
    assert code == 0
    assert sorted(r["sae.architecture"] for r in rows) == ["jumprelu", "topk"]
    for row in rows:
        assert row["status"] == "finished", row
        for column in ("fvu", "l0", "ce_loss_recovered", "fvu_layer_0", "fvu_layer_1", "l0_layer_1"):
            assert row[column] not in ("", "nan"), (column, row)
        assert 0 < float(row["fvu"]) < 1.5
    manifest = verify_cache(cache_dir(cfg, training_hooks(cfg), "tokens"))
    names = [h["name"] for h in manifest["hooks"]]
    assert names == [IN.format(layer=0), IN.format(layer=1), OUT.format(layer=0), OUT.format(layer=1)]
    assert manifest["generation_passes"] == 1


def test_saved_clts_reload_and_reproduce_their_fvu(sweep):
    cfg, _, out, rows = sweep
    directory = cache_dir(cfg, training_hooks(cfg), "tokens")
    taken = read_cache(directory, seed=None).take(1024)
    x = torch.tensor([r["acts"] for r in taken])
    y = torch.tensor([r["acts_1"] for r in taken])
    assert x.shape == (1024, 2, 32) and y.shape == (1024, 2, 32)
    for row in rows:
        sae_dir = out / "saes" / row["sae_id"]
        clt = load_sae(sae_dir)
        assert clt.kind == "clt" and clt.n_layers == 2
        record = json.loads((sae_dir / "raysae.json").read_text())
        assert record["metrics"]["fvu_layer_1"] == pytest.approx(float(row["fvu_layer_1"]))
        # The reloaded CLT on training rows: the same quality as on the held-out rows.
        again = evaluate_layers(clt, [(x, y)], layers=[0, 1])
        assert again["fvu"] == pytest.approx(float(row["fvu"]), abs=0.15)
        # JumpReLU CLTs are also written in circuit-tracer's layout; TopK ones cannot be.
        assert (sae_dir / "circuit_tracer").is_dir() == (row["sae.architecture"] == "jumprelu")
