"""Activation generation and cache reads through Ray Data, against bare baselines.

    python bench/activations.py [--contexts 96] [--hook blocks.5.hook_resid_post]

Needs the offline assets (`raysae assets`). In one process:

1. generation tokens/s: a bare in-process forward of SmolLM2-135M over the
   same batches (all CPU threads) against the Ray Data actor pool, both with
   one actor using all threads and with one single-thread actor per core; the
   pool is timed end to end (actor start and model load included) and in
   steady state (from its first output batch);
2. cache reads rows/s: `read_cache` (and, for reference, Ray Data's own
   `read_parquet`) through Ray Data against reading the same Parquet files with pyarrow;
3. peak resident memory of the driver while it writes a cache, next to the
   size of the shards it buffers.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import tempfile
import threading
import time

import numpy as np
import psutil
import pyarrow.parquet as pq
import ray
import torch

from raysae.activations import (
    generate_caches,
    hook_activations,
    iter_activation_batches,
    load_model,
    read_cache,
    verify_cache,
)
from raysae.activations.cache import shard_paths
from raysae.activations.generation import generation_dataset
from raysae.activations.language_model import tokenizer_for
from raysae.activations.tokens import pack_contexts
from raysae.config import load_config
from raysae.ray_runtime import ensure_ray


def bare_forward(cfg, tokens: np.ndarray) -> float:
    torch.set_num_threads(os.cpu_count() or 1)
    model = load_model(cfg.model)
    step = cfg.activations.model_batch_size
    hook_activations(model, torch.as_tensor(tokens[:step], dtype=torch.long), [cfg.model.hook_point])
    start = time.perf_counter()
    for i in range(0, len(tokens), step):
        batch = torch.as_tensor(tokens[i : i + step], dtype=torch.long)
        hook_activations(model, batch, [cfg.model.hook_point])["blocks.5.hook_resid_post"].numpy()
    return tokens.size / (time.perf_counter() - start)


def ray_generation(cfg, tokens: np.ndarray) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    n_first = 0
    for batch in generation_dataset(cfg, tokens, 0, [cfg.model.hook_point]).iter_batches(
        batch_size=None, batch_format="numpy"
    ):
        if first is None:
            first, n_first = time.perf_counter(), batch["tokens"].size
    end = time.perf_counter()
    return tokens.size / (end - start), (tokens.size - n_first) / (end - first)


class PeakRSS:
    """Samples this process's resident memory in a thread."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.05)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="raysae/configs/quickstart.yaml")
    p.add_argument("--contexts", type=int, default=96)
    p.add_argument("--cache-shards", type=int, default=8, help="shards in the cache written and read")
    args = p.parse_args()
    cfg = load_config(args.config)
    tokens = pack_contexts(cfg.data, tokenizer_for(cfg), args.contexts)
    cores = os.cpu_count() or 1
    print(
        f"# {platform.machine()}, {cores} cores, torch {torch.__version__}; {cfg.model.name} "
        f"{cfg.model.hook_point}, {args.contexts} contexts x {cfg.data.context_size} tokens, "
        f"batch {cfg.activations.model_batch_size}"
    )
    base = bare_forward(cfg, tokens)
    print(f"generation  bare in-process forward ({cores} threads): {base:,.0f} tokens/s")
    ensure_ray()
    for actors, cpus in ((1, float(cores)), (cores, 1.0)):
        run_cfg = load_config(
            args.config, [f"activations.actors.num={actors}", f"activations.actors.cpus={cpus}"]
        )
        total, steady = ray_generation(run_cfg, tokens)
        print(
            f"generation  Ray Data, {actors} actor(s) x {cpus:g} CPU: {total:,.0f} tokens/s end to end "
            f"({total / base:.2f}x), {steady:,.0f} steady ({steady / base:.2f}x)"
        )

    with tempfile.TemporaryDirectory() as tmp:
        n_tokens = args.cache_shards * cfg.activations.shard_rows
        gen_cfg = load_config(
            args.config,
            [
                f"activations.cache_dir={tmp}",
                f"activations.n_tokens={n_tokens}",
                f"activations.actors.num={cores}",
                "activations.actors.cpus=1",
            ],
        )
        with PeakRSS() as mem:
            directory = generate_caches(gen_cfg)[(cfg.model.hook_point, "tokens")]
        manifest = verify_cache(directory)
        shard_mb = os.path.getsize(shard_paths(directory, manifest["shards"])[0]) / 2**20
        buffer_mb = shard_mb * gen_cfg.activations.shuffle_buffer_shards
        print(
            f"memory      driver peak RSS growth while writing {len(manifest['shards'])} shards: "
            f"{(mem.peak - mem.base) / 2**20:,.0f} MiB (one shard {shard_mb:,.0f} MiB, "
            f"shuffle buffer {buffer_mb:,.0f} MiB)"
        )

        paths = shard_paths(directory, manifest["shards"])
        start = time.perf_counter()
        rows = sum(
            np.concatenate([c.to_numpy() for c in pq.read_table(f)["acts"].chunks]).shape[0] for f in paths
        )
        raw = rows / (time.perf_counter() - start)
        print(f"cache read  pyarrow read_table of the same {len(paths)} files: {raw:,.0f} rows/s")
        readers = {
            "Ray Data iter_batches(4096)": lambda ds: (b["acts"] for b in ds.iter_batches(batch_size=4096)),
            "raysae iter_activation_batches(4096)": lambda ds: iter_activation_batches(ds, 4096),
        }
        sources = {
            "read_cache": lambda: read_cache(directory, columns=["acts"]),
            # what read_cache was before it shared the training stream's reader (read_shards)
            "Ray Data read_parquet": lambda: ray.data.read_parquet(
                paths, columns=["acts"], shuffle=ray.data.FileShuffleConfig(seed=0)
            ),
        }
        for (source, make), (name, reader) in itertools.product(sources.items(), readers.items()):
            ds = make()
            start, first, rows = time.perf_counter(), None, 0
            for acts in reader(ds):
                if first is None:
                    first, n_first = time.perf_counter(), len(acts)
                rows += len(acts)
            end = time.perf_counter()
            total, steady = rows / (end - start), (rows - n_first) / max(end - first, 1e-9)
            print(
                f"cache read  {source} + {name}: "
                f"{total:,.0f} rows/s end to end ({total / raw:.2f}x), {steady:,.0f} steady "
                f"({steady / raw:.2f}x); first batch after {first - start:.1f} s"
            )


if __name__ == "__main__":
    main()
