"""From config to activations: build the caches, or stream them live."""

from __future__ import annotations

import logging

from raysae.activations.cache import cache_dir, new_manifest, read_cache
from raysae.activations.cache_writer import CacheBuilder
from raysae.activations.generation import generation_dataset, token_rows
from raysae.activations.models import load_tokenizer
from raysae.activations.tokens import contexts_for_tokens, pack_contexts, rows_per_context
from raysae.config import ConfigError, RaysaeConfig

log = logging.getLogger("raysae.generate")


def hook_points(cfg: RaysaeConfig) -> list[str]:
    return [cfg.model.hook_point, *[h for h in cfg.model.extra_hook_points if h != cfg.model.hook_point]]


def tokenizer_for(cfg: RaysaeConfig):
    """The tokenizer the model's actors use, loaded in the driver for packing contexts."""
    if cfg.model.tokenizer:
        return load_tokenizer(cfg.model.tokenizer)
    if cfg.model.name == "random":
        raise ConfigError([("model.tokenizer", "a `random` model needs a tokenizer directory")])
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cfg.model.name)


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


def live_dataset(cfg: RaysaeConfig, contexts: range | None = None):
    """Training rows (`acts` [d_model]) generated on the fly, never touching disk.

    By default the contexts of the training budget (`activations.n_tokens` rows);
    `contexts` picks other ones by index in the packed corpus.
    """
    whole_budget = contexts is None
    if whole_budget:
        contexts = range(contexts_needed(cfg, "tokens"))
    tokens = pack_contexts(cfg.data, tokenizer_for(cfg), contexts.stop)[contexts.start :]
    skip = rows_per_context(cfg.data) < cfg.data.context_size
    ds = generation_dataset(cfg, tokens, contexts.start, [cfg.model.hook_point])
    ds = ds.map_batches(
        lambda b: {"acts": token_rows(b["acts_0"], skip)}, batch_size=None, batch_format="numpy"
    )
    return ds.limit(cfg.activations.n_tokens) if whole_budget else ds


def training_dataset(cfg: RaysaeConfig, *, seed: int | None = None):
    """A Ray Dataset of training rows (`acts`), from the cache or live, as configured.

    Either way the trainer sees the same thing: rows of `[d_model]` activations.
    """
    if cfg.activations.source == "live":
        return live_dataset(cfg)
    directory = cache_dir(cfg, cfg.model.hook_point, "tokens")
    return read_cache(directory, seed=cfg.activations.seed if seed is None else seed, columns=["acts"])


def evaluation_contexts(cfg: RaysaeConfig, n: int):
    """`n` contexts for CE-loss evaluation, and the mask of positions an SAE trained on.

    They are packed from the same corpus with another document shuffle
    (`data.seed + 1`), so that evaluation does not depend on reading past the
    whole training budget; on a large corpus they are effectively unseen.
    """
    import torch

    data = cfg.data.model_copy(update={"seed": cfg.data.seed + 1})
    tokens = torch.as_tensor(pack_contexts(data, tokenizer_for(cfg), n), dtype=torch.long)
    trained = torch.ones_like(tokens, dtype=torch.bool)
    if cfg.data.prepend_bos and cfg.data.exclude_bos:
        trained[:, 0] = False  # BOS activations were never trained on; leave them unspliced
    return tokens, trained
