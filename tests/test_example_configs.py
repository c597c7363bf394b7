"""examples/lm_saes: the original Language-Model-SAEs setups, each run offline through the
command its header names (SmolLM2-135M + Shakespeare, tiny budgets); examples/pretrained:
the hub/GPU configs load and expand."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raysae.activations.cache import cache_dir, read_manifest
from raysae.config import load_config

ROOT = Path(__file__).parents[1]
LM = ROOT / "examples" / "lm_saes"
TINY = [
    "activations.n_tokens=4096",
    "activations.shard_rows=1024",
    "activations.n_contexts=12",
    "activations.actors.num=1",
    "train.total_tokens=3072",
    "train.batch_size=512",
    "train.eval_tokens=1024",
    "train.log_every_steps=2",
    "train.ce_contexts=0",
    "analysis.n_tokens=1270",
    "analysis.actors.num=1",
    "analysis.top_examples=4",
]


def command_of(example: Path) -> list[str]:
    """The `raysae <cmd> examples/...` line the example's header documents."""
    line = next(t for t in example.read_text().splitlines() if t.startswith("#   raysae "))
    return line[len("#   ") :].split()


@pytest.fixture(scope="module")
def run(offline_assets, tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("lm-saes")
    overrides = [f"output_dir={root / 'runs'}", f"activations.cache_dir={root / 'cache'}", *TINY]
    # Each command joins the test run's Ray (as under `ray job submit`) instead of starting its own.
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}

    def run_example(name: str, *extra: str):
        example = LM / f"{name}.yaml"
        args = command_of(example)
        assert args[2] == f"examples/lm_saes/{name}.yaml"
        if "--sae" in args:  # the documented SAE directory, moved to this test's run folder
            args = args[: args.index("--sae")]
        args += list(extra)
        done = subprocess.run(
            # `python -m raysae` is the `raysae` command, run by this test's Python.
            [sys.executable, "-m", *args, *[a for o in overrides for a in ("--set", o)]],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        cfg = load_config(example, overrides)
        return cfg, Path(cfg.output_dir) / cfg.name

    run_example.overrides = overrides
    return run_example


def results(out: Path) -> list[dict]:
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows and all(0 < float(r["fvu"]) < 2 and int(r["tokens"]) >= 3072 for r in rows)
    return rows


def test_generate_then_train_and_analyze_on_the_caches(run):
    cfg1, _ = run("generate_1d")
    tokens = read_manifest(cache_dir(cfg1, cfg1.model.hook_point, "tokens"))
    assert tokens["complete"] and sum(s["rows"] for s in tokens["shards"]) >= 4096

    cfg, out = run("train_cached")
    assert results(out)[0]["architecture"] == "topk"
    assert read_manifest(cache_dir(cfg, cfg.model.hook_point, "tokens")) == tokens  # reused, not rebuilt

    cfg2, _ = run("generate_2d")
    contexts = read_manifest(cache_dir(cfg2, cfg2.model.hook_point, "contexts"))
    assert contexts["complete"] and contexts["contexts_done"] == 12

    sae = out / "saes" / "lm-train-cached" / "train"
    documented = command_of(LM / "analyze_cached.yaml")
    assert documented[-1] == "runs/lm-train-cached/saes/lm-train-cached/train"  # what a user runs
    for name in ("analyze_cached", "analyze_live"):
        acfg, aout = run(name, "--sae", str(sae))
        store_docs = analyzed(aout, acfg)
        assert store_docs == cfg.sae.expansion_factor * 576
    assert read_manifest(cache_dir(cfg2, cfg2.model.hook_point, "contexts")) == contexts


def analyzed(out: Path, cfg) -> int:
    from raysae.store import EmbeddedServer, Store

    with EmbeddedServer(out / "store") as server, Store(server.uri, cfg.store.database) as store:
        sae = store.saes.find_one({"_id": "lm-train-cached/train"})
        assert sae["analysis"]["n_tokens"] == 1270 and sae["analysis"]["finished_at"]
        top = store.features.find_one({"sae_id": "lm-train-cached/train", "rank_frequency": 0})
        assert top["top_examples"] and top["logits"]["top"]
        return store.features.count_documents({"sae_id": "lm-train-cached/train"})


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "jumprelu"])
def test_train_on_the_fly(run, architecture):
    caches = Path(load_config(LM / "generate_1d.yaml", run.overrides).activations.cache_dir)
    before = {p.name: read_manifest(p) for p in caches.iterdir()} if caches.exists() else {}
    cfg, out = run(f"train_{architecture}_live")
    assert cfg.activations.source == "live"
    assert (
        {p.name: read_manifest(p) for p in caches.iterdir()} if caches.exists() else {}
    ) == before  # no cache
    (row,) = results(out)
    assert row["architecture"] == architecture
    record = json.loads((out / "saes" / row["sae_id"] / "raysae.json").read_text())
    assert record["tokens"] >= 3072 and math.isfinite(record["metrics"]["l0"])


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples" / "pretrained").glob("*.yaml")), ids=lambda p: p.stem
)
def test_pretrained_configs_load(example):
    cfg = load_config(example)
    assert cfg.model.name in ("gpt2", "EleutherAI/pythia-160m-deduped")
    assert cfg.model.hook_point == "blocks.6.hook_resid_post"
    assert 8 <= cfg.sae.expansion_factor <= 32 and 3e8 <= cfg.train.total_tokens <= 1e9
    assert cfg.train.workers.gpu and cfg.data.path == "monology/pile-uncopyrighted"
    assert f"examples/pretrained/{example.name}" in example.read_text()
