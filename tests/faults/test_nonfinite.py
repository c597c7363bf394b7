"""Non-finite activations: never a finished, saved, ranked or analysed SAE, always a named cause.

The fault: NaN planted in a held-out shard of a real cache (its checksum updated, as a
cache written by a model that overflowed would have it). `raysae.train` and
`raysae.sweep`, run as commands, refuse it naming the shard; once the cache is fixed the
same command trains. Generation refuses to write non-finite rows; evaluation that meets
them anyway (a live source, a cache damaged mid-run) fails the SAE with a hint, and
ranking never picks a NaN.
"""

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raysae import build_sae
from raysae.activations.cache import cache_dir, file_sha256, new_manifest, read_manifest, write_manifest
from raysae.activations.cache_writer import CacheBuilder
from raysae.activations.generation import tensor_column
from raysae.errors import CacheError
from raysae.ranking import best_row, pareto_rows, select_saes
from raysae.run_dir import RunDir, write_config
from raysae.training.finish import finish_sae


def plant_nan(directory: Path, shard: dict, rows: list[int]) -> None:
    """Overwrite `rows` of a `tokens` shard with NaN and record its new checksum in the manifest."""
    path = directory / shard["file"]
    acts = np.stack(pq.read_table(path).column("acts").to_pylist()).astype(np.float32)
    acts[rows, 1] = np.nan
    import pyarrow as pa

    pq.write_table(pa.table({"acts": tensor_column(acts)}), path, compression="none")
    manifest = read_manifest(directory)
    assert manifest is not None
    entry = next(s for s in manifest["shards"] if s["file"] == shard["file"])
    entry["sha256"] = file_sha256(path)
    write_manifest(directory, manifest)


@pytest.fixture
def damaged_cache(train_config, tmp_path):
    """(config using a private copy of the tiny cache, its folder, a pristine copy to restore)."""
    shared = train_config("nan")
    cfg = train_config(
        "nan",
        f"activations.cache_dir={tmp_path / 'cache'}",
        "train.ce_contexts=0",
        "train.total_tokens=2048",
        "train.init_tokens=512",
        "train.checkpoint_every_tokens=1024",
    )
    source = Path(cache_dir(shared, shared.model.hook_point, "tokens"))
    directory = Path(cache_dir(cfg, cfg.model.hook_point, "tokens"))
    shutil.copytree(source, directory)
    pristine = tmp_path / "pristine"
    shutil.copytree(source, pristine)
    manifest = read_manifest(directory)
    assert manifest is not None
    plant_nan(directory, manifest["shards"][-1], [3, 700])  # the last shard is held out
    return cfg, directory, pristine


