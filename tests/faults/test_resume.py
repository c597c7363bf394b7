"""Exact resume (issue 17, case 4) and a refused value that must not block the fixed rerun (case 11).

A Ray Train worker is killed with SIGKILL after a checkpoint that is not at a cache
shard boundary; Ray Train restarts it, the worker restores the checkpoint and builds
the stream from that checkpoint's own token count. On one CPU worker with fixed seeds
the run is deterministic, so the resumed SAE must be bit-identical to an uninterrupted one.
"""

import contextlib
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

from raysae.activations.cache import shard_sequence
from raysae.activations.streams import split_cache, stream_rows
from raysae.cli import run_main
from raysae.raytrain import run_training
from raysae.raytrain.driver import FINGERPRINT_FILE, fingerprint
from raysae.run_dir import write_config
from raysae.tracking import RUNS_FILE
from raysae.train import main as train_main

# The kill below runs inside the Ray Train worker, which cannot import test modules.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

# Checkpoints every 768 tokens (3 batches of 256): 768, 1536, 2304, ... fall inside 1024-row shards.
SETTINGS = ("train.checkpoint_every_tokens=768", "train.ce_contexts=0", "train.log_every_steps=64")
KILL_AT = 2560
"""Tokens after which the worker is killed: past the checkpoint at 2304, before the next (3072)."""


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail, instead of hanging, when the block takes longer than `seconds`."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_dir(cfg) -> Path:
    return Path(cfg.output_dir) / cfg.name


def weights(cfg) -> dict[str, torch.Tensor]:
    return load_file(run_dir(cfg) / "saes" / cfg.name / "train" / "sae_weights.safetensors")


def record(cfg) -> dict:
    return json.loads((run_dir(cfg) / "saes" / cfg.name / "train" / "raysae.json").read_text())


@pytest.fixture(scope="module")
def after_refusal(train_config, tmp_path_factory):
    """Case 11 at the CLI: `sae.k=100000` refused, then the fixed command run to the end.

    Between the two, the trial holds a fingerprint of other settings (`sae.k=8`) and an
    MLflow run id, as a run stopped before its first checkpoint leaves them. The finished
    run is also the uninterrupted reference of the resume test.
    """
    cfg = train_config("exact", *SETTINGS)
    config_file = write_config(cfg, tmp_path_factory.mktemp("exact"))
    state_dir = run_dir(cfg) / "checkpoints" / "train" / "raysae"
    started = time.perf_counter()
    with deadline(120), pytest.raises(SystemExit) as refused:
        run_main(train_main, [str(config_file), "--set", "sae.k=100000"])
    refusal_seconds = time.perf_counter() - started
    fingerprint_after_refusal = (state_dir / FINGERPRINT_FILE).exists()
    stale = train_config("exact", *SETTINGS, "sae.k=8")
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / FINGERPRINT_FILE).write_text(json.dumps(fingerprint([stale])))
    (state_dir / RUNS_FILE).write_text(json.dumps({"exact/train": "0" * 32}))
    with deadline(300), pytest.raises(SystemExit) as fixed:
        run_main(train_main, [str(config_file)])
    return cfg, refused.value.code, refusal_seconds, fingerprint_after_refusal, fixed.value.code


def test_a_refused_value_leaves_nothing_that_blocks_the_fixed_rerun(after_refusal, capsys):
    from mlflow import MlflowClient

    cfg, refused, refusal_seconds, fingerprint_after_refusal, fixed = after_refusal
    assert refused == 2 and not fingerprint_after_refusal
    assert fixed == 0  # not "holds checkpoints of a run with other settings": none existed
    rec = record(cfg)
    assert rec["tokens"] == 8192 and rec["resumed_from_tokens"] == 0
    # A new MLflow run, logging this run's settings (not the stale run id's).
    assert rec["mlflow_run_id"] != "0" * 32
    client = MlflowClient(f"sqlite:///{Path(cfg.output_dir).resolve() / 'mlflow.db'}")
    assert client.get_run(rec["mlflow_run_id"]).data.params["sae.k"] == "4"
    print(f"\nrefusal of sae.k=100000: {refusal_seconds:.2f} s")


def kill_once(marker: str):
    """SIGKILL the worker once, after the checkpoint at 2304 tokens has had time to register."""

    def hook(rank, tokens):
        if tokens >= KILL_AT and not os.path.exists(marker):
            Path(marker).touch()
            time.sleep(3)  # Ray Train registers a reported checkpoint asynchronously
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def test_a_worker_killed_mid_shard_resumes_to_the_same_weights(after_refusal, train_config, tmp_path):
    reference = after_refusal[0]
    cfg = train_config("killed-mid-shard", *SETTINGS, "train.max_failures=1")
    with deadline(300):
        row = run_training(
            [cfg],
            [f"{cfg.name}/train"],
            storage=run_dir(cfg) / "checkpoints",
            trial="train",
            on_step=kill_once(str(tmp_path / "killed")),
        )[0]
    assert (tmp_path / "killed").exists(), "the worker was never killed"
    resumed_from = record(cfg)["resumed_from_tokens"]
    sequence = shard_sequence(split_cache(cfg).train, cfg.activations.seed, stream_rows(cfg))
    boundaries, at = set(), 0
    for shard in sequence:
        at += shard["rows"]
        boundaries.add(at)
    assert 0 < resumed_from < KILL_AT and resumed_from not in boundaries, resumed_from
    assert row["tokens"] == 8192
    expected, got = weights(reference), weights(cfg)
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), f"{name} differs after the resume from {resumed_from}"
    assert row["fvu"] == record(reference)["metrics"]["fvu"]
    print(
        f"\nresumed from {resumed_from}: fvu {row['fvu']:.6f}, uninterrupted {record(reference)['metrics']['fvu']:.6f}"
    )
