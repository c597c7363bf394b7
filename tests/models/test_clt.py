"""The cross-layer transcoder (`raysae.models.clt`) and the feature-sharding pieces it shares
with the crosscoder (`raysae.models.multilayer`).

Recovery: 4 layers of 32-d inputs and targets, 32 planted features per layer, ~3 active per
layer per token, each writing one unit direction over its own layer and a random half of the
later ones (`raysae.synthetic.PlantedCrossLayer`); a CLT of 64 features per layer, k = 3.
Measured (topk, raysae's SAETrainer, lr 3e-3): 80 % of the planted atoms matched at cosine 0.9
after 150k tokens, 92 % after 250k, 100 % after 300k, so the test trains 300k tokens and asks
for the issue's 90 %. With `topk_scope: model` it matched 87 % after 250k.

Sharding is checked in one process: the shard models of one unsharded model (`split_state`)
run their forward passes in threads that meet at a barrier (`ThreadComm`: gather and reduce over
the threads, reduce's backward the identity, as the torch.distributed one), and their loss,
reconstruction and gradients must be the unsharded model's.
"""

from __future__ import annotations

import threading

import pytest
import torch
from torch import Tensor

from raysae.config import SAEConfig, TrainConfig
from raysae.errors import ConfigError
from raysae.models import CrossLayerTranscoder, build_sae, merge_states, select_topk, split_state
from raysae.models.multilayer import Unsharded
from raysae.models.topk import topk_relu
from raysae.synthetic import PlantedCrossLayer, cross_layer_recovery
from raysae.training.step import SAETrainer

L, D_IN, D_OUT = 4, 8, 6


def clt_config(**kw) -> SAEConfig:
    base = dict(kind="clt", architecture="topk", d_sae=16, k=2, dead_tokens_threshold=20_000)
    return SAEConfig(**{**base, **kw})


def random_clt(seed: int = 0, **kw) -> CrossLayerTranscoder:
    """A small CLT with random biases, scales and skip, so that no term is trivially zero."""
    clt = build_sae(clt_config(**kw), D_IN, D_OUT, n_layers=L)
    assert isinstance(clt, CrossLayerTranscoder)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        clt.b_enc.copy_(0.1 * torch.randn(clt.b_enc.shape, generator=gen))
        clt.b_dec.copy_(torch.randn(clt.b_dec.shape, generator=gen))
        clt.input_scale.copy_(0.5 + torch.rand(L, generator=gen))
        clt.output_scale.copy_(0.5 + torch.rand(L, generator=gen))
        if clt.W_skip is not None:
            clt.W_skip.copy_(0.1 * torch.randn(clt.W_skip.shape, generator=gen))
    return clt


def batch(n: int = 32, seed: int = 1) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, L, D_IN, generator=gen), torch.randn(n, L, D_OUT, generator=gen)


def train(sae, batches, tokens: int):
    """raysae's own optimisation step (SAETrainer) on `[rows, L, d]` batches. `fit` is not used:
    its loop checks batches are `[rows, d]` (raysae.training.batch.check_batch)."""
    torch.set_num_threads(1)  # tiny matmuls: a second thread only contends on a busy machine
    trainer = SAETrainer(
        sae, TrainConfig(total_tokens=tokens, batch_size=1024, lr=3e-3, log_every_steps=10_000)
    )
    for i, b in enumerate(batches):
        if i == 0:
            sae.initialize_from_batch(*(b if isinstance(b, tuple) else (b,)))
        trainer.step(b)
    assert trainer.done
    sae.fold_input_scale()
    sae.eval()
    return sae


