"""The crosscoder (`raysae.models.crosscoder`): one dictionary read from and written to L layers.

Recovery: 4 layers of 32-d activations from 64 planted atoms, each one unit direction over all
layers' dimensions concatenated, ~4 active per token (`raysae.synthetic.PlantedCrosscoder`); a
crosscoder of 128 features, k = 4. Measured (topk, raysae's SAETrainer, lr 3e-3): 95 % of the
atoms matched at cosine 0.9 after 100k tokens, 100 % after 200k (and 100 % after 200k with 96
atoms and 192 features), so the test trains 200k tokens and asks for the issue's 90 %.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from raysae.config import SAEConfig
from raysae.errors import ConfigError
from raysae.models import Crosscoder, build_sae, merge_states, split_state
from raysae.models.topk import topk_relu
from raysae.synthetic import PlantedCrosscoder, recovery
from tests.models.test_clt import check_sharded_equals_unsharded, shard_models, train

L, D = 3, 8


def crosscoder_config(**kw) -> SAEConfig:
    base = dict(kind="crosscoder", architecture="topk", d_sae=16, k=3, dead_tokens_threshold=20_000)
    return SAEConfig(**{**base, **kw})


def random_crosscoder(seed: int = 0, **kw) -> Crosscoder:
    """A small crosscoder with random biases and per-layer scales."""
    model = build_sae(crosscoder_config(**kw), D, n_layers=L)
    assert isinstance(model, Crosscoder)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.b_enc.copy_(0.1 * torch.randn(model.b_enc.shape, generator=gen))
        model.b_dec.copy_(torch.randn(model.b_dec.shape, generator=gen))
        model.input_scale.copy_(0.5 + torch.rand(L, generator=gen))
        model.output_scale.copy_(model.input_scale)
    return model


def inputs(n: int = 32, seed: int = 1) -> Tensor:
    return torch.randn(n, L, D, generator=torch.Generator().manual_seed(seed))


def test_a_crosscoder_recovers_a_planted_shared_dictionary():
    planted = PlantedCrosscoder(4, 32, 64, mean_active=4, seed=1)
    model = build_sae(crosscoder_config(d_sae=128, k=4), 32, n_layers=4)
    train(model, planted.batches(1024, 200_000, seed=2), 200_000)
    assert recovery(model.W_dec.flatten(1), planted.atoms.flatten(1), threshold=0.9) >= 0.9
    x = planted.sample(4096, torch.Generator().manual_seed(3))
    with torch.no_grad():
        l0 = (model.encode(x) > 0).sum(-1).float().mean()
        fvu = model.mse_per_layer(x) / (x - x.mean(0)).pow(2).sum(-1).mean(0)
    assert 3.0 <= l0 <= 4.0
    assert (fvu < 0.2).all(), fvu


def test_parameters_and_the_forward_pass_are_the_crosscoder_formula():
    model = random_crosscoder()
    assert model.W_enc.shape == (L, D, 16) and model.b_enc.shape == (16,)
    assert model.W_dec.shape == (16, L, D) and model.b_dec.shape == (L, D)
    assert model.tokens_since_fired.shape == (16,) and not model.is_transcoder
    torch.testing.assert_close(model.W_dec.flatten(1).norm(dim=1), torch.ones(16))
    x = inputs()
    s = model.input_scale
    pre = sum(x[:, i] * s[i] @ model.W_enc[i] for i in range(L)) + model.b_enc
    acts = topk_relu(pre, 3)
    expected = torch.stack([(acts @ model.W_dec[:, i] + model.b_dec[i]) / s[i] for i in range(L)], 1)
    out = model(x, torch.zeros(1))  # the target is the input: the argument is ignored
    assert out.dense_acts is not None and out.dense_acts.shape == (32, 16)
    torch.testing.assert_close(out.dense_acts, acts)
    torch.testing.assert_close(out.reconstruction, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.decode(model.encode(x)), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.reconstruct(x), expected, atol=1e-5, rtol=1e-5)
    x_n, recon_n = x * s[:, None], expected * s[:, None]
    torch.testing.assert_close(out.mse_loss, (recon_n - x_n).pow(2).sum((1, 2)).mean())
    torch.testing.assert_close(model.mse_per_layer(x), (recon_n - x_n).pow(2).sum(-1).mean(0))


def test_initialisation_sets_per_layer_scales_and_fold_keeps_outputs():
    model = build_sae(crosscoder_config(architecture="jumprelu"), D, n_layers=L)
    x = inputs(256) * torch.tensor([1.0, 5.0, 0.2])[:, None]
    model.initialize_from_batch(x)
    norms = (x * model.input_scale[:, None]).norm(dim=-1).mean(0)
    torch.testing.assert_close(norms, torch.full((L,), D**0.5))
    torch.testing.assert_close(model.output_scale, model.input_scale)
    with torch.no_grad():
        model.threshold.fill_(0.2)
    acts, recon = model.encode(x), model.reconstruct(x)
    assert (acts > 0).any()
    model.fold_input_scale()
    torch.testing.assert_close(model.encode(x), acts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.reconstruct(x), recon, atol=1e-4, rtol=1e-5)


def test_jumprelu_threshold_gradient_is_finite():
    model = random_crosscoder(architecture="jumprelu", jumprelu_init_threshold=0.3, l0_coefficient=0.1)
    out = model(inputs(256))
    out.loss.backward()
    assert model.threshold.grad is not None and model.threshold.grad.shape == (16,)
    assert torch.isfinite(model.threshold.grad).all() and model.threshold.grad.abs().sum() > 0


def test_build_sae_refuses_a_crosscoder_without_layers():
    with pytest.raises(ConfigError, match="model.layers"):
        build_sae(crosscoder_config(), D)
    with pytest.raises(ConfigError, match="sae.architecture"):
        build_sae(crosscoder_config(architecture="standard"), D, n_layers=L)


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "jumprelu"])
def test_a_sharded_crosscoder_is_the_unsharded_crosscoder(architecture):
    settings = dict(jumprelu_init_threshold=0.2) if architecture == "jumprelu" else dict(k_aux=5)
    full = random_crosscoder(architecture=architecture, **settings)
    models = shard_models(full, 2, lambda i: build_sae(full.cfg, D, n_layers=L, shard=(i, 2)))
    assert models[1].W_dec.shape == (8, L, D) and models[1].W_enc.shape == (L, D, 8)
    dead = torch.rand(16, generator=torch.Generator().manual_seed(5)) < 0.5
    check_sharded_equals_unsharded(full, models, inputs(48), None, dead)
    merged = merge_states([m.state_dict() for m in models])
    for key, value in full.state_dict().items():
        torch.testing.assert_close(merged[key], value)
    assert [s["b_enc"].shape for s in split_state(full.state_dict(), 4)] == [(4,)] * 4
