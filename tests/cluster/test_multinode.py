"""Trials and Train workers spread over simulated nodes, and a node lost mid-training is
survived by resuming from checkpoints (tests/cluster/multinode_sweep.py does the work).
The nodes share nothing on disk: the activation cache and the run directory (Tune state,
Train checkpoints, SAEs) are in an S3 bucket (a local moto S3)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from raysae import filesystem
from raysae.checkpoint import read_json
from raysae.run_dir import read_results, write_config
from raysae.store import EmbeddedServer, Store

HERE = Path(__file__).parent


@pytest.mark.slow
def test_sweep_spreads_over_nodes_and_survives_losing_one(train_config, tmp_path, s3_bucket):
    server = EmbeddedServer(tmp_path / "store").start()
    cfg = train_config(
        "multinode",
        "sweep.search_space={train.lr: {grid: [0.003, 0.001]}}",
        "train.workers.resources={sae_gpu: 1}",
        "train.batch_size=64",
        "train.checkpoint_every_tokens=1024",
        "analysis.which=best",
        f"output_dir={s3_bucket}/runs",
        f"activations.cache_dir={s3_bucket}/cache",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"store.uri={server.uri}",
    )
    out = filesystem.join(cfg.output_dir, "multinode")
    try:
        run = subprocess.run(
            [sys.executable, str(HERE / "multinode_sweep.py"), write_config(cfg, tmp_path), out],
            capture_output=True,
            text=True,
            timeout=1500,
        )
        with Store(server.uri, cfg.store.database) as store:
            analyzed = [d["_id"] for d in store.saes.find({"name": "multinode"})]
    finally:
        server.stop()
    line = [t for t in run.stdout.splitlines() if t.startswith("SUMMARY ")]
    assert run.returncode == 0 and line, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads(line[-1][len("SUMMARY ") :])
    assert summary["exit"] == 0
    # the custom resource only exists on worker nodes: training ran there, one trial per node
    assert set(summary["train_nodes"]) <= set(summary["worker_nodes"]) and len(summary["train_nodes"]) >= 2
    assert summary["removed"] is not None  # a node hosting a training worker went away mid-run
    rows = read_results(filesystem.join(out, "results.csv"))
    assert sorted(r["sae_id"] for r in rows) == ["multinode/t000", "multinode/t001"]
    assert all(r["status"] == "finished" for r in rows)
    resumed = [
        read_json(filesystem.join(out, "saes", r["sae_id"], "raysae.json")).get("resumed_from_tokens") or 0
        for r in rows
    ]
    assert max(resumed) > 0  # the lost trial continued from its checkpoint, not from scratch
    assert len(analyzed) == 1 and analyzed[0] in {r["sae_id"] for r in rows}  # analysis read the SAE from S3
    assert not Path(train_config("multinode").output_dir, "multinode").exists()  # nothing on a local disk
