"""Trials and Train workers spread over simulated nodes, and a node lost mid-training is
survived by resuming from checkpoints (tests/cluster/multinode_sweep.py does the work)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from raysae.results import write_config

HERE = Path(__file__).parent


@pytest.mark.slow
def test_sweep_spreads_over_nodes_and_survives_losing_one(train_config, tmp_path):
    cfg = train_config("multinode", "sweep.search_space={train.lr: {grid: [0.003, 0.001]}}",
                       "train.worker_resources={sae_gpu: 1}", "train.batch_size=64",
                       "train.checkpoint_every_tokens=1024", "analysis.which=best")
    out = Path(cfg.output_dir) / "multinode"
    run = subprocess.run([sys.executable, str(HERE / "multinode_sweep.py"), str(write_config(cfg, tmp_path)),
                          str(out)], capture_output=True, text=True, timeout=1500)
    line = [t for t in run.stdout.splitlines() if t.startswith("SUMMARY ")]
    assert run.returncode == 0 and line, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads(line[-1][len("SUMMARY "):])
    assert summary["exit"] == 0
    # the custom resource only exists on worker nodes: training ran there, one trial per node
    assert set(summary["train_nodes"]) <= set(summary["worker_nodes"]) and len(summary["train_nodes"]) >= 2
    assert summary["removed"] is not None  # a node hosting a training worker went away mid-run
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(r["sae_id"] for r in rows) == ["multinode/t000", "multinode/t001"]
    assert all(r["status"] == "finished" for r in rows)
    resumed = [json.loads((out / "saes" / r["sae_id"] / "raysae.json").read_text()).get("resumed_from_tokens") or 0
               for r in rows]
    assert max(resumed) > 0  # the lost trial continued from its checkpoint, not from scratch
