"""A tiny random TransformerLens model, a real word-level tokenizer and a small local corpus."""

import random

import pytest

from raysae.config import load_config

WORDS = ("the king queen speaks to a fool in castle night storm crown sword love death friend "
         "enemy whispers laughs sleeps dreams of gold and blood under stars while rain falls").split()


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("corpus")
    for i in range(12):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "." for _ in range(40)]
        (root / f"doc{i:02d}.txt").write_text(" ".join(sentences))
    return root


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


@pytest.fixture
def tiny_config(tmp_path, corpus_dir, tokenizer_dir):
    def make(*overrides):
        return load_config(None, [
            "name=tiny", f"output_dir={tmp_path / 'runs'}",
            "model.name=random", f"model.tokenizer={tokenizer_dir}",
            "model.random.d_model=32", "model.random.n_layers=3", "model.random.n_heads=4",
            "model.hook_point=blocks.1.hook_resid_post",
            f"data.path={corpus_dir}", "data.context_size=16",
            f"activations.cache_dir={tmp_path / 'cache'}", "activations.n_tokens=1500",
            "activations.n_contexts=24", "activations.shard_rows=128", "activations.model_batch_size=4",
            "activations.shuffle_buffer_shards=2",
            *overrides,
        ])
    return make