# --- recovery -----------------------------------------------------------------------------
def test_a_clt_recovers_a_planted_cross_layer_structure():
    planted = PlantedCrossLayer(4, 32, 32, 32, mean_active=3, seed=1)
    clt = build_sae(clt_config(d_sae=64, k=3), 32, 32, n_layers=4)
    train(clt, planted.batches(1024, 300_000, seed=2), 300_000)
    assert cross_layer_recovery(list(clt.W_dec), planted.out_atoms, threshold=0.9) >= 0.9
    x, y = planted.sample(4096, torch.Generator().manual_seed(3))
    with torch.no_grad():
        per_layer_l0 = (clt.encode(x) > 0).sum(-1).float().mean(0)
        fvu = clt.mse_per_layer(x, y) / (y - y.mean(0)).pow(2).sum(-1).mean(0)
    assert ((per_layer_l0 > 2.0) & (per_layer_l0 <= 3.0)).all(), per_layer_l0
    assert (fvu < 0.2).all(), fvu


# --- shapes, causality and the forward pass --------------------------------------------------
def reference_forward(clt: CrossLayerTranscoder, x: Tensor) -> Tensor:
    """The CLT's prediction written out layer by layer (raw units), independently of its code."""
    s, t = clt.input_scale, clt.output_scale
    out = []
    acts = [topk_relu(x[:, i] * s[i] @ clt.W_enc[i] + clt.b_enc[i], clt.cfg.k) for i in range(L)]
    for target in range(L):
        y = clt.b_dec[target] + sum(acts[i] @ clt.W_dec[i][:, target - i] for i in range(target + 1))
        if clt.W_skip is not None:
            y = y + x[:, target] * s[target] @ clt.W_skip[target].T
        out.append(y / t[target])
    return torch.stack(out, 1)


def test_parameters_have_the_circuit_tracer_layout():
    clt = build_sae(clt_config(skip_connection=True, architecture="jumprelu"), D_IN, D_OUT, n_layers=L)
    assert clt.W_enc.shape == (L, D_IN, 16) and clt.b_enc.shape == (L, 16)
    assert [tuple(w.shape) for w in clt.W_dec] == [(16, L - i, D_OUT) for i in range(L)]
    assert clt.b_dec.shape == (L, D_OUT) and clt.W_skip is not None and clt.W_skip.shape == (L, D_OUT, D_IN)
    assert clt.threshold.shape == (L, 16) and clt.tokens_since_fired.shape == (L, 16)
    for w in clt.W_dec:  # unit norm over the concatenated target layers
        torch.testing.assert_close(w.flatten(1).norm(dim=1), torch.ones(16))


