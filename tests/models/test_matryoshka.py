"""Matryoshka BatchTopK: the nested prefix losses against a hand computation, and its width checks."""

import pytest
import torch

from raysae.config import SAEConfig
from raysae.errors import ConfigError
from raysae.models import MatryoshkaBatchTopKSAE, build_sae, width_problems


def tiny_sae(sparse_decode: bool) -> MatryoshkaBatchTopKSAE:
    """d_in 2, d_sae 3, prefixes 1 ⊂ 2 ⊂ 3, with explicit weights; k 3 keeps every latent."""
    cfg = SAEConfig(
        architecture="matryoshka_batchtopk",
        d_sae=3,
        k=3,
        matryoshka_widths=[1, 2],
        normalize_activations=False,
    )
    sae = build_sae(cfg, 2)
    assert isinstance(sae, MatryoshkaBatchTopKSAE)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))
        sae.b_enc.zero_()
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))
        sae.b_dec.copy_(torch.tensor([0.5, 0.0]))
    sae.sparse_decode = sparse_decode
    return sae


X = torch.tensor([[2.0, 1.0], [1.0, -3.0]])
# By hand: x - b_dec = [[1.5, 1], [0.5, -3]], pre-activations [[1.5, 1, 2.5], [0.5, -3, -2.5]],
# activations [[1.5, 1, 2.5], [0.5, 0, 0]]. Each prefix reconstructs from b_dec = [0.5, 0]:
#   width 1: [[2, 0], [1, 0]]        squared errors 1 and 9     -> mean 5
#   width 2: [[2, 1], [1, 0]]        squared errors 0 and 9     -> mean 4.5
#   width 3: [[3.25, 2.25], [1, 0]]  squared errors 3.125 and 9 -> mean 6.0625
PREFIX_MSE = [5.0, 4.5, 6.0625]


@pytest.mark.parametrize("sparse_decode", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_loss_is_the_sum_of_every_prefix_mse(sparse_decode, training):
    sae = tiny_sae(sparse_decode).train(training)  # eval: the threshold 0, the same activations here
    out = sae(X)
    assert (out.active is not None) == (sparse_decode and training)
    torch.testing.assert_close(out.feature_acts, torch.tensor([[1.5, 1.0, 2.5], [0.5, 0.0, 0.0]]))
    torch.testing.assert_close(out.mse_loss, torch.tensor(PREFIX_MSE[-1]))  # the full width's
    assert [float(v.detach()) for v in sae.inner_mse_losses(X, out)] == pytest.approx(PREFIX_MSE[:-1])
    assert float(out.sparsity_loss) == 0.0 and float(out.aux_loss) == 0.0
    torch.testing.assert_close(out.loss, torch.tensor(sum(PREFIX_MSE)))


def test_inner_losses_train_only_their_prefix_rows():
    sae = tiny_sae(sparse_decode=True).train()
    x = X[:1]  # activations [1.5, 1, 2.5]; the width-1 prefix's error [0, -1]
    sae.inner_mse_losses(x, sae(x))[0].backward()
    assert sae.W_dec.grad is not None  # d/d W_dec[0] = 2 * 1.5 * [0, -1]; the other rows are not in it
    torch.testing.assert_close(sae.W_dec.grad, torch.tensor([[0.0, -3.0], [0.0, 0.0], [0.0, 0.0]]))


def test_a_single_level_is_batchtopk(planted):
    x = planted.sample(256, torch.Generator().manual_seed(0))
    one = build_sae(
        SAEConfig(architecture="matryoshka_batchtopk", d_sae=128, k=4, matryoshka_widths=[128]), 64
    )
    plain = build_sae(SAEConfig(architecture="batchtopk", d_sae=128, k=4), 64)
    assert one.widths == [128]  # type: ignore[attr-defined]
    torch.testing.assert_close(one.train()(x).loss, plain.train()(x).loss, rtol=0, atol=0)


def test_widths_default_and_get_d_sae_appended():
    default = build_sae(SAEConfig(architecture="matryoshka_batchtopk", d_sae=256), 64)
    assert default.widths == [16, 64, 256]  # type: ignore[attr-defined]
    given = build_sae(
        SAEConfig(architecture="matryoshka_batchtopk", d_sae=256, matryoshka_widths=[32, 128]), 64
    )
    assert given.widths == [32, 128, 256]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "widths, message",
    [
        ([], "is empty"),
        ([0, 64], "must all be positive"),
        ([64, 32], "must be strictly increasing"),
        ([64, 64], "must be strictly increasing"),
        ([64, 300], "the last width 300 is larger than d_sae=256"),
    ],
)
def test_bad_widths_name_the_config_key(widths, message):
    cfg = SAEConfig(architecture="matryoshka_batchtopk", d_sae=256, matryoshka_widths=widths)
    problems = list(width_problems(cfg, 64))
    assert [p for p, _ in problems] == ["sae.matryoshka_widths"] and message in problems[0][1]
    with pytest.raises(ConfigError, match="sae.matryoshka_widths"):
        build_sae(cfg, 64)
