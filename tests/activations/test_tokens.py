import numpy as np
import pytest

from raysae.activations import pack_contexts
from raysae.activations.language_model import load_tokenizer
from raysae.config import ConfigError


def test_packing_is_deterministic_with_bos(tiny_config):
    cfg = tiny_config()
    tok = load_tokenizer(cfg.model.tokenizer)
    a = pack_contexts(cfg.data, tok, 50)
    assert a.shape == (50, 16) and a.dtype == np.int32
    assert (a[:, 0] == tok.bos_token_id).all() and (a[:, 1:] != tok.bos_token_id).all()
    assert np.array_equal(a, pack_contexts(cfg.data, tok, 50))
    # contexts are consecutive pieces of one token stream, documents joined by EOS
    assert (a[:, 1:] == tok.eos_token_id).sum() >= 1
    other_seed = pack_contexts(tiny_config("data.seed=1").data, tok, 50)
    assert not np.array_equal(a, other_seed)


def test_without_bos(tiny_config):
    cfg = tiny_config("data.prepend_bos=false")
    tok = load_tokenizer(cfg.model.tokenizer)
    a = pack_contexts(cfg.data, tok, 10)
    assert (a != tok.bos_token_id).all()


def test_corpus_errors_name_the_path(tiny_config, tmp_path):
    tok = load_tokenizer(tiny_config().model.tokenizer)
    with pytest.raises(ValueError, match="data.path .*only .* contexts"):
        pack_contexts(tiny_config().data, tok, 100_000)
    with pytest.raises(ConfigError, match="data.path"):
        pack_contexts(tiny_config("data.path=null").data, tok, 1)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ConfigError, match="data.path"):
        pack_contexts(tiny_config(f"data.path={tmp_path / 'x.csv'}").data, tok, 1)