@pytest.mark.parametrize("skip", [False, True])
def test_the_forward_pass_is_the_layer_by_layer_formula(skip):
    clt = random_clt(skip_connection=skip)
    x, y = batch()
    out = clt(x, y)
    expected = reference_forward(clt, x)
    torch.testing.assert_close(out.reconstruction, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(clt.reconstruct(x), expected, atol=1e-5, rtol=1e-5)
    assert out.dense_acts is not None and out.dense_acts.shape == (32, L, 16)
    y_n, recon_n = y * clt.output_scale[:, None], expected * clt.output_scale[:, None]
    torch.testing.assert_close(out.mse_loss, (recon_n - y_n).pow(2).sum((1, 2)).mean())
    torch.testing.assert_close(clt.mse_per_layer(x, y), (recon_n - y_n).pow(2).sum(-1).mean(0))
    if not skip:
        torch.testing.assert_close(clt.decode(clt.encode(x)), clt.reconstruct(x))


@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "jumprelu"])
def test_layer_by_layer_encode_and_decode_are_the_whole_forward(architecture):
    clt = random_clt(skip_connection=True, architecture=architecture, jumprelu_init_threshold=0.2)
    clt.eval()
    if architecture == "batchtopk":
        with torch.no_grad():
            clt.batch_threshold.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    x, _ = batch()
    acts = [clt.encode_layer(x[:, i], i) for i in range(L)]
    torch.testing.assert_close(torch.stack(acts, 1), clt.encode(x))
    assert torch.stack(acts).count_nonzero() > 0
    recon = torch.stack([clt.decode_layer(acts[: t + 1], t, x[:, t]) for t in range(L)], 1)
    torch.testing.assert_close(recon, clt.reconstruct(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="topk_scope"):
        random_clt(topk_scope="model").encode_layer(x[:, 0], 0)


def test_no_feature_writes_a_layer_before_its_own():
    clt = random_clt(skip_connection=True)
    x, _ = batch(4)
    x.requires_grad_(True)
    recon = clt.reconstruct(x)
    for target in range(L):
        (grad,) = torch.autograd.grad(recon[:, target].sum(), x, retain_graph=True)
        per_layer = grad.abs().sum((0, 2))
        assert (per_layer[target + 1 :] == 0).all(), (target, per_layer)
        assert (per_layer[: target + 1] > 0).all(), (target, per_layer)
    acts = torch.zeros(1, L, 16)
    acts[0, 2, 5] = 1.0  # one feature of layer 2
    written = clt.decode_partial(acts)[0].abs().sum(-1)
    assert (written[:2] == 0).all() and (written[2:] > 0).all()


def test_fold_input_scale_keeps_features_and_outputs():
    for architecture in ("topk", "jumprelu"):
        clt = random_clt(skip_connection=True, architecture=architecture)
        x, _ = batch()
        acts, recon = clt.encode(x), clt.reconstruct(x)
        clt.fold_input_scale()
        assert (clt.input_scale == 1).all() and (clt.output_scale == 1).all()
        torch.testing.assert_close(clt.encode(x), acts, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(clt.reconstruct(x), recon, atol=1e-5, rtol=1e-5)


def test_whole_model_topk_keeps_k_times_layers_per_token():
    clt = random_clt(topk_scope="model", k=3)
    with torch.no_grad():
        clt.b_enc.fill_(100.0)  # every pre-activation positive, so ReLU drops none of the picks
    x, y = batch(64)
    acts = clt(x, y).feature_acts
    per_layer = (acts > 0).sum(-1)
    assert ((acts > 0).sum((1, 2)) == 3 * L).all()
    assert (per_layer != 3).any()  # chosen jointly: layers get different counts
    pre = clt.pre_activation(x * clt.input_scale[:, None])
    torch.testing.assert_close(acts, topk_relu(pre.flatten(1), 3 * L).view_as(pre))


@pytest.mark.parametrize("scope", ["layer", "model"])
def test_batchtopk_keeps_k_per_layer_on_average_and_infers_with_its_threshold(scope):
    clt = random_clt(architecture="batchtopk", k=2, topk_scope=scope)
    with torch.no_grad():
        clt.b_enc.fill_(100.0)  # every pre-activation positive, so ReLU drops none of the picks
    x, y = batch(64)
    out = clt(x, y)
    per_layer = (out.feature_acts > 0).sum((0, 2))  # over the batch
    pre = clt.pre_activation(x * clt.input_scale[:, None])
    if scope == "layer":
        assert (per_layer == 2 * 64).all()
        expected = topk_relu(pre.transpose(0, 1).reshape(L, -1), 2 * 64).view(L, 64, 16).transpose(0, 1)
    else:
        assert per_layer.sum() == 2 * 64 * L and (per_layer != 2 * 64).any()
        expected = topk_relu(pre.reshape(1, -1), 2 * 64 * L).view_as(pre)
    torch.testing.assert_close(out.feature_acts, expected)
    clt.update_running_state(clt.step_statistics(out), tokens=64)  # first update: the batch's minimum
    acts = out.feature_acts.detach()
    if scope == "layer":
        smallest = torch.where(acts > 0, acts, float("inf")).amin((0, 2))
    else:
        smallest = torch.where(acts > 0, acts, float("inf")).min().reshape(1)
    torch.testing.assert_close(clt.batch_threshold, smallest)
    clt.eval()
    shape = (1, L, 1) if scope == "layer" else (1,)
    torch.testing.assert_close(clt.encode(x), pre.relu() * (pre > smallest.view(shape)))


def test_jumprelu_threshold_gradient_is_finite_and_penalty_counts_every_layer():
    clt = random_clt(architecture="jumprelu", jumprelu_init_threshold=0.5, l0_coefficient=0.1)
    x, y = batch(256)
    out = clt(x, y)
    pre = clt.pre_activation(x * clt.input_scale[:, None])
    torch.testing.assert_close(out.sparsity_loss, 0.1 * (pre > 0.5).sum((1, 2)).float().mean())
    out.loss.backward()
    assert clt.threshold.grad is not None and clt.threshold.grad.shape == (L, 16)
    assert torch.isfinite(clt.threshold.grad).all() and clt.threshold.grad.abs().sum() > 0


def test_auxk_fits_the_residual_with_dead_features_only():
    clt = random_clt(k_aux=4)
    x, y = batch()
    dead = torch.zeros(L, 16, dtype=torch.bool)
    dead[1, :8] = True
    out = clt(x, y, dead_mask=dead)
    assert out.aux_loss > 0
    out.aux_loss.backward()
    grad = clt.W_dec[1].grad
    assert grad is not None and grad[8:].abs().sum() == 0 and grad[:8].abs().sum() > 0
    assert clt.W_dec[0].grad is None or clt.W_dec[0].grad.abs().sum() == 0
    assert clt(x, y, dead_mask=torch.zeros_like(dead)).aux_loss == 0


def test_running_state_and_decoder_constraint():
    clt = random_clt()
    x, y = batch()
    out = clt(x, y)
    stats = clt.step_statistics(out)
    clt.update_running_state(stats, tokens=30_000)
    fired = (out.feature_acts > 0).any(0)
    assert (clt.dead_mask() == ~fired).all()
    out.loss.backward()
    clt.remove_parallel_grad()
    for w in clt.W_dec:  # no gradient along the (unit-norm) decoder of any feature
        assert w.grad is not None
        torch.testing.assert_close((w.grad * w).sum((1, 2)), torch.zeros(16), atol=1e-6, rtol=0)
        with torch.no_grad():
            w.mul_(3.0)
    clt.after_optimizer_step(torch.tensor(False))
    assert all(torch.allclose(w.flatten(1).norm(dim=1), torch.full((16,), 3.0)) for w in clt.W_dec)
    clt.after_optimizer_step()
    assert all(torch.allclose(w.flatten(1).norm(dim=1), torch.ones(16)) for w in clt.W_dec)


def test_build_sae_refuses_what_it_cannot_build():
    with pytest.raises(ConfigError, match="model.layers"):
        build_sae(clt_config(), D_IN, D_OUT)
    for architecture in ("standard", "gated", "matryoshka_batchtopk"):
        with pytest.raises(ConfigError, match="sae.architecture"):
            build_sae(clt_config(architecture=architecture), D_IN, D_OUT, n_layers=L)
    with pytest.raises(ConfigError, match="sae.d_sae"):
        build_sae(clt_config(), D_IN, D_OUT, n_layers=L, shard=(0, 3))
    with pytest.raises(ValueError, match=r"\[batch, 4 layers, 8\]"):
        build_sae(clt_config(), D_IN, D_OUT, n_layers=L)(torch.zeros(2, 3, D_IN), torch.zeros(2, 3, D_OUT))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("architecture", ["topk", "batchtopk", "jumprelu"])
def test_the_trainer_steps_a_clt(architecture, precision):
    clt = build_sae(clt_config(architecture=architecture, skip_connection=True), D_IN, D_OUT, n_layers=L)
    trainer = SAETrainer(
        clt, TrainConfig(total_tokens=4096, batch_size=64, precision=precision, k_anneal_fraction=0.5)
    )
    x, y = batch(64)
    clt.initialize_from_batch(x, y)
    before = [p.detach().clone() for p in clt.parameters()]
    metrics = [trainer.step((x, y)) for _ in range(3)]
    assert all(torch.isfinite(m.loss) for m in metrics)
    assert clt.k == (None if architecture == "jumprelu" else 8)  # annealing from 4 * k
    assert all(not torch.equal(b, p) for b, p in zip(before, clt.parameters(), strict=True))
    assert (clt.tokens_since_fired.max() <= 3 * 64) and clt.tokens_since_fired.shape == (L, 16)


# --- feature sharding ---------------------------------------------------------------------------
class _SumOverShards(torch.autograd.Function):
    """The sum the threads computed; the backward is the identity for this shard's part."""

    @staticmethod
    def forward(ctx, local: Tensor, total: Tensor) -> Tensor:
        return total.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


class ThreadComm:
    """A `FeatureComm` over threads of one process: every shard's thread deposits its tensor,
    all meet at a barrier, and each reads what all deposited."""

    def __init__(self, hub: dict, index: int):
        self.hub, self.index, self.shards = hub, index, hub["shards"]

    def _exchange(self, t: Tensor) -> list[Tensor]:
        self.hub["slots"][self.index] = t.detach()
        self.hub["barrier"].wait()
        everyone = list(self.hub["slots"])
        self.hub["barrier"].wait()  # nobody overwrites a slot before all have read it
        return everyone

    def gather(self, t: Tensor) -> Tensor:
        return torch.cat(self._exchange(t), -1)

    def reduce(self, t: Tensor) -> Tensor:
        return _SumOverShards.apply(t, torch.stack(self._exchange(t)).sum(0))


def run_sharded(models: list, call) -> list:
    """`call(model)` for each shard model in its own thread, the threads talking through
    `ThreadComm`; returns the results in shard order (re-raising a thread's error)."""
    hub = {
        "shards": len(models),
        "slots": [None] * len(models),
        "barrier": threading.Barrier(len(models), timeout=60),
    }
    results: list = [None] * len(models)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        models[i].comm = ThreadComm(hub, i)
        try:
            results[i] = call(models[i])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)
            hub["barrier"].abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(models))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def shard_models(full, shards: int, build) -> list:
    """The `shards` feature shards of `full`, each loaded from `split_state` of its state."""
    models = []
    for index, state in enumerate(split_state(full.state_dict(), shards)):
        model = build(index)
        model.load_state_dict(state)
        models.append(model)
    return models


