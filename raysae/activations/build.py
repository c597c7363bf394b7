"""Building the activation caches a config names (`python -m raysae.generate`)."""

from __future__ import annotations

import itertools
import logging
from typing import Any

from raysae import progress
from raysae.activations.cache import cache_dir, new_manifest, read_manifest, verify_cache
from raysae.activations.cache_writer import CacheBuilder
from raysae.activations.disk_budget import PlannedCache, check_disk
from raysae.activations.generation import generation_dataset
from raysae.activations.language_model import tokenizer_for
from raysae.activations.layers import expand_hooks, training_hooks
from raysae.activations.tokens import contexts_for_tokens, pack_contexts
from raysae.config import RaysaeConfig
from raysae.errors import CacheError

log = logging.getLogger("raysae.generate")


def cache_hook_sets(cfg: RaysaeConfig, layout: str) -> list[list[str]]:
    """The caches of a layout, each as its hooks: the SAE's (paired for `tokens` with an output
    hook, every layer's with `model.layers`; the analysis layout holds each input hook alone, one
    cache per layer), then one per extra hook point."""
    inputs, _ = expand_hooks(cfg)
    first = [training_hooks(cfg)] if layout == "tokens" else [[h] for h in inputs]
    return [*first, *[[h] for h in cfg.model.extra_hook_points if h not in inputs]]


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


def planned_caches(cfg: RaysaeConfig) -> list[PlannedCache]:
    """Every cache of `activations.layouts` that is not complete yet (a damaged one raises)."""
    return [
        PlannedCache(directory, hooks, layout)
        for layout in cfg.activations.layouts
        for hooks in cache_hook_sets(cfg, layout)
        if complete_cache(directory := cache_dir(cfg, _hooks_arg(hooks), layout)) is None
    ]


def _hooks_arg(hooks: list[str]) -> str | list[str]:
    """The cache functions' hook argument: one hook by its name (its key never changed), or the list."""
    return hooks if len(hooks) > 1 else hooks[0]


def generate_caches(cfg: RaysaeConfig) -> dict[tuple[str, str], str]:
    """Make sure every cache the config names is complete; returns {(first hook, layout): dir}.

    Complete caches are verified and reused, incomplete ones resumed; all hook points of a
    layout are filled from one forward pass over the contexts. Nothing is created on disk
    before the tokenizer has loaded and the disk is known to hold every cache still to build
    (`disk_budget.check_disk`, with the widths of the first generated batch).
    """
    hooks = hook_points(cfg)
    a = cfg.activations
    dirs = {
        (s[0], layout): cache_dir(cfg, _hooks_arg(s), layout)
        for layout in a.layouts
        for s in cache_hook_sets(cfg, layout)
    }
    plans = planned_caches(cfg)
    tokenizer = None
    checked = False
    for layout in a.layouts:
        todo_plans = [p for p in plans if p.layout == layout]
        if not todo_plans:
            log.info(
                "%s caches complete, reusing: %s",
                layout,
                ", ".join(d for (_, where), d in dirs.items() if where == layout),
            )
            continue
        n_contexts = contexts_needed(cfg, layout)
        tokenizer = tokenizer or tokenizer_for(cfg)
        done = [(read_manifest(p.directory) or {}).get("contexts_done", 0) for p in todo_plans]
        start = min(done)
        if start:
            log.info("resuming %s caches from context %d of %d", layout, start, n_contexts)
        tokens = pack_contexts(cfg.data, tokenizer, n_contexts)
        ds = generation_dataset(cfg, tokens[start:], start, hooks)
        batches = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
        first = next(batches, None)
        if not checked and first is not None:
            widths = {h: int(first[f"acts_{i}"].shape[-1]) for i, h in enumerate(hooks)}
            check_disk(cfg, plans, widths)  # before the first folder is made
            checked = True
        todo = [
            CacheBuilder(
                p.directory,
                new_manifest(cfg, _hooks_arg(p.hooks), layout),
                columns=[f"acts_{hooks.index(h)}" for h in p.hooks],
                n_contexts=n_contexts,
                n_rows=a.n_tokens,
                shard_rows=a.shard_rows
                if layout == "tokens"
                else max(1, a.shard_rows // cfg.data.context_size),
                buffer_shards=a.shuffle_buffer_shards,
                seed=a.seed,
            )
            for p in todo_plans
        ]
        for b in todo:
            b.start_pass()
        meter = progress.Progress(f"generation: {layout} cache", n_contexts, "contexts")
        meter.update(start)
        for batch in itertools.chain([first] if first is not None else [], batches):
            for b in todo:  # batch_format="numpy" gives a dict of arrays; Ray types it as any format
                b.add(batch)  # pyright: ignore[reportArgumentType]
            meter.update(meter.done + len(batch["context_id"]))
        meter.close()
        for b in todo:
            b.finish()
    return dirs
