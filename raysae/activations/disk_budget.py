"""The size on disk of the caches a command will build, stated and checked before anything is written.

The estimate (`cache_bytes`) is the payload, what the shards hold value for value (rows x the
row's values at every hook x bytes per element, plus int8's float32 scale per row-hook vector and,
in the `contexts` layout, the int32 tokens and int64 context ids), plus Parquet's overhead: the
shards are written uncompressed, so their data pages are the payload itself and the rest is the
repetition/definition levels of the list-typed tensor columns (about 1/32 of a byte per value, RLE),
page headers, the footer and the dictionary page pyarrow tries first on each column
(`PARQUET_VALUE_OVERHEAD` a value plus `PARQUET_SHARD_OVERHEAD` a shard), plus the manifest. It
errs high: a check that refuses is never wrong about the payload.

Free space is `shutil.disk_usage` of the nearest existing folder above the cache; an object-store
cache (`s3://...`) is not checked (its space is not the machine's).
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from raysae import filesystem
from raysae.activations.cache import read_manifest
from raysae.activations.language_model import hook_activations
from raysae.activations.tokens import contexts_for_tokens
from raysae.config import RaysaeConfig
from raysae.errors import CacheError

log = logging.getLogger("raysae.cache")

ELEMENT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}
"""Bytes a stored activation value takes, by `activations.dtype`."""
PARQUET_VALUE_OVERHEAD = 1 / 16
"""Bytes a value (of any column) adds in levels and page headers; measured about 1/32 (see module)."""
PARQUET_SHARD_OVERHEAD = 1 << 20
"""Bytes a shard adds: its footer and the dictionary pages pyarrow tries first (at most 1 MiB a column)."""
MANIFEST_BYTES = 1 << 20
"""Room for the manifest (its shard list grows with the shards)."""


def measured_widths(model, hooks: list[str]) -> dict[str, int]:
    """Each hook's width, from one forward pass over two tokens."""
    import torch

    tokens = torch.zeros((1, 2), dtype=torch.long)
    return {h: int(a.shape[-1]) for h, a in hook_activations(model, tokens, hooks).items()}


def config_widths(hf, hooks: list[str], d_model: int) -> dict[str, int]:
    """Each hook's width from a model's `config.json`: the MLP's inner width for `mlp.hook_pre` /
    `mlp.hook_post`, else `d_model` (the residual stream, attention and MLP outputs)."""
    inner = int(getattr(hf, "intermediate_size", None) or getattr(hf, "n_inner", None) or 4 * d_model)
    return {h: inner if re.search(r"mlp\.hook_(pre|post)$", h) else d_model for h in hooks}


@dataclass(frozen=True)
class PlannedCache:
    """A cache a command will build (or finish): its folder, hooks in stored order, layout."""

    directory: str
    hooks: list[str]
    layout: str


def cache_bytes(cfg: RaysaeConfig, hooks: Sequence[str], layout: str, widths: Mapping[str, int]) -> int:
    """The estimated bytes on disk of the whole cache of `hooks` (width `widths[hook]` each)."""
    a, d = cfg.activations, cfg.data
    per_value = ELEMENT_BYTES[a.dtype]
    if layout == "tokens":
        rows, positions, extra_per_row = a.n_tokens, 1, 0
        shard_rows = a.shard_rows
    else:  # one row per context: `tokens` int32 [seq] and `context_id` int64
        rows, positions, extra_per_row = a.n_contexts, d.context_size, 4 * d.context_size + 8
        shard_rows = max(1, a.shard_rows // d.context_size)
    values = sum(widths[h] for h in hooks) * positions
    scales = len(hooks) * positions if a.dtype == "int8" else 0
    payload_per_row = values * per_value + 4 * scales + extra_per_row
    values_per_row = values + scales + (positions + 1 if layout != "tokens" else 0)
    per_row = payload_per_row + values_per_row * PARQUET_VALUE_OVERHEAD
    shards = math.ceil(rows / shard_rows)
    return math.ceil(rows * per_row) + shards * PARQUET_SHARD_OVERHEAD + MANIFEST_BYTES


def remaining_bytes(cfg: RaysaeConfig, plan: PlannedCache, widths: Mapping[str, int]) -> int:
    """`cache_bytes` less what an unfinished cache at the folder already holds (its contexts done)."""
    total = cache_bytes(cfg, plan.hooks, plan.layout, widths)
    manifest = read_manifest(plan.directory)
    done = int(manifest["contexts_done"]) if manifest and manifest.get("key") else 0
    if not done:
        return total
    a = cfg.activations
    n = contexts_for_tokens(cfg.data, a.n_tokens) if plan.layout == "tokens" else a.n_contexts
    return math.ceil(total * max(0.0, 1 - done / n))


def free_bytes(directory: str) -> int | None:
    """Free bytes on the disk that would hold `directory` (None: an object store, not checked)."""
    if filesystem.is_remote(directory):
        return None
    here = Path(directory).absolute()
    while not here.exists():
        here = here.parent
    return int(shutil.disk_usage(here).free)


def human(n: int) -> str:
    """Bytes for people: `1.5 GiB`."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def check_disk(cfg: RaysaeConfig, plans: Sequence[PlannedCache], widths: Mapping[str, int]) -> int:
    """Log the size of each cache to build and raise `CacheError` (naming the folders, the bytes
    needed and the bytes free) when their disk cannot hold them all; returns the bytes needed.
    Writes nothing."""
    need = 0
    for plan in plans:
        n = remaining_bytes(cfg, plan, widths)
        need += n
        log.info(
            "cache %s: about %s on disk (%s, %s)",
            plan.directory,
            human(n),
            plan.layout,
            cfg.activations.dtype,
        )
    if not plans:
        return 0
    free = free_bytes(plans[0].directory)
    if free is not None and need > free:
        folders = ", ".join(p.directory for p in plans)
        raise CacheError(
            f"{folders}: building {'this cache' if len(plans) == 1 else 'these caches'} needs about "
            f"{human(need)} ({need} bytes) but the disk of activations.cache_dir="
            f"{cfg.activations.cache_dir} has {human(free)} ({free} bytes) free; nothing was written. "
            "Free some space, lower activations.n_tokens / activations.n_contexts, or store "
            "activations.dtype=bfloat16 (half) or int8 (a quarter)"
        )
    return need
