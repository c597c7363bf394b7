"""Activations: the language model, token contexts, Ray Data generation, caches, training streams.

- `language_model`: loading TransformerLens models and tokenizers, reading hook points;
- `tokens`: text corpora packed into fixed-length token contexts;
- `generation`: activations on a Ray Data actor pool, for caches or live;
- `cache` / `cache_writer` / `build`: the sharded on-disk caches (read, write, build);
- `layers`: which hooks a row holds (one, a transcoder's pair, every layer of `model.layers`);
- `int8`: int8 storage with per-vector scales; `disk_budget`: a cache's size, checked up front;
- `streams`: what a training run reads (training stream, held-out rows, CE contexts);
- `batches`: a Ray Dataset of rows cut into `[batch, d_model]` tensors.
"""

from raysae.activations.batches import iter_activation_batches
from raysae.activations.build import generate_caches
from raysae.activations.cache import (
    cache_dir,
    cache_key,
    read_cache,
    read_manifest,
    read_shards,
    verify_cache,
)
from raysae.activations.generation import from_storage, live_dataset
from raysae.activations.language_model import hook_activations, load_model, stop_layer, tokenizer_for
from raysae.activations.tokens import pack_contexts
from raysae.errors import CacheError

__all__ = [
    "CacheError",
    "cache_dir",
    "cache_key",
    "from_storage",
    "generate_caches",
    "hook_activations",
    "iter_activation_batches",
    "live_dataset",
    "load_model",
    "pack_contexts",
    "read_cache",
    "read_manifest",
    "read_shards",
    "stop_layer",
    "tokenizer_for",
    "verify_cache",
]
