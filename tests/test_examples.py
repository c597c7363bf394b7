"""The examples run end to end (on small budgets) and write consistent run directories."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import raysae

ROOT = Path(__file__).parents[1]


def run_example(script: str, *overrides: str):
    args = [a for o in overrides for a in ("--set", o)]
    run = subprocess.run(
        [sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def check_run_dir(out: Path, architectures: list[str]) -> list[dict]:
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["architecture"] for r in rows] == architectures
    for row in rows:
        sae_dir = out / "saes" / row["sae_id"]
        record = json.loads((sae_dir / "raysae.json").read_text())
        assert float(row["fvu"]) == record["metrics"]["fvu"]
        assert raysae.load_sae(sae_dir).architecture == row["architecture"]
    return rows


def test_planted_dictionary_example(tmp_path):
    run_example(
        "examples/planted_dictionary.py",
        f"output_dir={tmp_path}",
        "train.total_tokens=30000",
        "train.eval_tokens=8192",
    )
    assert "k: 8" in (tmp_path / "planted" / "config.yaml").read_text()
    check_run_dir(
        tmp_path / "planted", ["topk", "batchtopk", "jumprelu", "standard", "matryoshka_batchtopk", "gated"]
    )
