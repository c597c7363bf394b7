"""What the analysis reads: the config of each SAE's activations, the tokens it leaves out,
and the 2d activations themselves (the `contexts` cache, built if missing, or live)."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from raysae.activations.build import generate_caches
from raysae.activations.cache import cache_dir, read_shards, verify_cache
from raysae.activations.generation import generation_dataset
from raysae.activations.tokens import pack_contexts
from raysae.config import RaysaeConfig

log = logging.getLogger("raysae.analyze")

MATERIALIZE_SOURCE_BYTES = 256 * 2**20
"""A cache source up to this size is read in full before encoding (see `source_dataset`)."""


def analysis_config(cfg: RaysaeConfig, record: dict[str, Any]) -> RaysaeConfig:
    """The SAE's own model, data and hook; this command's activations, analysis and store."""
    base = RaysaeConfig.model_validate(record["config"]) if "config" in record else cfg
    model = base.model.model_copy(update={"extra_hook_points": []})
    activations = cfg.activations.model_copy(update={"layouts": ["contexts"]})
    return base.model_copy(
        update={
            "model": model,
            "activations": activations,
            "analysis": cfg.analysis,
            "store": cfg.store,
            "name": cfg.name,
            "output_dir": cfg.output_dir,
        }
    )


def excluded_token_ids(tokenizer) -> list[int]:
    """BOS, and a padding token that is not also the document separator (EOS)."""
    ids = {tokenizer.bos_token_id}
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        ids.add(tokenizer.pad_token_id)
    return sorted(i for i in ids if i is not None)


def contexts_to_analyze(cfg: RaysaeConfig) -> int:
    per_context = cfg.data.context_size - (1 if cfg.data.prepend_bos else 0)
    return math.ceil(cfg.analysis.n_tokens / per_context)


def source_dataset(cfg: RaysaeConfig, tokenizer):
    """(Ray Dataset of `context_id`, `tokens`, activations; activation column; dtype; contexts)."""
    wanted = contexts_to_analyze(cfg)
    if cfg.activations.source == "live":
        tokens = pack_contexts(cfg.data, tokenizer, wanted)
        return (
            generation_dataset(cfg, tokens, 0, [cfg.model.hook_point]),
            "acts_0",
            cfg.activations.dtype,
            wanted,
        )
    generate_caches(cfg)
    directory = cache_dir(cfg, cfg.model.hook_point, "contexts")
    manifest = verify_cache(directory)
    n = min(wanted, manifest["contexts_done"])
    if n < wanted:
        log.warning(
            "the contexts cache %s holds %d contexts, fewer than the %d that analysis.n_tokens=%d asks "
            "for; analyzing all of them (raise activations.n_contexts for more)",
            directory,
            n,
            wanted,
            cfg.analysis.n_tokens,
        )
    rows = np.cumsum([s["rows"] for s in manifest["shards"]])
    shards = manifest["shards"][: int(np.searchsorted(rows, n)) + 1]
    ds = read_shards(directory, shards, columns=["context_id", "tokens", "acts"]).limit(n)
    # Blocks of about one analysis batch, so that every actor of the pool gets work
    # (an actor takes whole blocks; a cache shard is one block).
    itemsize = 2 if manifest["dtype"] in ("bfloat16", "float16") else 4
    row_bytes = cfg.data.context_size * (manifest["d_model"] * itemsize + 4)
    ds.context.target_max_block_size = cfg.analysis.batch_contexts * row_bytes
    if n * row_bytes <= MATERIALIZE_SOURCE_BYTES:
        # A small source is read in full first, so every actor of the pool has
        # batches from the start; streamed, batches trickle in as shards are read
        # and the first free actor can end up encoding all of them.
        ds = ds.materialize()
    return ds, "acts", manifest["dtype"], n
