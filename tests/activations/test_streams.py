"""The training stream: seeded epochs of cache shards, restart at a checkpoint's position, held-out shards."""

import numpy as np
import pytest

from raysae.activations.cache import shard_sequence
from raysae.activations.streams import (
    TrainingStream,
    held_out_dataset,
    split_cache,
    stream_rows,
    write_position,
)
from raysae.config import ConfigError


def test_shard_sequence_covers_the_rows_in_fresh_orders_per_epoch():
    shards = [{"file": f"s{i}", "rows": 100} for i in range(5)]
    seq = shard_sequence(shards, seed=3, rows=1250)
    names = [s["file"] for s in seq]
    assert len(names) == 13 and sorted(names[:5]) == sorted(names[5:10]) == [f"s{i}" for i in range(5)]
    assert names[:5] != names[5:10]  # reshuffled per epoch
    assert shard_sequence(shards, seed=3, rows=1250) == seq


def test_the_last_shards_are_held_out(train_config):
    cfg = train_config("split")
    split = split_cache(cfg)
    held = [s["rows"] for s in split.held_out]
    assert sum(held) >= 2048 > sum(held[1:])  # the fewest last shards that cover eval_tokens
    assert split.train + split.held_out == split_cache(cfg, checksums=False).train + split.held_out
    with pytest.raises(
        ConfigError, match=r"train.eval_tokens: holding out 20000 rows of the cache .* leaves no"
    ):
        split_cache(train_config("split", "train.eval_tokens=20000"))


def test_the_stream_restarts_at_the_shard_holding_the_checkpoint(train_config, tmp_path):
    cfg = train_config("stream")
    stream = TrainingStream(cfg, tmp_path)
    full = np.concatenate([b["acts"] for b in stream().iter_batches(batch_size=None, batch_format="numpy")])
    assert len(full) >= stream_rows(cfg)
    rows = [s["rows"] for s in shard_sequence(split_cache(cfg).train, cfg.activations.seed, stream_rows(cfg))]
    starts = np.cumsum([0, *rows])
    write_position(tmp_path, int(starts[2]) + 10)  # inside the third shard
    resumed = np.concatenate(
        [b["acts"] for b in stream().iter_batches(batch_size=None, batch_format="numpy")]
    )
    assert np.array_equal(resumed, full[starts[2] :])
    held = np.concatenate([b["acts"] for b in held_out_dataset(cfg).iter_batches(batch_format="numpy")])
    assert held.shape == (sum(s["rows"] for s in split_cache(cfg).held_out), 32) and not any(
        np.array_equal(held[:1], full[i : i + 1]) for i in range(len(full))
    )
