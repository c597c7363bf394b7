"""The GPU benchmark: raysae's step, data paths and populations on one card, each figure beside
its baseline from the same command. Needs CUDA and Triton; refuses (exit 3) without them.

    python bench/gpu.py --out gpu.json            # everything, < 8 minutes on one H200
    python bench/gpu.py --only steps --out s.json # one section: steps, raytrain, reads, live, population

Offline: random-weight models (`boot_native`), planted-dictionary batches, and a generated
word-level tokenizer and corpus; nothing is read from the hub or `raysae assets`.

1. steps: the hand-written TopK step of issue 15 (fp32 master weights, bf16 autocast,
   `embedding_bag` decode, Adam) against raysae's `SAETrainer.step` (what `fit` and the
   Ray Train worker run; AuxK on), fp32 and bf16, at d 768 x 24,576 k 32 and
   d 2,304 x 65,536 k 64, batch 4,096; tokens/s between CUDA events after a warm-up.
2. raytrain: `run_training` (Ray Train, one GPU worker) from a bf16 cache on local disk,
   steady tokens/s inside the worker, against the bare bf16 step at the same shape.
3. reads: the cache through the worker's reader (`iter_activation_batches`, pinned memory,
   `device=cuda`) in GB/s, against pyarrow reading the same files.
4. live: a GPT-2-small-shaped random model (12 x 768, stopped after 7 blocks) on a Ray Data
   GPU actor feeding bf16 training on the same card, against the bare forward and step.
5. population: K = 8 SAEs (d 768, 8x) in one Ray Train run from the cache against one SAE's
   run: aggregate SAE-tokens/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from gpu_parts import (  # bench/ is the script's folder, so on sys.path
    REFUSAL_EXIT,
    ReferenceTopK,
    batches,
    missing,
    raysae_trainer,
    tokens_per_s,
    write_corpus,
    write_tokenizer,
)

SECTIONS = ["steps", "raytrain", "reads", "live", "population"]
SHAPES = [(768, 24_576, 32), (2304, 65_536, 64)]  # (d_in, d_sae, k), the two shapes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file for every figure and its baseline")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before each timed window")
    p.add_argument("--steps", type=int, default=50, help="timed steps per bare-step row")
    p.add_argument("--train-tokens", type=int, default=20_000_000, help="per Ray Train run")
    p.add_argument("--cache-tokens", type=int, default=2_000_000, help="rows of the bf16 cache")
    p.add_argument("--live-tokens", type=int, default=8_000_000, help="live generation + training")
    p.add_argument("--population", type=int, default=8, help="K")
    p.add_argument("--workdir", default=None, help="cache, corpus and runs (default: a temp folder)")
    return p.parse_args(argv)


def bare_steps(args, device: torch.device, shapes=SHAPES) -> list[dict]:
    """Section 1: reference and raysae steps at each shape; every row has its baseline."""
    rows = []
    for d_in, d_sae, k in shapes:
        data = batches(d_in, d_sae, k, args.batch, 4, device)
        shape = f"d {d_in} x {d_sae:,} k {k}"
        ref = tokens_per_s(ReferenceTopK(d_in, d_sae, k, device).step, data, device, args.warmup, args.steps)
        rows.append(row(f"hand-written TopK bf16, {shape}", ref, "tok/s", ref))
        for precision in ("fp32", "bf16"):
            trainer = raysae_trainer(
                d_in, d_sae, k, args.batch, precision, device, data[0], aux_dead_tokens=args.batch
            )
            rate = tokens_per_s(trainer.step, data, device, args.warmup, args.steps)
            rows.append(row(f"raysae step {precision}, {shape}, AuxK", rate, "tok/s", ref))
            del trainer
        torch.cuda.empty_cache() if device.type == "cuda" else None
    return rows


def row(label: str, value: float, unit: str, baseline: float) -> dict:
    return {
        "measurement": label,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "ratio": value / baseline,
    }


def offline_assets(work: Path, corpus_words: int) -> tuple[Path, Path]:
    """The tokenizer and corpus the Ray sections read, written once into `work`."""
    tok = work / "tokenizer"
    if not (tok / "tokenizer.json").exists():
        write_tokenizer(tok)
    corpus = work / "corpus"
    if not (corpus / "corpus.jsonl").exists():
        write_corpus(corpus, corpus_words)
    return tok, corpus


def cache_config(args, work: Path, name: str, *extra: str):
    """bench/ray_train.py's config (d 768, 8x, k 32, the bf16 cache of a random 1-layer model)
    on the offline assets, a GPU worker, bf16 training."""
    import ray_train

    # Each section packs from the corpus' start; the sum with 5 % spare (BOS positions, the
    # held-out shard) covers either.
    tok, corpus = offline_assets(work, int(1.05 * (args.cache_tokens + 65536 + args.live_tokens)))
    shape = SimpleNamespace(
        d_in=768,
        expansion=8,
        k=32,
        batch=args.batch,
        tokens=args.train_tokens,
        threads=4,
        gpu=True,
        cache_dir=str(work / "cache"),
    )
    return ray_train.config(
        shape, work, name,
        f"model.tokenizer={tok}", f"data.path={corpus}", "model.random.n_heads=12",
        "model.dtype=bfloat16", "model.device=auto", "activations.actors.gpus=1",
        "activations.dtype=bfloat16", f"activations.n_tokens={args.cache_tokens + 65536}",
        "activations.shard_rows=65536", "activations.model_batch_size=64", "train.precision=bf16",
        f"train.checkpoint_every_tokens={args.train_tokens // 2}", *extra,
    )  # fmt: skip


def ray_sections(args, device: torch.device, work: Path) -> list[dict]:
    """Sections 2-5, sharing one local Ray, one cache and one corpus."""
    import ray_train

    from raysae.activations import generate_caches
    from raysae.ray_runtime import ensure_ray

    ensure_ray(num_cpus=16)
    base = cache_config(args, work, "single")
    rows = []
    want = set(args.only)
    if want & {"raytrain", "reads", "population"}:
        directory = generate_caches(base)[(base.model.hook_point, "tokens")]
    data = batches(768, 768 * 8, 32, args.batch, 4, device)
    bare = tokens_per_s(
        raysae_trainer(768, 6144, 32, args.batch, "bf16", device, data[0]).step, data, device, 10, 50
    )
    one = None
    if want & {"raytrain", "population"}:
        one, e2e = ray_train.ray_run(base, work, "single")  # also the population's baseline
    if "raytrain" in want:
        steady = one
        rows.append(row("bare step bf16, d 768 x 6,144 k 32 (baseline)", bare, "tok/s", bare))
        rows.append(row("Ray Train from the bf16 cache, steady", steady, "tok/s", bare))
        rows.append(row("Ray Train from the bf16 cache, end to end", e2e, "tok/s", bare))
    if "reads" in want:
        rows += cache_reads(base, directory, device)
    if "live" in want:
        rows += live(args, work, device)
    if "population" in want:
        k = args.population
        members = ", ".join(f"{{train.lr: {3e-4 * (1 + i / k):.6f}}}" for i in range(k))
        pop = cache_config(args, work, "population", f"train.population=[{members}]")
        pop_steady, _ = ray_train.ray_run(pop, work, "population")
        assert one is not None
        rows.append(row("1 SAE through Ray Train, steady (baseline)", one, "SAE-tok/s", one))
        rows.append(row(f"population K={k} through Ray Train, steady", k * pop_steady, "SAE-tok/s", one))
    return rows


def cache_reads(cfg, directory: str, device: torch.device) -> list[dict]:
    """Section 3: GB/s of the worker's reader into the GPU against pyarrow over the same files."""
    import pyarrow.parquet as pq

    from raysae.activations import iter_activation_batches, read_manifest
    from raysae.activations.cache import shard_paths
    from raysae.activations.streams import training_rows

    paths = shard_paths(directory, read_manifest(directory)["shards"])
    start, nbytes = time.perf_counter(), 0
    for f in paths:
        nbytes += pq.read_table(f, columns=["acts"])["acts"].nbytes
    raw = nbytes / (time.perf_counter() - start) / 1e9
    start, got = time.perf_counter(), 0
    reader = iter_activation_batches(training_rows(cfg), 4096, dtype="bfloat16", device=device)
    for b in reader:  # one pass's worth of bytes (the stream repeats the cache per epoch)
        got += b.numel() * b.element_size()
        if got >= nbytes:
            break
    torch.cuda.synchronize(device)
    reader.close()
    ours = got / (time.perf_counter() - start) / 1e9
    return [
        row(f"pyarrow read_table of the {len(paths)} cache files (baseline)", raw, "GB/s", raw),
        row("training stream -> pinned -> GPU (the worker's reader), end to end", ours, "GB/s", raw),
    ]


