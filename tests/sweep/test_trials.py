"""Sweep trials are fixed up front: grid product x samples, seeded draws, population grouping."""

import math
from pathlib import Path

import pytest

from raysae.config import ConfigError, load_config
from raysae.sweep.trials import point_config, sample_points, trial_groups

ROOT = Path(__file__).resolve().parents[2]


def sweep(*space, **extra):
    return load_config(
        None, [f"sweep.search_space={{{', '.join(space)}}}", *(f"sweep.{k}={v}" for k, v in extra.items())]
    )


def test_grids_multiply_and_samples_repeat_with_fresh_draws():
    cfg = sweep(
        "sae.k: {grid: [16, 32, 64]}",
        "sae.architecture: {grid: [topk, batchtopk]}",
        "train.lr: {loguniform: [0.0001, 0.01]}",
        "sae.aux_coefficient: {uniform: [0.0, 0.5]}",
        "sae.b_dec_init: {choice: [mean, zeros]}",
        num_samples=2,
    )
    points = sample_points(cfg)
    assert len(points) == 12
    assert {(p["sae.k"], p["sae.architecture"]) for p in points[:6]} == {
        (k, a) for k in (16, 32, 64) for a in ("topk", "batchtopk")
    }
    assert all(math.log(1e-4) <= math.log(p["train.lr"]) <= math.log(1e-2) for p in points)
    assert all(
        0 <= p["sae.aux_coefficient"] <= 0.5 and p["sae.b_dec_init"] in ("mean", "zeros") for p in points
    )
    assert len({p["train.lr"] for p in points}) == 12  # every trial draws afresh
    assert sample_points(cfg) == points  # and a rerun draws the same
    assert sample_points(sweep("train.lr: {loguniform: [0.0001, 0.01]}", seed=1)) != sample_points(
        sweep("train.lr: {loguniform: [0.0001, 0.01]}", seed=2)
    )


def test_points_become_configs_and_populations_group_them():
    cfg = sweep("sae.k: {grid: [8, 16, 32, 64, 128]}", saes_per_trial=2)
    groups = trial_groups(cfg)
    assert [[p["sae.k"] for p in g] for g in groups] == [[8, 16], [32, 64], [128]]
    member = point_config(cfg, groups[1][1])
    assert member.sae.k == 64 and member.sweep.search_space == {}
    with pytest.raises(ConfigError, match=r"sae.k: k=8 is larger than d_sae"):
        point_config(load_config(None, ["sae.d_in=16", "sae.d_sae=4", "sae.k=2"]), {"sae.k": 8})


def test_a_population_sweep_may_only_vary_per_sae_settings():
    with pytest.raises(ConfigError, match=r"sweep.search_space\[train.batch_size\]: sweep.saes_per_trial=2"):
        sweep("train.batch_size: {grid: [1024, 2048]}", saes_per_trial=2)


@pytest.mark.parametrize("path", sorted((ROOT / "raysae" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_load_and_expand(path):
    cfg = load_config(path)
    groups = trial_groups(cfg)
    assert groups and all(point_config(cfg, p) for g in groups for p in g)


def test_concurrency_counts_custom_worker_resources():
    from raysae.sweep.tuner import concurrency

    cfg = load_config(None, ["train.workers.resources={sae_gpu: 1}", "train.workers.num=1"])
    trials = [[cfg]] * 4
    assert concurrency(cfg, trials, {"CPU": 100.0, "sae_gpu": 2.0}) == 2  # the custom resource limits
    assert concurrency(cfg, trials, {"CPU": 2.5, "sae_gpu": 2.0}) == 1  # here the CPUs do
    with pytest.raises(ConfigError, match="resource 'sae_gpu'"):
        concurrency(cfg, trials, {"CPU": 100.0})