def run_command(module: str, cfg, tmp_path, ray_local, timeout: int = 300):
    config_file = write_config(cfg, tmp_path / "config")
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    return subprocess.run(
        [sys.executable, "-m", module, str(config_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


@pytest.mark.slow
def test_nan_held_out_rows_are_refused_naming_the_shard_and_a_fixed_cache_trains(
    damaged_cache, tmp_path, ray_local
):
    cfg, directory, pristine = damaged_cache
    run = RunDir.of(cfg)
    done = run_command("raysae.train", cfg, tmp_path, ray_local)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = read_manifest(directory)["shards"][-1]
    shard, named = directory / last["file"], f"2 of {last['rows']} rows hold non-finite activations"
    assert err[-1].startswith(f"error: cache shard {shard}: {named}")
    assert "the first is row 3" in err[-1] and f"Delete {directory}" in err[-1]
    assert not Path(run.path(RunDir.SAES)).exists() and not Path(run.results).exists()

    # The sweep refuses the same cache with the same cause: no finished row, nothing analysed.
    sweep = cfg.model_copy(update={"name": "nansweep"})
    done = run_command("raysae.sweep", sweep, tmp_path, ray_local)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"cache shard {shard}: {named}" in done.stdout + done.stderr
    results = Path(RunDir.of(sweep).results)
    if results.exists():
        with results.open() as f:
            assert all(r["status"] != "finished" for r in csv.DictReader(f))
    assert "features of" not in done.stdout or "features of 0" in done.stdout

    # Fixed as the message says (the cache rebuilt; here: its pristine copy back), the same
    # command trains: the refusal left nothing behind that blocks the rerun.
    shutil.rmtree(directory)
    shutil.copytree(pristine, directory)
    done = run_command("raysae.train", cfg, tmp_path, ray_local)
    assert done.returncode == 0, done.stderr[-3000:]
    with Path(run.results).open() as f:
        (row,) = csv.DictReader(f)
    assert not row.get("error") and math.isfinite(float(row["fvu"]))
    assert (Path(run.sae("nan/train")) / "raysae.json").exists()


def test_generation_refuses_non_finite_rows_and_leaves_the_cache_incomplete(train_config, tmp_path):
    cfg = train_config("nangen", f"activations.cache_dir={tmp_path}", "activations.dtype=float16")
    manifest = new_manifest(cfg, cfg.model.hook_point, "tokens")
    directory = tmp_path / manifest["key"]
    builder = CacheBuilder(
        directory,
        manifest,
        columns=["acts"],
        n_contexts=8,
        n_rows=120,
        shard_rows=15,
        buffer_shards=1,
        seed=0,
    )
    acts = np.random.default_rng(0).normal(size=(4, 16, 32)).astype(np.float16)
    builder.add({"context_id": np.arange(4), "acts": acts})
    acts[1, 5, 0] = np.inf  # a float16 overflow, as an activation above 65504 gives
    expected = r"random at blocks.1.hook_resid_post gives non-finite .*\(context ids 5\)"
    with pytest.raises(CacheError, match=expected):
        builder.add({"context_id": np.arange(4, 8), "acts": acts})
    written = read_manifest(directory)
    assert written is not None and not written["complete"] and written["contexts_done"] == 4
    for shard in written["shards"]:
        values = np.stack(pq.read_table(directory / shard["file"]).column("acts").to_pylist())
        assert np.isfinite(values).all()


def test_a_nan_evaluation_fails_the_sae_with_a_hint_and_saves_nothing(train_config, tmp_path):
    cfg = train_config("naneval", f"output_dir={tmp_path}")
    sae = build_sae(cfg.sae, 32)
    rows = torch.randn(2048, 32)
    rows[[10, 11, 1500]] = float("nan")
    row = finish_sae(sae, [rows[:1024], rows[1024:]], cfg, "naneval/train", seconds=1.0)
    assert "fvu" not in row and "mse" not in row
    assert row["error"].startswith("non-finite mse=nan, fvu=nan, explained_variance=nan")
    assert "3 of 2048 held-out activation rows hold NaN or Inf" in row["error"]
    assert "delete its blocks.1.hook_resid_post tokens cache" in row["error"]
    assert not Path(RunDir.of(cfg).sae("naneval/train")).exists()

    with torch.no_grad():  # finite data, an SAE gone bad: retraining is the way out
        sae.W_dec.fill_(float("inf"))
    row = finish_sae(sae, [torch.randn(2048, 32)], cfg, "naneval/train", seconds=1.0)
    assert "the SAE itself gives non-finite values" in row["error"] and "checkpoints/" in row["error"]
    good = finish_sae(build_sae(cfg.sae, 32), [torch.randn(2048, 32)], cfg, "naneval/train", seconds=1.0)
    assert "error" not in good and (Path(RunDir.of(cfg).sae("naneval/train")) / "raysae.json").exists()


def test_ranking_never_picks_a_non_finite_metric():
    rows = [
        {"sae_id": "a", "fvu": float("nan"), "l0": 4.0},
        {"sae_id": "b", "fvu": 0.3, "l0": 8.0},
        {"sae_id": "c", "fvu": 0.5, "l0": float("inf")},
        {"sae_id": "d", "fvu": 0.4, "l0": 2.0},
    ]
    assert best_row(rows, "fvu", "min")["sae_id"] == "b"
    assert best_row(rows[:1], "fvu", "max") is None
    done, front = pareto_rows(rows, "fvu")
    assert sorted(done[i]["sae_id"] for i in front) == ["b", "d"]
    assert select_saes(rows, "best", "fvu", "min") == ["b"]
    assert sorted(select_saes(rows, "frontier", "fvu", "min")) == ["b", "d"]


def test_a_nan_training_batch_stops_the_sae_naming_the_rows_and_how_to_retrain(planted):
    from raysae.training import Member, Population, train_population
    from tests.conftest import small_sae_config, small_train_config

    population = Population(
        [Member(build_sae(small_sae_config("topk"), 64), small_train_config(total_tokens=8_000))]
    )
    batches = list(planted.batches(1000, 8_000, seed=5))
    batches[4][[7, 9]] = float("nan")
    train_population(population, iter(batches), init_tokens=1000)
    (member,) = population.members
    assert member.trainer.tokens_seen == 4_000 and population.done
    assert member.error.startswith("non-finite loss: ")
    assert "2 of this worker's 1000 batch rows hold NaN or Inf activations" in member.error
    assert "delete its trial's folder under checkpoints/" in member.error
