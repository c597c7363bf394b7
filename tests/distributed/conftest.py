"""A tiny activation cache (random 2-layer model, 16k tokens) shared by the training tests."""

import pytest

from raysae.config import load_config
from tests.conftest import write_corpus


@pytest.fixture(scope="session")
def train_config(tmp_path_factory, tokenizer_dir, ray_local):
    """`make(name, *overrides)`: a config training a small TopK SAE on the shared tiny cache."""
    from raysae.activations import generate_caches

    root = tmp_path_factory.mktemp("training")
    corpus = write_corpus(root / "corpus", 80, seed=1) if (root / "corpus").mkdir() is None else None

    def make(name, *overrides):
        return load_config(None, [
            f"name={name}", f"output_dir={root / 'runs'}",
            "model.name=random", f"model.tokenizer={tokenizer_dir}",
            "model.random.d_model=32", "model.random.n_layers=2", "model.random.n_heads=4",
            "model.hook_point=blocks.1.hook_resid_post",
            f"data.path={corpus}", "data.context_size=16",
            f"activations.cache_dir={root / 'cache'}", "activations.n_tokens=16384",
            "activations.shard_rows=1024", "activations.model_batch_size=64",
            "sae.expansion_factor=4", "sae.k=4", "sae.dead_tokens_threshold=4096",
            "train.total_tokens=8192", "train.batch_size=256", "train.lr=0.003", "train.init_tokens=1024",
            "train.eval_tokens=2048", "train.ce_contexts=4", "train.log_every_steps=8",
            "train.checkpoint_every_tokens=2048",
            *overrides,
        ])

    generate_caches(make("cache"))
    return make
