"""Decoder logit attribution against the model's own final norm and unembedding."""

import torch

from raysae.activations.language_model import load_model
from raysae.analysis.logits import decoder_logits, model_unembedding
from raysae.config import ModelConfig


def test_decoder_logits_rank_tokens_as_norm_then_unembed_does(tokenizer_dir):
    model = load_model(
        ModelConfig(name="random", tokenizer=str(tokenizer_dir), random={"d_model": 32, "n_layers": 1})
    )
    unembed = model_unembedding(model)
    assert unembed.centre  # the random TL-native model has a LayerNorm
    W_dec = torch.randn(20, 32)
    top_ids, top_vals, bottom_ids, bottom_vals = decoder_logits(W_dec, unembed, 5, chunk=7)
    with torch.no_grad():
        # What the model does to a residual vector x, minus what it does to 0: the
        # direction's own effect, scaled by the norm's positive 1/std(x).
        through = model.unembed(model.ln_final(W_dec[:, None])) - model.unembed(
            model.ln_final(torch.zeros(1, 1, 32))
        )
        through = through[:, 0]
    expected = through.topk(5, dim=-1)
    assert (torch.as_tensor(top_ids) == expected.indices).all()
    assert (torch.as_tensor(bottom_ids) == through.topk(5, dim=-1, largest=False).indices).all()
    ratio = expected.values / torch.as_tensor(top_vals)
    assert (ratio > 0).all()
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4, atol=0)
    x = W_dec - W_dec.mean(-1, keepdim=True)
    torch.testing.assert_close(ratio[:, 0], 1 / torch.sqrt(x.pow(2).mean(-1) + 1e-5), rtol=1e-4, atol=0)
