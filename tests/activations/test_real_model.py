"""SmolLM2-135M on Shakespeare, offline, through `python -m raysae.generate` (slow: ~1-2 min)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray.data  # noqa: F401  registers Ray's tensor extension type for pyarrow

from raysae.activations import verify_cache

ROOT = Path(__file__).parents[2]


def tensor(column) -> np.ndarray:
    return np.concatenate([chunk.to_numpy() for chunk in column.chunks])


@pytest.fixture(scope="module")
def assets(offline_assets):
    return offline_assets


@pytest.mark.slow
def test_smollm2_activations_are_sane(assets, tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "raysae.generate",
            "raysae/configs/quickstart.yaml",
            "--set",
            f"activations.cache_dir={tmp_path}",
            "--set",
            "activations.n_tokens=3000",
            "--set",
            "activations.shard_rows=1024",
            "--set",
            "activations.layouts=[tokens, contexts]",
            "--set",
            "activations.n_contexts=8",
            "--set",
            "activations.actors.num=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    dirs = {line.split()[0]: Path(line.split()[-1]) for line in run.stdout.splitlines() if "blocks.5" in line}
    manifest = verify_cache(dirs["tokens"])
    assert manifest["d_model"] == 576 and manifest["n_tokens"] == 3000
    rows = np.concatenate(
        [tensor(pq.read_table(dirs["tokens"] / s["file"])["acts"]) for s in manifest["shards"]]
    )
    assert rows.shape == (3000, 576) and np.isfinite(rows).all()
    norms = np.linalg.norm(rows, axis=1)
    assert 1.0 < np.median(norms) < 1e4  # residual-stream scale, not zeros or blow-ups
    assert rows.std(axis=0).mean() > 0.01  # varies across tokens
    contexts = pq.read_table(dirs["contexts"] / verify_cache(dirs["contexts"])["shards"][0]["file"])
    acts = tensor(contexts["acts"])
    assert acts.shape[1:] == (128, 576) and np.isfinite(acts).all()
    # the BOS position (left out of training rows) is the known outlier of this model
    assert np.linalg.norm(acts[:, 0], axis=-1).mean() != pytest.approx(np.median(norms), rel=0.05)


def test_generate_cli_bad_config_is_a_clean_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("activations:\n  layouts: [tokens, pictures]\n")
    run = subprocess.run(
        [sys.executable, "-m", "raysae.generate", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 2 and "activations.layouts[1]" in run.stderr and "Traceback" not in run.stderr
