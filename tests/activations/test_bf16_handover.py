"""A bf16 model's activations reach the cache or the trainer as bf16: no float32 round trip.

Live generation on GPU actors is where this matters (a float32 detour doubles the bytes moved
and adds two casts per value); on the CPU the same code path can be checked exactly: the
stored array is the model's own bf16 tensor, viewed as 16-bit integers, not a converted copy.
"""

import numpy as np
import torch

from raysae.activations.generation import ActivationGenerator, from_storage, to_storage
from raysae.activations.language_model import hook_activations


def test_bf16_activations_are_stored_as_the_models_own_bits(tiny_config):
    cfg = tiny_config("model.dtype=bfloat16", "activations.dtype=bfloat16")
    generator = ActivationGenerator(cfg.model.model_dump(), [cfg.model.hook_point], "bfloat16", threads=1)
    vocab = generator.model.cfg.d_vocab
    tokens = torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0))

    acts = hook_activations(generator.model, tokens, [cfg.model.hook_point])[cfg.model.hook_point]
    assert acts.dtype == torch.bfloat16
    stored = to_storage(acts, "bfloat16")
    assert stored.dtype == np.uint16
    assert np.shares_memory(stored, acts.view(torch.uint16).numpy())  # a view: no cast, no copy

    out = generator({"context_id": np.arange(2), "tokens": tokens.numpy()})
    back = from_storage(out["acts_0"], "bfloat16")
    assert back.dtype == torch.bfloat16
    assert torch.equal(back.view(torch.uint16), acts.view(torch.uint16))  # bit for bit


def test_a_float32_model_into_a_bf16_cache_rounds_once():
    acts = torch.tensor([1.0, 1 + 2**-9, -3.14159], dtype=torch.float32)  # 1 + 2**-9 is not a bf16
    back = from_storage(to_storage(acts, "bfloat16"), "bfloat16")
    assert back.dtype == torch.bfloat16
    assert torch.equal(back, acts.to(torch.bfloat16))
