"""One sweep over a paired cache trains an SAE, a transcoder and a skip transcoder side by side,
in one population (one pass over the data), with FVU, L0 and CE-loss recovered in results.csv."""

import csv
import json
from pathlib import Path

import pytest
import torch

from raysae import load_sae
from raysae.activations import read_cache, verify_cache
from raysae.activations.build import training_hooks
from raysae.activations.cache import cache_dir
from raysae.metrics import evaluate
from raysae.run_dir import write_config
from raysae.sweep.__main__ import main as sweep_main

IN, OUT = "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"


@pytest.fixture(scope="module")
def sweep(train_config, tmp_path_factory):
    cfg = train_config(
        "transcoders",
        f"model.hook_point={IN}",
        f"model.hook_point_out={OUT}",
        "sweep.search_space={sae.kind: {grid: [sae, transcoder, skip_transcoder]}}",
        "sweep.saes_per_trial=3",
        "train.ce_contexts=4",
        "analysis.which=all",
    )
    config_file = write_config(cfg, tmp_path_factory.mktemp("transcoder-sweep-config"))
    code = sweep_main([str(config_file)])
    out = Path(cfg.output_dir) / "transcoders"
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    return cfg, code, out, rows


def test_sae_transcoder_and_skip_transcoder_train_in_one_pass(sweep):
    cfg, code, out, rows = sweep
    assert code == 0
    assert sorted(r["sae.kind"] for r in rows) == ["sae", "skip_transcoder", "transcoder"]
    for row in rows:
        assert row["status"] == "finished", row
        for column in ("fvu", "l0", "ce_loss_recovered"):
            assert row[column] not in ("", "nan"), (column, row)
        assert 0 < float(row["fvu"]) < 1.5
    manifest = verify_cache(cache_dir(cfg, training_hooks(cfg), "tokens"))
    assert [h["name"] for h in manifest["hooks"]] == [IN, OUT] and manifest["generation_passes"] == 1


def test_the_saved_transcoders_state_their_hooks_and_reproduce_their_fvu(sweep):
    cfg, _, out, rows = sweep
    rows_by_kind = {r["sae.kind"]: r for r in rows}
    directory = cache_dir(cfg, training_hooks(cfg), "tokens")
    shard_rows = read_cache(directory, seed=None).take(2048)
    x = torch.tensor([r["acts"] for r in shard_rows])
    y = torch.tensor([r["acts_1"] for r in shard_rows])
    for kind, row in rows_by_kind.items():
        saved = out / "saes" / row["sae_id"]
        cfg_json = json.loads((saved / "cfg.json").read_text())
        sae = load_sae(saved)
        assert sae.kind == kind
        if kind == "sae":
            assert cfg_json["architecture"] == "topk" and "hook_name_out" not in cfg_json["metadata"]
        else:
            assert cfg_json["metadata"]["hook_name"] == IN and cfg_json["metadata"]["hook_name_out"] == OUT
            assert cfg_json["d_out"] == y.shape[1]
        # The transcoders are measured against the target hook, the SAE against its input.
        mine = evaluate(sae, [(x, y)])["fvu"]
        assert 0 < mine < 1.5


def test_the_store_and_browser_name_a_transcoders_two_hooks(sweep):
    from raysae.dashboard.app import create_app
    from raysae.store import EmbeddedServer, Store

    cfg, _, out, rows = sweep
    ids = {r["sae.kind"]: r["sae_id"] for r in rows}
    with EmbeddedServer(out / "store") as srv, Store(srv.uri, cfg.store.database) as store:
        docs = {d["_id"]: d for d in store.saes.find()}
        assert docs[ids["transcoder"]]["hook_point"] == IN
        assert docs[ids["transcoder"]]["hook_point_out"] == OUT
        assert docs[ids["skip_transcoder"]]["kind"] == "skip_transcoder"
        assert docs[ids["sae"]]["hook_point_out"] is None
        # the features were analysed on the input hook's activations, with logits through W_dec
        top = store.features.find_one({"sae_id": ids["transcoder"], "act_frequency": {"$gt": 0}})
        assert top["top_examples"][0]["tokens"] and top["logits"]["top"]
        client = create_app(store).test_client()
        page = client.get(f"/sae/{ids['transcoder']}").get_data(as_text=True)
        assert f'<code id="hook-out">{OUT}</code>' in page and "reads <code>" in page