def check_sharded_equals_unsharded(full, shards: list, x: Tensor, y: Tensor | None, dead: Tensor) -> None:
    """Loss, reconstruction, activations and every gradient of the shards = the unsharded model's."""

    def step(model):
        model.zero_grad()
        feature_dim = model.tokens_since_fired.ndim - 1
        n = model.n_local
        out = model(x, y, dead_mask=dead.narrow(feature_dim, model.shard_index * n, n))
        out.loss.backward()
        return out

    expected = step(full)
    outs = run_sharded(shards, step)
    # the AuxK term (topk) or the L0 penalty (jumprelu) is compared too
    assert expected.aux_loss > 0 or expected.sparsity_loss > 0
    for out in outs:
        for name in ("loss", "mse_loss", "sparsity_loss", "aux_loss", "reconstruction"):
            torch.testing.assert_close(getattr(out, name), getattr(expected, name), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([o.feature_acts for o in outs], -1), expected.feature_acts)
    grads = {name: p.grad for name, p in full.named_parameters()}
    shard_grads = split_state(grads, len(shards))
    for model, want in zip(shards, shard_grads, strict=True):
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, want[name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("shards", [2, 4])
@pytest.mark.parametrize("scope", ["layer", "model"])
def test_select_topk_over_shards_is_the_unsharded_topk(shards, scope):
    pre = torch.randn(64, L, 16, generator=torch.Generator().manual_seed(0))
    width = 16 // shards
    local = [pre[..., i * width : (i + 1) * width] for i in range(shards)]  # each shard's features
    if scope == "model":  # k * L over all layers' features, as the CLT flattens them
        k, local, expected = (
            3 * L,
            [t.flatten(1) for t in local],
            topk_relu(pre.flatten(1), 3 * L).view_as(pre),
        )
    else:
        k, expected = 3, topk_relu(pre, 3)
    candidates = torch.cat([t.topk(min(k, t.shape[-1]), -1).values for t in local], -1)

    class Precomputed(Unsharded):
        """What gather returns when every shard contributed its candidates."""

        def gather(self, t: Tensor) -> Tensor:
            return candidates

    comm = Precomputed()
    comm.shards = shards
    merged = torch.cat([select_topk(t, k, comm).view(64, L, width) for t in local], -1)
    torch.testing.assert_close(merged, expected)


def test_split_and_merge_states_round_trip_and_shards_build_their_slices():
    full = build_sae(clt_config(skip_connection=True, architecture="jumprelu"), D_IN, D_OUT, n_layers=L)
    state = full.state_dict()
    parts = split_state(state, 4)
    assert parts[1]["W_enc"].shape == (L, D_IN, 4) and parts[1]["W_dec.2"].shape == (4, 2, D_OUT)
    assert parts[1]["threshold"].shape == (L, 4) and parts[1]["b_dec"].shape == (L, D_OUT)
    merged = merge_states(parts)
    assert merged.keys() == state.keys()
    for key in state:
        torch.testing.assert_close(merged[key], state[key])
    for index in range(4):  # a shard built directly starts as its slice of the unsharded model
        shard = build_sae(full.cfg, D_IN, D_OUT, n_layers=L, shard=(index, 4))
        for key, value in shard.state_dict().items():
            torch.testing.assert_close(value, parts[index][key], msg=key)


@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(topk_scope="model"),
        dict(architecture="batchtopk"),
        dict(architecture="jumprelu", jumprelu_init_threshold=0.3),
    ],
    ids=["topk", "topk-model", "batchtopk", "jumprelu"],
)
def test_a_sharded_clt_is_the_unsharded_clt(settings):
    full = random_clt(skip_connection=True, k_aux=5, **settings)
    models = shard_models(full, 4, lambda i: build_sae(full.cfg, D_IN, D_OUT, n_layers=L, shard=(i, 4)))
    x, y = batch(48)
    dead = torch.rand(L, 16, generator=torch.Generator().manual_seed(5)) < 0.5
    check_sharded_equals_unsharded(full, models, x, y, dead)
    if full.architecture == "batchtopk":  # the inference threshold's statistics too
        expected = full.step_statistics(full(x, y))
        n = full.n_local // 4 * L
        stats = run_sharded(models, lambda m: m.step_statistics(m(x, y)))
        for index, got in enumerate(stats):
            torch.testing.assert_close(got[n:], expected[-2 * L :])
            fired = expected[: 16 * L].view(L, 16)[:, index * 4 : (index + 1) * 4].reshape(-1)
            torch.testing.assert_close(got[:n], fired)


