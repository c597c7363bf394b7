"""The quickstart runs end to end (on a small budget) and writes a consistent run directory."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import raysae

ROOT = Path(__file__).parents[1]


def test_quickstart_small(tmp_path):
    run = subprocess.run(
        [sys.executable, "examples/quickstart.py", "--set", f"output_dir={tmp_path}",
         "--set", "train.total_tokens=30000", "--set", "train.eval_tokens=8192"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "quickstart"
    assert "k: 8" in (out / "config.yaml").read_text()
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["architecture"] for r in rows] == ["topk", "batchtopk", "jumprelu", "standard"]
    for row in rows:
        sae_dir = out / "saes" / row["sae_id"]
        record = json.loads((sae_dir / "raysae.json").read_text())
        assert float(row["fvu"]) == record["metrics"]["fvu"]
        assert raysae.load_sae(sae_dir).architecture == row["architecture"]
