"""What a training run reads: a training stream that starts at any token position, held-out
rows for evaluation, and contexts for CE-loss recovered.

A resumed run reads on from exactly the token count of the checkpoint it restored
(`training_rows(cfg, tokens)`, built by the workers after restoring), so it trains on
the same rows as an uninterrupted run. Cache shards are read in a seeded order per
epoch; a stream that starts inside a shard skips that shard's first rows. The cache's
last shards are held out.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass

from raysae import filesystem
from raysae.activations.cache import cache_dir, manifest_hooks, read_shards, shard_sequence, verify_cache
from raysae.activations.finite import check_finite_shards
from raysae.activations.generation import live_dataset
from raysae.activations.language_model import tokenizer_for
from raysae.activations.layers import column_groups, training_hooks
from raysae.activations.tokens import contexts_for_tokens, pack_contexts, rows_per_context
from raysae.config import RaysaeConfig
from raysae.errors import ConfigError

log = logging.getLogger("raysae.train")
POSITION_FILE = "position.json"


def read_position(state_dir: filesystem.Location) -> int:
    """Training tokens of the latest committed checkpoint of the run (0 before the first).

    A record for people and tools watching a run (it lags the checkpoints); the stream
    never reads it: it starts at the restored checkpoint's own count."""
    path = filesystem.join(state_dir, POSITION_FILE)
    return int(json.loads(filesystem.read_bytes(path))["tokens"]) if filesystem.exists(path) else 0


def write_position(state_dir: filesystem.Location, tokens: int) -> None:
    filesystem.write_bytes(filesystem.join(state_dir, POSITION_FILE), json.dumps({"tokens": tokens}).encode())


def stream_rows(cfg: RaysaeConfig) -> int:
    """Rows a training stream provides: the budget plus two batches lost to uneven splits."""
    return cfg.train.total_tokens + 2 * cfg.train.batch_size


@dataclass(frozen=True)
class CacheSplit:
    directory: str
    d_model: int
    """Width of the activations."""
    train: list[dict]
    """Manifest entries (`file`, `rows`, ...) of the shards trained on."""
    held_out: list[dict]
    """The last shards, covering at least `train.eval_tokens` rows."""
    columns: tuple[str, ...] = ("acts",)
    """The columns a row carries: `acts` (input hook), and `acts_1` (output hook) when paired;
    in a multi-layer cache (`model.layers`) each holds every layer's hook, [L, d] a row."""

    def dataset(self, shards: list[dict], *, skip_rows: int = 0):
        """`acts` rows of these shards (manifest entries), read in this order, without the
        first shard's first `skip_rows` rows."""
        return read_shards(self.directory, shards, columns=list(self.columns), skip_rows=skip_rows)


def split_cache(cfg: RaysaeConfig, *, checksums: bool = True) -> CacheSplit:
    hooks = training_hooks(cfg)
    directory = cache_dir(cfg, hooks if len(hooks) > 1 else hooks[0], "tokens")
    manifest = verify_cache(directory, checksums=checksums)
    shards = manifest["shards"]
    held, rows = 0, 0
    while rows < cfg.train.eval_tokens and held < len(shards):
        held += 1
        rows += shards[-held]["rows"]
    if held >= len(shards):
        total = sum(s["rows"] for s in shards)
        raise ConfigError(
            [
                (
                    "train.eval_tokens",
                    (
                        f"holding out {cfg.train.eval_tokens} rows of the cache {directory} ({total} rows in "
                        f"{len(shards)} shards) leaves no shard to train on; lower it or raise activations.n_tokens"
                    ),
                )
            ]
        )
    hooks = manifest_hooks(manifest)
    groups = column_groups(hooks)
    if checksums:  # the driver's check, once: name a held-out shard holding NaN or Inf
        per_column = [
            {"name": " / ".join(hooks[i]["name"] for i in idx), "column": column}
            for column, idx in groups.items()
        ]
        check_finite_shards(directory, shards[-held:], manifest["dtype"], per_column)
    columns = tuple(groups)
    return CacheSplit(directory, manifest["d_model"], shards[:-held], shards[-held:], columns)


def training_rows(cfg: RaysaeConfig, position: int = 0):
    """The training stream (`acts` rows) from exactly training token `position` on: live
    contexts, or the cache's training shards in a seeded order per epoch."""
    if cfg.activations.source == "live":
        per_context = rows_per_context(cfg.data)
        first, skip_rows = divmod(position, per_context)
        if position:
            log.info("live stream resumes at token %d: context %d, row %d of it", position, first, skip_rows)
        contexts = range(first, math.ceil(stream_rows(cfg) / per_context))
        return live_dataset(cfg, contexts, skip_rows=skip_rows)
    split = split_cache(cfg, checksums=False)  # the driver verified the checksums
    sequence = shard_sequence(split.train, cfg.activations.seed, stream_rows(cfg))
    start = skip = 0
    while skip < len(sequence) and start + sequence[skip]["rows"] <= position:
        start += sequence[skip]["rows"]
        skip += 1
    if skip == len(sequence):
        raise ValueError(f"token {position} is past the end of the training stream ({start} rows)")
    if position:
        log.info(
            "cache stream resumes at token %d: shard %d of %d, row %d of it",
            position,
            skip,
            len(sequence),
            position - start,
        )
    return split.dataset(sequence[skip:], skip_rows=position - start)


def held_out_dataset(cfg: RaysaeConfig):
    """Held-out `acts` rows: the cache's last shards, or live contexts after the training ones."""
    if cfg.activations.source == "live":
        first = math.ceil(stream_rows(cfg) / rows_per_context(cfg.data))
        n = contexts_for_tokens(cfg.data, cfg.train.eval_tokens)
        return live_dataset(cfg, range(first, first + n)).limit(cfg.train.eval_tokens)
    split = split_cache(cfg)
    return split.dataset(split.held_out)


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