@pytest.mark.parametrize(
    "settings",
    [
        dict(architecture="topk"),
        dict(architecture="topk", topk_scope="model"),
        dict(architecture="batchtopk"),
    ],
    ids=["topk", "topk-model", "batchtopk"],
)
def test_the_sparse_decode_is_the_dense_decode_with_the_same_gradients(settings):
    # d_sae 16, k 2: few enough kept features that the sparse path is taken (4 n <= F).
    x, y = batch()
    dead = torch.rand(L, 16, generator=torch.Generator().manual_seed(3)) < 0.5  # AuxK decodes k_aux
    grads = []
    for sparse in (True, False):
        clt = random_clt(**settings, k_aux=3)
        clt.sparse_decode = sparse
        clt.train()
        out = clt(x, y, dead_mask=dead)
        assert out.aux_loss > 0
        out.loss.backward()
        acts = out.feature_acts.detach()
        grads.append((out.reconstruction.detach(), {n: p.grad.clone() for n, p in clt.named_parameters()}))
        if sparse:
            assert clt._kept(acts[:, 0]) is not None  # the sparse path really ran
    (r_sparse, g_sparse), (r_dense, g_dense) = grads
    torch.testing.assert_close(r_sparse, r_dense, rtol=1e-5, atol=1e-5)
    for name in g_dense:
        torch.testing.assert_close(g_sparse[name], g_dense[name], rtol=1e-5, atol=1e-6, msg=name)


def test_jumprelu_decodes_densely():
    # Its threshold gradient reads the features' gradient near the threshold, kept or not.
    clt = random_clt(architecture="jumprelu")
    assert clt._kept(torch.ones(4, clt.n_local), 1) is None
