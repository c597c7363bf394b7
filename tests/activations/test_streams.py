"""The training stream: seeded epochs of cache shards, a start at any token, held-out shards."""

import numpy as np
import pytest

from raysae.activations.cache import shard_sequence
from raysae.activations.streams import held_out_dataset, split_cache, stream_rows, training_rows
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


def rows_of(ds):
    return np.concatenate([b["acts"] for b in ds.iter_batches(batch_size=None, batch_format="numpy")])


def test_the_stream_starts_at_exactly_the_token_asked_for(train_config):
    cfg = train_config("stream")
    full = rows_of(training_rows(cfg))
    assert len(full) >= stream_rows(cfg)
    rows = [s["rows"] for s in shard_sequence(split_cache(cfg).train, cfg.activations.seed, stream_rows(cfg))]
    starts = np.cumsum([0, *rows])
    for position in (int(starts[2]) + 10, int(starts[3]), 2304):  # inside a shard, on a boundary
        assert np.array_equal(rows_of(training_rows(cfg, position)), full[position:]), position
    with pytest.raises(ValueError, match="past the end of the training stream"):
        training_rows(cfg, int(starts[-1]))
    held = rows_of(held_out_dataset(cfg))
    assert held.shape == (sum(s["rows"] for s in split_cache(cfg).held_out), 32) and not any(
        np.array_equal(held[:1], full[i : i + 1]) for i in range(len(full))
    )


def test_the_live_stream_starts_inside_a_context(tiny_config, ray_local):
    cfg = tiny_config("activations.source=live", "train.total_tokens=600", "train.batch_size=50")
    full = rows_of(training_rows(cfg))
    per_context = 15  # 16 tokens, BOS excluded
    assert len(full) >= stream_rows(cfg)
    position = 4 * per_context + 7  # inside the fifth context (each live stream costs a model actor)
    assert np.array_equal(rows_of(training_rows(cfg, position)), full[position:])
