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
