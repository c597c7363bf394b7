"""Analysis tokens/s against a bare `encode` of the same SAE and activations, and documents/s written.

In this one command, on the same 2d activation cache and SAE:

1. baseline: `sae.encode` over the cached contexts, batch by batch, in this process;
2. the same batches through `encode_contexts` (everything the actors compute), in this process;
3. `raysae.analysis.analyze` end to end up to the documents: Ray Data actor pool,
   merges, example selection, histograms and windows (cache checks and Ray Data
   start-up included);
4. documents built and written to the embedded store (documents/s).

    python bench/analysis.py                         # d_in 512, 8x, k 32, 65,536 tokens
    python bench/analysis.py --tokens 1000000 --gpu  # on a GPU node

The cache comes from a random 1-layer model (d_model = --d-in) over the
Shakespeare assets (`raysae assets` first).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch
from shapes import shape_parser  # bench/ is the script's folder, so on sys.path

from raysae import build_sae
from raysae.activations import generate_caches, read_manifest
from raysae.activations.cache import cache_dir, shard_paths
from raysae.activations.language_model import tokenizer_for
from raysae.analysis import analyze
from raysae.analysis.encode import encode_contexts, keep_mask
from raysae.analysis.sources import excluded_token_ids
from raysae.checkpoint import save_sae
from raysae.config import load_config
from raysae.ray_runtime import ensure_ray
from raysae.run_dir import RunDir

ROOT = Path(__file__).resolve().parents[1]


def config(args, out: Path):
    contexts = -(-args.tokens // 127)
    return load_config(
        None,
        [
            "name=bench",
            f"output_dir={out / 'runs'}",
            "model.name=random",
            f"model.tokenizer={ROOT / 'assets/gpt2-tokenizer'}",
            f"model.random.d_model={args.d_in}",
            "model.random.n_layers=1",
            "model.random.n_heads=8",
            "model.hook_point=blocks.0.hook_resid_post",
            f"model.device={'cuda' if args.gpu else 'cpu'}",
            f"data.path={ROOT / 'assets/shakespeare'}",
            "data.context_size=128",
            f"activations.cache_dir={args.cache_dir}",
            "activations.layouts=[contexts]",
            f"activations.n_contexts={contexts}",
            "activations.shard_rows=16384",
            "activations.model_batch_size=32",
            f"sae.expansion_factor={args.expansion}",
            f"sae.k={args.k}",
            f"analysis.n_tokens={args.tokens}",
            f"analysis.batch_contexts={args.batch // 128}",
            f"analysis.actors.num={args.actors}",
            f"analysis.actors.cpus={args.threads}",
            f"analysis.actors.gpus={1 if args.gpu else 0}",
        ],
    )


def cached_batches(cfg, batch_contexts: int, device):
    directory = cache_dir(cfg, cfg.model.hook_point, "contexts")
    manifest = read_manifest(directory)
    table = pa.concat_tables([pq.read_table(path) for path in shard_paths(directory, manifest["shards"])])
    n, seq, d = manifest["contexts_done"], manifest["context_size"], manifest["d_model"]
    acts = np.stack(table["acts"].to_numpy(zero_copy_only=False)).reshape(n, seq, d).astype(np.float32)
    tokens = np.stack(table["tokens"].to_numpy(zero_copy_only=False)).reshape(n, seq)
    keep = torch.as_tensor(keep_mask(tokens, excluded_token_ids(tokenizer_for(cfg))))  # as the actors do
    return [
        (torch.as_tensor(acts[i : i + batch_contexts]).to(device), keep[i : i + batch_contexts].to(device))
        for i in range(0, n, batch_contexts)
    ]


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    p = shape_parser(__doc__)
    p.add_argument("--tokens", type=int, default=65_536, help="tokens analyzed")
    p.add_argument("--threads", type=int, default=2, help="torch threads (CPUs per analysis actor)")
    p.add_argument("--actors", type=int, default=1)
    p.add_argument("--gpu", action="store_true", help="encode on cuda (one GPU per actor)")
    p.add_argument("--cache-dir", default=str(ROOT / "cache"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ensure_ray(num_cpus=max(4, args.threads * args.actors + 2))
    out = Path(tempfile.mkdtemp(prefix="raysae-bench-"))
    cfg = config(args, out)
    generate_caches(cfg)
    device = torch.device("cuda" if args.gpu else "cpu")
    sae = build_sae(cfg.sae, args.d_in)
    sae_dir = save_sae(sae, Path(RunDir.of(cfg).root) / "saes" / "bench" / "t000", config=cfg)
    sae = sae.to(device).eval()
    batches = cached_batches(cfg, args.batch // 128, device)
    n_tokens = sum(int(keep.sum()) for _, keep in batches)
    all_tokens = sum(acts.shape[0] * acts.shape[1] for acts, _ in batches)
    print(
        f"# {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}, "
        f"{'cuda' if args.gpu else f'cpu x{args.threads} threads'}, {args.actors} actor(s); d_in {args.d_in}, "
        f"{args.expansion}x, k {args.k}, {args.batch // 128} contexts of 128 per batch, {n_tokens} tokens"
    )
    with torch.no_grad():
        encode_s = timed(lambda: [sae.encode(a.reshape(-1, a.shape[-1])) for a, _ in batches])
    math_s = timed(lambda: [encode_contexts(sae, a, k) for a, k in batches])
    baseline = all_tokens / encode_s
    summary = analyze(cfg, [sae_dir])[0]
    rows = [
        ("bare encode (baseline)", baseline, 1.0),
        ("encode_contexts in process", all_tokens / math_s, encode_s / math_s),
        (
            "analyze, up to the documents",
            all_tokens / summary["stats_seconds"],
            all_tokens / summary["stats_seconds"] / baseline,
        ),
    ]
    for label, rate, ratio in rows:
        print(f"{label:<36}{rate:>12,.0f} tok/s  {ratio:.2f}")
    print(
        f"{'documents built and written':<36}{summary['features'] / summary['write_seconds']:>12,.0f} docs/s "
        f"({summary['features']} features, {summary['write_seconds']:.1f} s, embedded store)"
    )


if __name__ == "__main__":
    main()
