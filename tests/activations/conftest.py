"""`tiny_config`: a tiny random TransformerLens model over the small corpus (tests/conftest.py)."""

import pytest

from raysae.config import load_config


@pytest.fixture
def tiny_config(tmp_path, corpus_dir, tokenizer_dir):
    def make(*overrides):
        return load_config(
            None,
            [
                "name=tiny",
                f"output_dir={tmp_path / 'runs'}",
                "model.name=random",
                f"model.tokenizer={tokenizer_dir}",
                "model.random.d_model=32",
                "model.random.n_layers=3",
                "model.random.n_heads=4",
                "model.hook_point=blocks.1.hook_resid_post",
                f"data.path={corpus_dir}",
                "data.context_size=16",
                f"activations.cache_dir={tmp_path / 'cache'}",
                "activations.n_tokens=1500",
                "activations.n_contexts=24",
                "activations.shard_rows=128",
                "activations.model_batch_size=4",
                "activations.shuffle_buffer_shards=2",
                *overrides,
            ],
        )

    return make


def crash_at_second_flush(monkeypatch, *, debris: bool = False):
    """Make `CacheBuilder.flush` raise KeyboardInterrupt right after its second flush (with
    `debris`, leaving a half-written shard behind, as a crash would); returns what undoes it."""
    from raysae import filesystem
    from raysae.activations import cache_writer

    real_flush = cache_writer.CacheBuilder.flush
    calls = {"n": 0}

    def crashing_flush(self):
        real_flush(self)
        calls["n"] += 1
        if calls["n"] == 2:
            if debris:
                filesystem.write_bytes(filesystem.join(self.dir, "shard-99999.parquet"), b"half-written")
            raise KeyboardInterrupt

    monkeypatch.setattr(cache_writer.CacheBuilder, "flush", crashing_flush)
    return lambda: monkeypatch.setattr(cache_writer.CacheBuilder, "flush", real_flush)
