"""Gated SAE: encode and the three loss terms against a hand computation (SAELens 6.54's formulas)."""

import math

import pytest
import torch

from raysae import load_sae, save_sae
from raysae.config import SAEConfig
from raysae.models import GatedSAE, build_sae


def tiny_sae(**kw) -> GatedSAE:
    """d_in 2, d_sae 2 with explicit weights; decoder row norms 1 and 2."""
    cfg = SAEConfig(architecture="gated", d_sae=2, l1_coefficient=0.5, normalize_activations=False, **kw)
    sae = build_sae(cfg, 2)
    assert isinstance(sae, GatedSAE)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.5]]))
        sae.b_gate.copy_(torch.tensor([-1.0, 0.2]))
        sae.r_mag.copy_(torch.tensor([math.log(2.0), 0.0]))
        sae.b_mag.copy_(torch.tensor([0.5, -3.0]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        sae.b_dec.copy_(torch.tensor([1.0, 0.0]))
    return sae


def test_encode_gates_the_magnitudes():
    sae = tiny_sae()
    # x - b_dec = [1, 1]: gate [2, -0.3], magnitude (W_enc * [2, 1]) [6.5, -3.5] -> [6.5, 0]
    # x - b_dec = [0, 9]: gate [17, 4.7], magnitude [36.5, 1.5]                  -> [36.5, 1.5]
    # x - b_dec = [0, 0.5]: gate [0, 0.45] (0 is closed), magnitude [2.5, -2.75]  -> [0, 0]
    x = torch.tensor([[2.0, 1.0], [1.0, 9.0], [1.0, 0.5]])
    expected = torch.tensor([[6.5, 0.0], [36.5, 1.5], [0.0, 0.0]])
    torch.testing.assert_close(sae.encode(x), expected)
    torch.testing.assert_close(sae(x).feature_acts, expected)


def test_losses_by_hand():
    sae = tiny_sae()
    x = torch.tensor([[2.0, 1.0], [1.0, 9.0]])
    out = sae(x, sparsity_scale=0.5)
    # reconstruction acts @ W_dec + b_dec: [7.5, 0] and [37.5, 3] -> squared errors 31.25, 1368.25
    torch.testing.assert_close(out.mse_loss, torch.tensor((31.25 + 1368.25) / 2))
    # relu(gate) [2, 0] and [17, 4.7], weighted by the row norms [1, 2]: 2 and 26.4
    torch.testing.assert_close(out.sparsity_loss, torch.tensor(0.5 * 0.5 * (2 + 26.4) / 2))
    # through the gate: relu(gate) @ W_dec + b_dec = [3, 0] and [18, 9.4] -> 2 and 289.16
    torch.testing.assert_close(out.aux_loss, torch.tensor((2 + 289.16) / 2))
    torch.testing.assert_close(out.loss, out.mse_loss + out.sparsity_loss + out.aux_loss)


@pytest.mark.parametrize("detach", [False, True])
def test_the_aux_loss_trains_the_decoder_unless_detached(detach):
    sae = tiny_sae(gated_aux_detach_decoder=detach)
    sae(torch.tensor([[2.0, 1.0], [1.0, 9.0]])).aux_loss.backward()
    assert sae.W_enc.grad is not None and torch.count_nonzero(sae.W_enc.grad) > 0
    assert sae.b_gate.grad is not None and torch.count_nonzero(sae.b_gate.grad) > 0
    assert sae.r_mag.grad is None or torch.count_nonzero(sae.r_mag.grad) == 0  # the gate path only
    decoder_grad = sae.W_dec.grad
    assert (decoder_grad is None or torch.count_nonzero(decoder_grad) == 0) == detach


def test_no_b_enc_and_the_saelens_tensors(planted, tmp_path):
    sae = build_sae(SAEConfig(architecture="gated", d_sae=128), 64)
    assert isinstance(sae, GatedSAE)
    assert "b_enc" not in dict(sae.named_parameters())
    assert set(sae.inference_state()) == {"W_enc", "W_dec", "b_dec", "b_gate", "b_mag", "r_mag"}
    x = planted.sample(512, torch.Generator().manual_seed(0))
    sae.initialize_from_batch(x)
    with torch.no_grad():
        sae.r_mag.normal_(0, 0.3)
        sae.b_mag.normal_(0, 0.3)
        sae.b_gate.normal_(0, 0.3)
    sae.eval()
    save_sae(sae, tmp_path / "sae")  # folds the input scale into a copy
    loaded = load_sae(tmp_path / "sae")
    assert isinstance(loaded, GatedSAE) and float(sae.input_scale) != 1.0
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), sae.encode(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            loaded.decode(loaded.encode(x)), sae.decode(sae.encode(x)), rtol=1e-4, atol=1e-5
        )
