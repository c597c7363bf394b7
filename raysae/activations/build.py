"""Building the activation caches a config names (`python -m raysae.generate`)."""

from __future__ import annotations

import logging
from typing import Any

from raysae import progress
from raysae.activations.cache import cache_dir, new_manifest, read_manifest, verify_cache
from raysae.activations.cache_writer import CacheBuilder
from raysae.activations.generation import generation_dataset
from raysae.activations.language_model import tokenizer_for
from raysae.activations.tokens import contexts_for_tokens, pack_contexts
from raysae.config import RaysaeConfig
from raysae.errors import CacheError

log = logging.getLogger("raysae.generate")


def training_hooks(cfg: RaysaeConfig) -> list[str]:
    """The hooks of the training (`tokens`) cache: the input hook, then a transcoder's output hook
    when `model.hook_point_out` is set and differs (a paired cache)."""
    m = cfg.model
    return [m.hook_point] if m.hook_point_out in (None, m.hook_point) else [m.hook_point, m.hook_point_out]


def cache_hook_sets(cfg: RaysaeConfig, layout: str) -> list[list[str]]:
    """The caches of a layout, each as its hooks: the SAE's (paired for `tokens` with an output
    hook; the analysis layout holds the input hook alone), then one per extra hook point."""
    first = training_hooks(cfg) if layout == "tokens" else [cfg.model.hook_point]
    return [first, *[[h] for h in cfg.model.extra_hook_points if h != cfg.model.hook_point]]


def hook_points(cfg: RaysaeConfig) -> list[str]:
    """Every hook the caches read, the SAE's first, all filled in the same forward pass."""
    return list(
        dict.fromkeys(h for layout in ("tokens", "contexts") for s in cache_hook_sets(cfg, layout) for h in s)
    )


def contexts_needed(cfg: RaysaeConfig, layout: str) -> int:
    a = cfg.activations
    return contexts_for_tokens(cfg.data, a.n_tokens) if layout == "tokens" else a.n_contexts


REPAIR = "delete that folder and rerun `python -m raysae.generate CONFIG` to rebuild it"
"""How to repair a damaged cache: a rebuild in a fresh folder is the one thing that is exact."""


def complete_cache(directory: str) -> dict[str, Any] | None:
    """The manifest of a complete cache at `directory` after checking every shard (checksums
    included), None when it is missing or unfinished (it will be built or resumed). A damaged
    one is never called complete: `CacheError` names the shard and how to rebuild it."""
    manifest = read_manifest(directory)
    if manifest is None or not manifest.get("complete"):
        return None
    try:
        return verify_cache(directory)
    except CacheError as exc:
        raise CacheError(f"{exc}; the cache {directory} is damaged: {REPAIR}") from None


def generate_caches(cfg: RaysaeConfig) -> dict[tuple[str, str], str]:
    """Make sure every cache the config names is complete; returns {(hook, layout): dir}.

    Complete caches are verified and reused, incomplete ones resumed; all hook points of a
    layout are filled from one forward pass over the contexts. Nothing is created on disk
    before the tokenizer has loaded.
    """
    hooks = hook_points(cfg)
    dirs: dict[tuple[str, str], str] = {}
    a = cfg.activations
    tokenizer = None
    for layout in a.layouts:
        n_contexts = contexts_needed(cfg, layout)
        sets = cache_hook_sets(cfg, layout)
        layout_dirs = [cache_dir(cfg, s if len(s) > 1 else s[0], layout) for s in sets]
        dirs.update({(s[0], layout): d for s, d in zip(sets, layout_dirs, strict=True)})
        missing = [i for i, d in enumerate(layout_dirs) if complete_cache(d) is None]
        if not missing:
            log.info("%s caches complete, reusing: %s", layout, ", ".join(layout_dirs))
            continue
        tokenizer = tokenizer or tokenizer_for(cfg)
        todo = [
            CacheBuilder(
                layout_dirs[i],
                new_manifest(cfg, sets[i] if len(sets[i]) > 1 else sets[i][0], layout),
                columns=[f"acts_{hooks.index(h)}" for h in sets[i]],
                n_contexts=n_contexts,
                n_rows=a.n_tokens,
                shard_rows=a.shard_rows
                if layout == "tokens"
                else max(1, a.shard_rows // cfg.data.context_size),
                buffer_shards=a.shuffle_buffer_shards,
                seed=a.seed,
            )
            for i in missing
        ]
        start = min(b.contexts_done for b in todo)
        if start:
            log.info("resuming %s caches from context %d of %d", layout, start, n_contexts)
        tokens = pack_contexts(cfg.data, tokenizer, n_contexts)
        for b in todo:
            b.start_pass()
        ds = generation_dataset(cfg, tokens[start:], start, hooks)
        meter = progress.Progress(f"generation: {layout} cache", n_contexts, "contexts")
        meter.update(start)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for b in todo:  # batch_format="numpy" gives a dict of arrays; Ray types it as any format
                b.add(batch)  # pyright: ignore[reportArgumentType]
            meter.update(meter.done + len(batch["context_id"]))
        meter.close()
        for b in todo:
            b.finish()
    return dirs
