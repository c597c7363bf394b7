"""The most complete pipeline that exists today, offline on a laptop:

    python examples/quickstart.py [examples/quickstart.yaml] [--set key=value ...]

1. prepares the offline assets (SmolLM2-135M, Shakespeare) if missing;
2. builds the activation cache with Ray Data (reused when complete);
3. trains one SAE per architecture on the cache with the bare loop, holding
   the last shard out for evaluation;
4. evaluates each (reconstruction, sparsity, CE-loss recovered in the model)
   and writes `<output_dir>/<name>/`: `config.yaml`, `saes/<sae_id>/` in the
   SAELens format, `results.csv`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from raysae import build_sae, ce_loss_recovered, fit
from raysae.activations import (
    generate_caches,
    iter_activation_batches,
    load_model,
    read_cache,
    read_manifest,
)
from raysae.cli import config_parser, run_main
from raysae.config import load_config
from raysae.ray_runtime import ensure_ray
from raysae.results import finish_sae, format_results, run_dir, write_config, write_results

log = logging.getLogger("raysae.quickstart")
ARCHITECTURES = ["topk", "batchtopk", "jumprelu", "standard"]
ROOT = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = config_parser(__doc__)
    parser.set_defaults(config=str(ROOT / "examples" / "quickstart.yaml"))
    args = parser.parse_args(argv)
    base = load_config(args.config, args.overrides)
    if base.model.name == "assets/smollm2-135m" and not Path(base.model.name).exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare_assets.py")], check=True)
    ensure_ray()
    cache = generate_caches(base)[(base.model.hook_point, "tokens")]
    model = load_model(base.model)
    eval_tokens = torch.as_tensor(read_cache_contexts(base), dtype=torch.long)
    splice_mask = torch.ones_like(eval_tokens, dtype=torch.bool)
    splice_mask[:, 0] = not base.data.exclude_bos  # the SAEs never saw BOS activations
    out = Path(run_dir(base))
    rows = []
    for arch in ARCHITECTURES:
        cfg = load_config(args.config, [*args.overrides, f"sae.architecture={arch}"])
        write_config(cfg, out)
        train = read_cache(cache, seed=cfg.activations.seed, columns=["acts"], shards=slice(0, -1))
        held_out = read_cache(cache, seed=None, columns=["acts"], shards=slice(-1, None))
        sae = build_sae(cfg.sae, d_in=read_manifest(cache)["d_model"])
        log.info("training %s: d_sae %d on %d tokens", arch, sae.d_sae, cfg.train.total_tokens)
        started = time.perf_counter()
        fit(sae, iter_activation_batches(train, cfg.train.batch_size), cfg.train)
        seconds = time.perf_counter() - started
        ce = ce_loss_recovered(model, eval_tokens, sae, cfg.model.hook_point, splice_mask=splice_mask)
        rows.append(
            finish_sae(
                sae,
                iter_activation_batches(held_out, 4096),
                cfg,
                f"{cfg.name}/{arch}",
                seconds=seconds,
                extra_metrics={"ce_loss_recovered": ce["ce_loss_recovered"], "kl_sae": ce["kl_sae"]},
                record={"ce": ce, "cache": str(cache)},
            )
        )
    results = write_results(rows, out)
    print(
        "\n"
        + format_results(
            rows,
            {"fvu": ".4f", "l0": ".1f", "dead_fraction": ".3f", "ce_loss_recovered": ".3f", "seconds": ".1f"},
        )
    )
    print(
        f"\nactivation cache: {cache}\nrun directory: {out}\nresults: {results}\n"
        f"checkpoints (SAELens format): {out / 'saes'}"
    )
    return 0


def read_cache_contexts(cfg, n: int = 8):
    """A few token contexts for the CE-loss evaluation, from the corpus the cache came from."""
    from raysae.activations.pipeline import tokenizer_for
    from raysae.activations.tokens import pack_contexts

    return pack_contexts(cfg.data, tokenizer_for(cfg), n)


if __name__ == "__main__":
    run_main(main)