def live_config(args, work: Path):
    """GPT-2-small-shaped random model (12 x 768, 12 heads, vocab 50,257, contexts of 1,024),
    hooked after block 6 (TransformerLens stop_at_layer=7: blocks 0-6 run), 32 contexts per
    forward, on an actor holding half the card."""
    return cache_config(
        args, work, "live", "activations.source=live", "model.random.n_layers=12",
        "model.random.n_ctx=1024", "model.random.d_vocab=50257", "data.context_size=1024",
        "activations.model_batch_size=32", "activations.actors.gpus=0.5",
        "model.hook_point=blocks.6.hook_resid_post", f"activations.n_tokens={args.live_tokens}",
    )  # fmt: skip


def live(args, work: Path, device: torch.device) -> list[dict]:
    """Section 4: GPT-2-small-shaped random model on a Ray Data GPU actor (0.5 GPU) feeding
    bf16 training in this process on the same card, against the bare forward alone."""
    from raysae.activations import iter_activation_batches, load_model
    from raysae.activations.generation import live_dataset
    from raysae.activations.language_model import hook_activations

    cfg = live_config(args, work)
    hook = cfg.model.hook_point
    model = load_model(cfg.model, device)
    tokens = torch.randint(0, 2000, (32, 1024), device=device)
    fwd = tokens_per_s(lambda t: hook_activations(model, t, [hook]), [tokens], device, 3, 20)
    trainer = None
    start, n = time.perf_counter(), 0
    for b in iter_activation_batches(live_dataset(cfg), args.batch, dtype="bfloat16", device=device):
        if trainer is None:
            trainer = raysae_trainer(768, 6144, 32, args.batch, "bf16", device, b)
            start = time.perf_counter()  # actor start and model load excluded: steady state
            continue
        trainer.step(b)
        n += len(b)
    torch.cuda.synchronize(device)
    rate = n / (time.perf_counter() - start)
    return [
        row("bare forward, GPT-2-small shape, 7 blocks, bf16 (baseline)", fwd, "tok/s", fwd),
        row("live: Ray Data GPU actor -> bf16 training, same card, steady", rate, "tok/s", fwd),
    ]


def table(rows: list[dict]) -> str:
    lines = [f"{'measurement':<72}{'figure':>16}  {'vs baseline':>11}"]
    for r in rows:
        lines.append(f"{r['measurement']:<72}{r['value']:>12,.3g} {r['unit']:<5}{r['ratio']:>11.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lacks = missing()
    if lacks:
        print("bench/gpu.py reports GPU figures only; this machine has:", file=sys.stderr)
        for line in lacks:
            print(f"  - {line}", file=sys.stderr)
        print("nothing was measured (CPU figures: bench/train_step.py, bench/ray_train.py)", file=sys.stderr)
        return REFUSAL_EXIT
    device = torch.device("cuda", torch.cuda.current_device())
    card = torch.cuda.get_device_name(device)
    started = time.perf_counter()
    rows = bare_steps(args, device) if "steps" in args.only else []
    if set(args.only) - {"steps"}:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="raysae-gpu-bench-"))
        rows += ray_sections(args, device, work)
    header = f"# {card}, torch {torch.__version__}, {platform.node()}, {time.perf_counter() - started:.0f} s"
    print(header)
    print(table(rows))
    result = {"card": card, "torch": torch.__version__, "args": vars(args), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
