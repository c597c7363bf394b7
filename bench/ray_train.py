"""Tokens/s of the Ray Train loop against the bare loop, and of a population against separate runs.

All runs read the same activation cache with the same SAE and batch settings,
in this one command, so the ratios are meaningful on any machine:

1. baseline: `raysae.fit` over `read_cache` + `iter_activation_batches` in this process;
2. `run_training` with one Ray Train worker (same threads), steady-state tokens/s
   measured inside the worker, and end to end (Ray Train start, data start,
   final evaluation included);
3. a population of K SAEs in one run against K separate runs: aggregate tokens/s.

    python bench/ray_train.py                    # d_in 512, 8x, k 32, batch 4096, fp32
    python bench/ray_train.py --tokens 1000000 --device-gpu   # on a GPU node

The cache comes from a random 1-layer model (d_model = --d-in) over the
Shakespeare assets (`raysae assets` first).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import ray.cloudpickle
import torch
from shapes import shape_parser  # bench/ is the script's folder, so on sys.path

from raysae import build_sae, fit
from raysae.activations import generate_caches, iter_activation_batches, read_manifest
from raysae.activations.cache import shard_sequence
from raysae.activations.streams import split_cache
from raysae.config import load_config, member_configs
from raysae.ray_runtime import ensure_ray
from raysae.raytrain import run_training

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURES = ["topk", "batchtopk", "jumprelu", "standard"]
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the timing hook runs in the worker


class StepClock:
    """Rank 0's (time, tokens) after every step, appended to a file the driver reads."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, rank: int, tokens: int) -> None:
        if rank == 0:
            with open(self.path, "a") as f:
                f.write(f"{time.perf_counter()} {tokens}\n")

    def steady_tokens_per_s(self, skip: int = 2) -> float:
        rows = [tuple(map(float, line.split())) for line in Path(self.path).read_text().splitlines()]
        (t0, n0), (t1, n1) = rows[skip], rows[-1]
        return (n1 - n0) / (t1 - t0)


def config(args, out: Path, name: str, *extra: str):
    return load_config(
        None,
        [
            f"name={name}",
            f"output_dir={out / 'runs'}",
            "model.name=random",
            f"model.tokenizer={ROOT / 'assets/gpt2-tokenizer'}",
            f"model.random.d_model={args.d_in}",
            "model.random.n_layers=1",
            "model.random.n_heads=8",
            "model.hook_point=blocks.0.hook_resid_post",
            f"data.path={ROOT / 'assets/shakespeare'}",
            "data.context_size=128",
            f"activations.cache_dir={args.cache_dir}",
            f"activations.n_tokens={args.tokens + 65536}",
            "activations.shard_rows=16384",
            "activations.model_batch_size=32",
            f"sae.expansion_factor={args.expansion}",
            f"sae.k={args.k}",
            f"train.total_tokens={args.tokens}",
            f"train.batch_size={args.batch}",
            "train.eval_tokens=16384",
            "train.ce_contexts=0",
            f"train.workers.cpus={args.threads}",
            "train.log_every_steps=1000",
            f"train.workers.gpu={args.gpu}",
            f"train.device={'cuda' if args.gpu else 'cpu'}",
            *extra,
        ],
    )


def bare(cfg) -> float:
    """tokens/s of `fit` on the same training shards, in the same order, as the Ray run."""
    split = split_cache(cfg)
    sequence = shard_sequence(split.train, cfg.activations.seed, cfg.train.total_tokens)
    ds = split.dataset(sequence)
    batches = list(iter_activation_batches(ds, cfg.train.batch_size, drop_last=True))  # read first
    sae = build_sae(cfg.sae, read_manifest(split.directory)["d_model"])
    start = time.perf_counter()
    fit(sae, batches, cfg.train)
    return cfg.train.total_tokens / (time.perf_counter() - start)


def ray_run(cfg, out: Path, label: str) -> tuple[float, float]:
    """(steady tokens/s inside the worker, end-to-end tokens/s) of one `run_training` call."""
    clock = StepClock(str(out / f"{label}.clock"))
    members = member_configs(cfg)
    ids = [f"{cfg.name}/train/{i}" for i in range(len(members))]
    start = time.perf_counter()
    run_training(members, ids, storage=out / "runs" / cfg.name / "checkpoints", trial="train", on_step=clock)
    wall = time.perf_counter() - start
    return clock.steady_tokens_per_s(), cfg.train.total_tokens / wall


def main() -> None:
    p = shape_parser(__doc__)
    p.add_argument("--tokens", type=int, default=98_304, help="training tokens per run")
    p.add_argument("--threads", type=int, default=2, help="torch threads (CPU per Ray worker)")
    p.add_argument("--population", type=int, default=4, help="K; 0 skips the population comparison")
    p.add_argument("--gpu", action="store_true", help="train on cuda (one GPU per worker)")
    p.add_argument("--cache-dir", default=str(ROOT / "cache"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ensure_ray(num_cpus=max(4, args.threads + 2))
    out = Path(tempfile.mkdtemp(prefix="raysae-bench-"))
    base = config(args, out, "single")
    generate_caches(base)
    print(
        f"# {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}, "
        f"{'cuda' if args.gpu else f'cpu x{args.threads} threads'}; d_in {args.d_in}, {args.expansion}x, "
        f"k {args.k}, batch {args.batch}, {args.tokens} tokens per run"
    )
    baseline = bare(base)
    steady, e2e = ray_run(base, out, "single")
    print(f"{'bare fit (baseline)':<44}{baseline:>12,.0f} tok/s  1.00")
    print(f"{'Ray Train, 1 worker, steady':<44}{steady:>12,.0f} tok/s  {steady / baseline:.2f}")
    print(f"{'Ray Train, 1 worker, end to end':<44}{e2e:>12,.0f} tok/s  {e2e / baseline:.2f}")
    if args.population:
        archs = (ARCHITECTURES * args.population)[: args.population]
        members = ", ".join(f"{{sae.architecture: {a}}}" for a in archs)
        pop_steady, pop_e2e = ray_run(
            config(args, out, "population", f"train.population=[{members}]"), out, "pop"
        )
        separate = []
        for i, arch in enumerate(archs):
            separate.append(
                ray_run(config(args, out, f"alone{i}", f"sae.architecture={arch}"), out, f"alone{i}")
            )
        k = args.population
        # Run one after another, the K separate runs train K * tokens in the sum of their times.
        sep_steady = k / sum(1 / s for s, _ in separate)
        sep_e2e = k / sum(1 / e for _, e in separate)
        rows = [
            (f"{k} separate runs, steady (baseline)", sep_steady, 1.0),
            (f"population K={k}, steady", k * pop_steady, k * pop_steady / sep_steady),
            (f"{k} separate runs, end to end (baseline)", sep_e2e, 1.0),
            (f"population K={k}, end to end", k * pop_e2e, k * pop_e2e / sep_e2e),
        ]
        for label, rate, ratio in rows:
            print(f"{label:<44}{rate:>12,.0f} SAE-tok/s  {ratio:.2f}")


if __name__ == "__main__":
    main()
