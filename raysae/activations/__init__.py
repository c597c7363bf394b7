"""Activations: models, tokens, Ray Data generation, caches, live streaming."""

from raysae.activations.batches import iter_activation_batches
from raysae.activations.cache import (
    CacheError,
    cache_dir,
    cache_key,
    read_cache,
    read_manifest,
    verify_cache,
)
from raysae.activations.generation import from_storage
from raysae.activations.models import hook_activations, load_model, stop_layer
from raysae.activations.pipeline import (
    generate_caches,
    live_dataset,
    tokenizer_for,
    training_dataset,
)
from raysae.activations.tokens import pack_contexts

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
    "stop_layer",
    "tokenizer_for",
    "training_dataset",
    "verify_cache",
]
