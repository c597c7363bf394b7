"""A tiny sweep end to end on the local Ray: 4 trials, two architectures, ASHA."""

import csv
import json
from pathlib import Path

import pytest

from raysae.activations.cache import cache_dir, read_manifest
from raysae.run_dir import write_config
from raysae.sweep.__main__ import main as sweep_main
from tests.conftest import command_on_test_ray

SPACE = "{sae.architecture: {grid: [topk, jumprelu]}, train.lr: {grid: [0.003, 0.001]}}"


@pytest.fixture(scope="module")
def sweep(train_config, tmp_path_factory):
    cfg = train_config(
        "sweep",
        f"sweep.search_space={SPACE}",
        "sweep.scheduler.type=asha",
        "sweep.scheduler.grace_period_tokens=4096",
        "sweep.scheduler.reduction_factor=2",
        "sae.l0_coefficient=0.1",
        "analysis.which=frontier",
    )
    cache = cache_dir(cfg, cfg.model.hook_point, "tokens")
    before = read_manifest(cache)
    config_file = write_config(cfg, tmp_path_factory.mktemp("sweep-config"))
    code = sweep_main([str(config_file)])
    out = Path(cfg.output_dir) / "sweep"
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    return cfg, code, out, rows, before, read_manifest(cache)


def test_sweep_trains_every_trial_on_one_shared_cache(sweep):
    cfg, code, out, rows, before, after = sweep
    assert code == 0
    assert after == before and after["generation_passes"] == 1  # built once, by the fixture, reused
    assert sorted(r["sae_id"] for r in rows) == [f"sweep/t00{i}" for i in range(4)]
    assert {(r["sae.architecture"], r["train.lr"]) for r in rows} == {
        (a, lr) for a in ("topk", "jumprelu") for lr in ("0.003", "0.001")
    }
    finished = [r for r in rows if r["status"] == "finished"]
    assert len(finished) >= 2 and all(r["status"].startswith(("finished", "stopped")) for r in rows)
    for row in finished:
        saved = out / "saes" / row["sae_id"]
        record = json.loads((saved / "raysae.json").read_text())
        assert (saved / "cfg.json").exists() and record["architecture"] == row["architecture"]
        assert float(row["fvu"]) == pytest.approx(record["metrics"]["fvu"])
        assert record["config"]["train"]["lr"] == float(row["train.lr"])
    assert (out / "pareto.png").stat().st_size > 10_000


def test_sweep_has_an_mlflow_parent_run_with_a_child_per_sae(sweep):
    from mlflow import MlflowClient

    cfg, _, out, rows, _, _ = sweep
    client = MlflowClient(f"sqlite:///{Path(cfg.output_dir).resolve() / 'mlflow.db'}")
    parent_id = json.loads((out / "sweep.json").read_text())["mlflow_parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and "best_fvu" in parent.data.metrics
    assert {a.path for a in client.list_artifacts(parent_id)} >= {"results.csv", "pareto.png"}
    experiment = client.get_experiment_by_name("sweep")
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(c.info.run_name for c in children) == sorted(r["sae_id"] for r in rows)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "config.yaml" in {a.path for a in client.list_artifacts(parent_id)}
    swept = {r["sae_id"]: (r["sae.architecture"], r["train.lr"]) for r in rows}
    for child in children:  # each SAE's run is tagged with its swept values
        tags = child.data.tags
        assert (tags["sae.architecture"], tags["train.lr"]) == swept[child.info.run_name]
        assert tags["raysae.architecture"] == tags["sae.architecture"]


def test_sweep_analyses_the_frontier_into_the_store(sweep):
    from raysae.ranking import select_saes
    from raysae.run_dir import read_results
    from raysae.store import EmbeddedServer, Store

    cfg, _, out, _, _, _ = sweep
    frontier = set(
        select_saes(read_results(out / "results.csv"), cfg.analysis.which, cfg.sweep.metric, cfg.sweep.mode)
    )
    assert frontier
    with EmbeddedServer(out / "store") as srv, Store(srv.uri, cfg.store.database) as store:
        assert {d["_id"] for d in store.saes.find()} == frontier
        for sae_id in frontier:
            assert store.features.count_documents({"sae_id": sae_id}) == 128
            top = store.features.find_one({"sae_id": sae_id, "act_frequency": {"$gt": 0}})
            assert top["top_examples"][0]["tokens"] and top["logits"]["top"]


def test_bad_sweep_files_fail_before_any_work(train_config, tmp_path, capsys):
    from raysae.cli import run_main

    cfg = train_config("badsweep", "train.workers.num=8", "train.workers.cpus=1")
    config_file = write_config(cfg, tmp_path)
    with pytest.raises(SystemExit) as info:
        run_main(sweep_main, [str(config_file)])
    assert info.value.code == 2
    assert "train.workers.num: a trial needs 9.1 CPUs" in capsys.readouterr().err
    assert not (Path(cfg.output_dir) / "badsweep").exists()


def test_an_interrupted_sweep_finishes_only_the_missing_trials(train_config, tmp_path, ray_local):
    import os
    import signal
    import subprocess
    import time

    cfg = train_config(
        "resumed",
        "sweep.search_space={sae.k: {grid: [2, 4, 8]}}",
        "sweep.max_concurrent_trials=1",
        "train.ce_contexts=0",
    )
    config_file = write_config(cfg, tmp_path)
    out = Path(cfg.output_dir) / "resumed"
    first = out / "saes" / "resumed" / "t000" / "raysae.json"
    second_started = out / "checkpoints" / "t001" / "raysae" / "position.json"  # its first checkpoint
    driver = command_on_test_ray(
        "raysae.sweep", config_file, ray_local, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 300
        while not second_started.exists() and time.time() < deadline and driver.poll() is None:
            time.sleep(0.2)
        assert second_started.exists(), "the second trial never reached its first checkpoint"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    written = first.stat().st_mtime_ns
    assert not (out / "results.csv").exists()
    assert sweep_main([str(config_file)]) == 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["finished"] * 3
    assert first.stat().st_mtime_ns == written  # the finished trial was not trained again
    second = json.loads((out / "saes" / "resumed" / "t001" / "raysae.json").read_text())
    assert second["resumed_from_tokens"] > 0 and second["tokens"] == 8192  # continued, not restarted
