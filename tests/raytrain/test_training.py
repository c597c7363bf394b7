"""Ray Train runs on a tiny cache: data parallelism, populations, checkpoints, resume, MLflow."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import ray.cloudpickle
import torch
from safetensors.torch import load_file

from raysae.config import ConfigError, member_configs
from raysae.raytrain import run_training
from raysae.run_dir import write_config
from raysae.train import main as train_main

# The fault drills below run inside the Ray Train workers, which cannot import test modules.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def train(cfg, *, on_step=None):
    return run_training(
        [cfg],
        [f"{cfg.name}/train"],
        storage=Path(cfg.output_dir) / cfg.name / "checkpoints",
        trial="train",
        on_step=on_step,
    )[0]


def sae_dir(cfg, sae_id):
    return Path(cfg.output_dir) / cfg.name / "saes" / sae_id


def record(cfg, sae_id):
    return json.loads((sae_dir(cfg, sae_id) / "raysae.json").read_text())


@pytest.fixture(scope="module")
def one_worker(train_config):
    cfg = train_config("one")
    return cfg, train(cfg)


@pytest.fixture(scope="module")
def two_workers(train_config):
    cfg = train_config("two", "train.workers.num=2")
    return cfg, train(cfg)


def test_one_worker_run_writes_the_sae_and_tracks_it_in_mlflow(one_worker):
    from mlflow import MlflowClient

    cfg, row = one_worker
    assert row["tokens"] == 8192 and row["l0"] == pytest.approx(4.0)
    assert 0 < row["fvu"] < 0.6 and 0.5 < row["ce_loss_recovered"] <= 1.05
    rec = record(cfg, "one/train")
    assert rec["metrics"]["fvu"] == row["fvu"] and rec["resumed_from_tokens"] == 0
    client = MlflowClient(f"sqlite:///{Path(cfg.output_dir).resolve() / 'mlflow.db'}")
    run = client.get_run(rec["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "one/train"
    assert run.data.params["sae.k"] == "4" and run.data.metrics["fvu"] == pytest.approx(row["fvu"])
    # Curves by optimizer step (256-row batches, logged every 8 steps), tokens a metric of its own.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [8, 16, 24, 32]
    tokens = client.get_metric_history(run.info.run_id, "tokens")
    assert [(m.step, m.value) for m in tokens] == [(8, 2048), (16, 4096), (24, 6144), (32, 8192)]
    for key in ("fvu", "mse", "l0", "ce_loss_recovered"):  # final metrics: one point, at the last step
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [32], key
    assert run.data.tags["raysae.sae_id"] == "one/train" and run.data.tags["raysae.architecture"] == "topk"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "sae")}
    assert {"sae/cfg.json", "sae/sae_weights.safetensors", "sae/raysae.json"} <= artifacts
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_two_workers_reach_the_loss_of_one(one_worker, two_workers):
    (_, one), (cfg, two) = one_worker, two_workers
    assert two["tokens"] == 8192 and record(cfg, "two/train")["resumed_from_tokens"] == 0
    assert two["fvu"] == pytest.approx(one["fvu"], rel=0.05)


def test_population_trains_the_saes_of_separate_runs(train_config, one_worker, tmp_path, capsys):
    members = (
        "[{}, {sae.architecture: jumprelu, sae.l0_coefficient: 0.1},"
        " {sae.architecture: standard, train.lr: 0.001}, {train.lr: 1.0e+30}]"
    )
    cfg = train_config("pop", f"train.population={members}")
    config_file = write_config(cfg, tmp_path)
    assert train_main([str(config_file)]) == 1  # the diverging fourth SAE fails the command...
    out = capsys.readouterr().out
    assert "error: pop/train/3 stopped early and was not saved: non-finite loss" in out
    assert not sae_dir(cfg, "pop/train/3").exists()
    rows = (Path(cfg.output_dir) / "pop" / "results.csv").read_text().splitlines()
    assert len(rows) == 5 and "sae.architecture" in rows[0]
    # ... and the other three are exactly what three separate runs give.
    separate = [one_worker[0]]
    for i, member in enumerate(member_configs(cfg)[1:3], start=1):
        alone = member.model_copy(
            update={"name": f"alone{i}", "train": member.train.model_copy(update={"population": []})}
        )
        train(alone)
        separate.append(alone)
    for i, alone in enumerate(separate):
        ours = load_file(sae_dir(cfg, f"pop/train/{i}") / "sae_weights.safetensors")
        theirs = load_file(sae_dir(alone, f"{alone.name}/train") / "sae_weights.safetensors")
        for name, tensor in theirs.items():
            torch.testing.assert_close(ours[name], tensor, rtol=0, atol=1e-6, msg=f"SAE {i}: {name}")


def kill_rank_once(rank_to_kill, marker, *, crash=False):
    """After the checkpoint at 2048 tokens registered, kill (or crash) one worker once."""

    def hook(rank, tokens):
        if rank == rank_to_kill and tokens >= 3072 and not os.path.exists(marker):
            Path(marker).touch()
            time.sleep(3)  # a checkpoint reported < 2 s before a crash may not be registered
            if crash:
                raise RuntimeError("simulated crash")
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def test_a_killed_worker_resumes_from_the_checkpoint(train_config, two_workers, tmp_path):
    cfg = train_config("killed", "train.workers.num=2", "train.max_failures=1")
    row = train(cfg, on_step=kill_rank_once(1, str(tmp_path / "killed")))
    assert (tmp_path / "killed").exists()
    assert row["tokens"] == 8192 and record(cfg, "killed/train")["resumed_from_tokens"] == 2048
    assert row["fvu"] == pytest.approx(two_workers[1]["fvu"], rel=0.02)


def test_rerunning_a_failed_run_continues_it(train_config, one_worker, tmp_path):
    cfg = train_config("rerun", "train.max_failures=0")
    with pytest.raises(Exception, match="simulated crash"):
        train(cfg, on_step=kill_rank_once(0, str(tmp_path / "crashed"), crash=True))
    row = train(cfg)
    rec = record(cfg, "rerun/train")
    assert row["tokens"] == 8192 and rec["resumed_from_tokens"] == 2048
    assert row["fvu"] == pytest.approx(one_worker[1]["fvu"], rel=0.02)


def test_resuming_with_other_settings_is_refused(train_config, one_worker):
    with pytest.raises(ConfigError, match=r"holds checkpoints of a run with other settings \(sae 0.sae.k\)"):
        train(train_config("one", "sae.k=8"))


def test_live_source_trains_from_the_model_with_relative_paths(train_config, tmp_path):
    # Relative to the working directory Ray was started in, which the workers keep.
    out = os.path.relpath(tmp_path / "relative-runs")
    cfg = train_config(
        "live",
        "activations.source=live",
        "train.total_tokens=4096",
        "train.checkpoint_every_tokens=4096",
        "train.ce_contexts=0",
        f"output_dir={out}",
    )
    row = train(cfg)
    assert row["tokens"] == 4096 and row["n_tokens"] == 2048 and 0 < row["fvu"] < 1
    assert "ce_loss_recovered" not in row
    assert (tmp_path / "relative-runs" / "live" / "saes" / "live" / "train" / "cfg.json").exists()
    assert (tmp_path / "relative-runs" / "mlflow.db").exists()


def test_bad_input_found_in_the_workers_is_a_config_error_not_retried(train_config):
    cfg = train_config("badk", "activations.source=live", "sae.k=500", "train.max_failures=3")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="sae.k: k=500 is larger than d_sae=128"):
        train(cfg)
    assert time.perf_counter() - started < 60
