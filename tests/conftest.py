"""Shared fixtures: one local Ray, a small local corpus with a real word-level tokenizer, planted data."""

import os
import random
import tempfile

# No hub access in tests: everything comes from the repo or from files the tests make.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="raysae-hf-"))

import pytest
import torch

from raysae.config import SAEConfig, TrainConfig
from raysae.synthetic import PlantedDictionary

WORDS = ("the king queen speaks to a fool in castle night storm crown sword love death friend "
         "enemy whispers laughs sleeps dreams of gold and blood under stars while rain falls").split()


def write_corpus(root, n_docs: int, seed: int = 0):
    """`n_docs` text files of random sentences over WORDS (about 330 tokens each)."""
    rng = random.Random(seed)
    for i in range(n_docs):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "." for _ in range(40)]
        (root / f"doc{i:02d}.txt").write_text(" ".join(sentences))
    return root


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """A small local corpus: 12 documents of random sentences."""
    return write_corpus(tmp_path_factory.mktemp("corpus"), 12)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, corpus_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<unk>", "<bos>", "<eos>"])
    tok.train([str(p) for p in sorted(corpus_dir.glob("*.txt"))], trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                      unk_token="<unk>")
    out = tmp_path_factory.mktemp("tokenizer")
    wrapped.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole test run, never a leftover cluster."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    torch.set_num_threads(2)


@pytest.fixture
def planted() -> PlantedDictionary:
    """64-d activations from 128 planted atoms, ~4 active per token, an offset and noise."""
    return PlantedDictionary(d_in=64, n_atoms=128, mean_active=4, seed=1)


def small_sae_config(architecture: str, **kw) -> SAEConfig:
    base = dict(architecture=architecture, d_sae=256, k=4, dead_tokens_threshold=20_000)
    return SAEConfig(**{**base, **kw})


def small_train_config(**kw) -> TrainConfig:
    base = dict(total_tokens=200_000, batch_size=1024, lr=3e-3, log_every_steps=10_000)
    return TrainConfig(**{**base, **kw})
