"""Building the activation caches a config names (`python -m raysae.generate`)."""

from __future__ import annotations

import logging

from raysae.activations.cache import cache_dir, new_manifest
from raysae.activations.cache_writer import CacheBuilder
from raysae.activations.generation import generation_dataset
from raysae.activations.language_model import tokenizer_for
from raysae.activations.tokens import contexts_for_tokens, pack_contexts
from raysae.config import RaysaeConfig

log = logging.getLogger("raysae.generate")


def hook_points(cfg: RaysaeConfig) -> list[str]:
    """The SAE's hook point first, then the extra ones filled in the same forward pass."""
    return [cfg.model.hook_point, *[h for h in cfg.model.extra_hook_points if h != cfg.model.hook_point]]


def contexts_needed(cfg: RaysaeConfig, layout: str) -> int:
    a = cfg.activations
    return contexts_for_tokens(cfg.data, a.n_tokens) if layout == "tokens" else a.n_contexts


def generate_caches(cfg: RaysaeConfig) -> dict[tuple[str, str], str]:
    """Make sure every cache the config names is complete; returns {(hook, layout): dir}.

    Complete caches are reused, incomplete ones resumed; all hook points of a
    layout are filled from one forward pass over the contexts.
    """
    hooks = hook_points(cfg)
    dirs: dict[tuple[str, str], str] = {}
    a = cfg.activations
    tokenizer = None
    for layout in a.layouts:
        n_contexts = contexts_needed(cfg, layout)
        builders = []
        for i, hook in enumerate(hooks):
            directory = cache_dir(cfg, hook, layout)
            dirs[(hook, layout)] = directory
            builders.append(
                CacheBuilder(
                    directory,
                    new_manifest(cfg, hook, layout),
                    column=f"acts_{i}",
                    n_contexts=n_contexts,
                    n_rows=a.n_tokens,
                    shard_rows=a.shard_rows
                    if layout == "tokens"
                    else max(1, a.shard_rows // cfg.data.context_size),
                    buffer_shards=a.shuffle_buffer_shards,
                    seed=a.seed,
                )
            )
        todo = [b for b in builders if not b.complete]
        if not todo:
            log.info("%s caches complete, reusing: %s", layout, ", ".join(b.dir for b in builders))
            continue
        start = min(b.contexts_done for b in todo)
        if start:
            log.info("resuming %s caches from context %d of %d", layout, start, n_contexts)
        tokenizer = tokenizer or tokenizer_for(cfg)
        tokens = pack_contexts(cfg.data, tokenizer, n_contexts)
        for b in todo:
            b.start_pass()
        ds = generation_dataset(cfg, tokens[start:], start, hooks)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for b in todo:
                b.add(batch)
        for b in todo:
            b.finish()
    return dirs
