import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from raysae import ConfigError, build_sae
from raysae.config import SAEConfig
from raysae.models import ARCHITECTURES, ForwardOutput, geometric_median
from tests.conftest import small_sae_config


def test_registry_uses_saelens_names():
    assert set(ARCHITECTURES) == {
        "standard",
        "topk",
        "batchtopk",
        "jumprelu",
        "matryoshka_batchtopk",
        "gated",
    }


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_init_encoder_is_decoder_transpose_with_unit_rows(architecture):
    sae = build_sae(SAEConfig(architecture=architecture, expansion_factor=4), 16)
    assert sae.W_enc.shape == (16, 64) and sae.W_dec.shape == (64, 16)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64))
    assert torch.equal(sae.W_enc, sae.W_dec.T)


def test_build_checks_width():
    with pytest.raises(ConfigError, match="sae.k: k=100 is larger than d_sae=64"):
        build_sae(SAEConfig(k=100, expansion_factor=4), 16)
    with pytest.raises(ConfigError, match="sae.d_in"):
        build_sae(SAEConfig(d_in=32), 16)


@pytest.mark.parametrize(
    "architecture, sparsity",
    [
        ("topk", "k=8"),
        ("batchtopk", "k=8, threshold=0"),
        ("jumprelu", "threshold_mean=0.01, l0_coefficient=1.0"),
        ("standard", "l1_coefficient=5.0"),
    ],
)
def test_repr_says_what_the_sae_is(architecture, sparsity):
    sae = build_sae(SAEConfig(architecture=architecture, expansion_factor=4, k=8), 16)
    name = type(sae).__name__
    assert repr(sae) == f"{name}(architecture='{architecture}', d_in=16, d_sae=64, dtype=float32, {sparsity})"


def test_geometric_median_minimises_summed_distance():
    gen = torch.Generator().manual_seed(0)
    pts = torch.randn(300, 5, generator=gen, dtype=torch.float64)
    pts[:30] += 20.0  # outliers pull the mean, not the median
    ours = geometric_median(pts).numpy()

    def objective(y):
        return np.linalg.norm(pts.numpy() - y, axis=1).sum()

    ref = minimize(
        objective,
        pts.mean(0).numpy(),
        method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20_000},
    ).x
    assert objective(ours) <= objective(ref) + 1e-6
    np.testing.assert_allclose(ours, ref, atol=1e-3)
    assert np.linalg.norm(ours) < np.linalg.norm(pts.mean(0).numpy())


def test_geometric_median_1d_is_the_median():
    pts = torch.tensor([[0.0], [1.0], [2.0], [10.0], [100.0]])
    assert abs(float(geometric_median(pts)) - 2.0) < 1e-4


def test_initialize_sets_scale_and_b_dec(planted):
    x = planted.sample(4096, torch.Generator().manual_seed(0))
    sae = build_sae(small_sae_config("topk"), 64)
    sae.initialize_from_batch(x)
    scaled = x * sae.input_scale
    torch.testing.assert_close(scaled.norm(dim=1).mean(), torch.tensor(8.0))
    torch.testing.assert_close(sae.b_dec, geometric_median(scaled), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_fold_input_scale_keeps_features(planted, architecture):
    x = planted.sample(512, torch.Generator().manual_seed(0))
    sae = build_sae(small_sae_config(architecture), 64)
    sae.initialize_from_batch(x)
    sae.eval()
    with torch.no_grad():
        before_f, before_r = sae.encode(x), sae.decode(sae.encode(x))
        sae.fold_input_scale()
        after_f, after_r = sae.encode(x), sae.decode(sae.encode(x))
    assert float(sae.input_scale) == 1.0
    torch.testing.assert_close(after_f, before_f, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(after_r, before_r, rtol=1e-4, atol=1e-5)


def test_forward_returns_typed_result(planted):
    sae = build_sae(small_sae_config("standard"), 64)
    x = planted.sample(32, torch.Generator().manual_seed(0))
    out = sae(x)
    assert isinstance(out, ForwardOutput)
    assert out.reconstruction.shape == x.shape and out.feature_acts.shape == (32, 256)
    manual_mse = (out.reconstruction - x).pow(2).sum(-1).mean()  # scale is 1 before init
    torch.testing.assert_close(out.mse_loss, manual_mse)
    l1 = (out.feature_acts * sae.W_dec.norm(dim=1)).sum(-1).mean() * sae.cfg.l1_coefficient
    torch.testing.assert_close(out.sparsity_loss, l1)
    torch.testing.assert_close(out.loss, out.mse_loss + out.sparsity_loss + out.aux_loss)


def test_remove_parallel_grad_makes_grad_orthogonal(planted):
    sae = build_sae(small_sae_config("topk"), 64)
    sae(planted.sample(64, torch.Generator().manual_seed(0))).loss.backward()
    sae.remove_parallel_grad()
    dots = (sae.W_dec.grad * sae.W_dec).sum(-1)
    assert dots.abs().max() < 1e-6


def test_topk_keeps_exactly_k(planted):
    sae = build_sae(small_sae_config("topk", k=7), 64)
    pre = torch.randn(10, 256)
    acts = sae.activate(pre)
    ref = torch.zeros_like(pre)
    vals, idx = pre.sort(dim=-1, descending=True)
    ref.scatter_(-1, idx[:, :7], vals[:, :7].relu())
    assert torch.equal(acts, ref)


def test_batchtopk_keeps_k_times_batch_and_tracks_threshold():
    sae = build_sae(small_sae_config("batchtopk", k=3), 64).train()
    pre = torch.randn(20, 256).abs() + 0.01
    acts = sae.activate(pre)
    sae.update_running_state(sae.batch_statistics(acts), tokens=20)  # what the trainer does after a step
    assert int((acts > 0).sum()) == 60
    kept = acts[acts > 0]
    assert float(sae.threshold) == pytest.approx(float(kept.min()))
    assert kept.min() >= pre.flatten().sort(descending=True).values[59]
    sae.eval()
    eval_acts = sae.activate(pre)
    assert torch.equal(eval_acts, pre * (pre > sae.threshold))
