"""Transcoders and skip transcoders: read one hook, predict another through a sparse code.

The planted data (`raysae.synthetic.PlantedTranscoder`): 128 orthonormal input atoms in 128
dimensions (orthonormal so the encoder side has one right answer: an encoder column reads its
atom's dual direction, which for random overcomplete atoms is not the atom itself), ~4 active
per token, each writing its own random unit output atom in 64 dimensions. Measured (topk, 400k
tokens): 92 % of input atoms matched by an encoder column at cosine > 0.9 (median 0.945), 95 %
of output atoms by a decoder row.

A skip transcoder's dense part is only identifiable where no linear map of the input can stand
in for the sparse term: with `dense` Gaussian activity in the input (std 1 per dimension) the
sparse term is buried for a linear read-out, and `W_skip` lands within 5 % (relative Frobenius
error) of the planted map after 600k tokens; without it, it absorbed part of the sparse term
(14-39 % error).

JumpReLU as a transcoder trains, saves and loads (the fold and compat tests), but does not
reach this bar yet: after 800k-1.6M tokens 55-77 % of the atoms are matched (median cosine
0.99: the ones it finds, it finds exactly; the rest no latent takes up, and JumpReLU has no
dead-latent revival). So it has no planted test here; see issue 18's closing note.
"""

import pytest
import torch

from raysae import build_sae, evaluate, fit
from raysae.config import SAEConfig
from raysae.errors import ConfigError
from raysae.synthetic import PlantedTranscoder, recovery
from raysae.training.population import Member, Population, train_population
from tests.conftest import small_sae_config, small_train_config

CASES = {"topk": {}, "batchtopk": {}, "standard": dict(l1_coefficient=1.0)}
"""Architecture -> its settings. The SAE tests' L1 coefficient of 3 left the standard
transcoder at 92 % of output atoms and none of the input ones above 0.9 after 800k tokens
(median 0.80); at 1.0 both sides matched 100 % after 400k (median 0.975)."""
TOKENS = {"topk": 400_000, "batchtopk": 800_000, "standard": 400_000}
"""Training tokens per architecture: BatchTopK matched 84 % of the atoms after 400k, 98 % after 800k."""


@pytest.mark.parametrize("architecture", list(TOKENS))
def test_a_transcoder_recovers_a_planted_sparse_map(architecture):
    planted = PlantedTranscoder(128, 64, 128, orthogonal_inputs=True)
    sae = build_sae(small_sae_config(architecture, kind="transcoder", **CASES[architecture]), 128, 64)
    tokens = TOKENS[architecture]
    fit(sae, planted.batches(1024, tokens, seed=2), small_train_config(total_tokens=tokens))
    assert recovery(sae.W_enc.T, planted.in_atoms, threshold=0.9) >= 0.9
    assert recovery(sae.W_dec, planted.out_atoms, threshold=0.9) >= 0.9
    metrics = evaluate(sae, planted.batches(4096, 40_960, seed=3))
    assert metrics["fvu"] < 0.3 and 2.0 <= metrics["l0"] <= 8.0


def test_a_skip_transcoder_finds_the_dense_map_in_w_skip():
    planted = PlantedTranscoder(64, 48, 128, skip_scale=1.0, dense=1.0)
    sae = build_sae(small_sae_config("topk", kind="skip_transcoder"), 64, 48)
    fit(sae, planted.batches(1024, 600_000, seed=2), small_train_config(total_tokens=600_000))
    error = (sae.W_skip.detach() - planted.skip).norm() / planted.skip.norm()
    assert error < 0.1


def tiny_transcoder(kind: str = "transcoder"):
    """d_in 2 -> d_sae 2 -> d_out 3, ReLU, explicit weights."""
    cfg = SAEConfig(
        architecture="standard", kind=kind, d_sae=2, l1_coefficient=0.5, normalize_activations=False
    )
    sae = build_sae(cfg, 2, 3)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0], [1.0, -1.0]]))
        sae.b_enc.copy_(torch.tensor([0.0, 1.0]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]))
        sae.b_dec.copy_(torch.tensor([0.0, 0.0, 1.0]))
        if kind == "skip_transcoder":
            sae.W_skip.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
    return sae


def test_transcoder_forward_by_hand():
    sae = tiny_transcoder()
    x = torch.tensor([[1.0, 2.0]])
    y = torch.tensor([[4.0, 0.0, 6.0]])
    # pre = x @ W_enc + b_enc (no b_dec subtracted) = [3, -1] -> relu [3, 0]
    # y_hat = [3, 0, 6] + [0, 0, 1] = [3, 0, 7]; squared error 1 + 0 + 1 = 2
    out = sae(x, y)
    torch.testing.assert_close(out.feature_acts, torch.tensor([[3.0, 0.0]]))
    torch.testing.assert_close(out.reconstruction, torch.tensor([[3.0, 0.0, 7.0]]))
    torch.testing.assert_close(out.mse_loss, torch.tensor(2.0))
    # L1 weighted by decoder row norms [sqrt 5, 1]
    torch.testing.assert_close(out.sparsity_loss, torch.tensor(0.5 * 3 * 5**0.5))
    skip = tiny_transcoder("skip_transcoder")
    # plus x @ W_skip.T = [1, 0, 2] -> [4, 0, 9]; squared error 0 + 0 + 9
    out = skip(x, y)
    torch.testing.assert_close(out.reconstruction, torch.tensor([[4.0, 0.0, 9.0]]))
    torch.testing.assert_close(out.mse_loss, torch.tensor(9.0))
    torch.testing.assert_close(skip.reconstruct(x), out.reconstruction)


@pytest.mark.parametrize("kind", ["transcoder", "skip_transcoder"])
@pytest.mark.parametrize("architecture", ["topk", "jumprelu", "batchtopk"])
def test_folding_both_scales_keeps_the_outputs(architecture, kind):
    planted = PlantedTranscoder(16, 12, 32, skip_scale=0.5)
    sae = build_sae(small_sae_config(architecture, kind=kind, d_sae=64), 16, 12)
    x, y = planted.sample(512, torch.Generator().manual_seed(1))
    sae.initialize_from_batch(3 * x, 0.2 * y)  # scales far from 1
    assert float(sae.input_scale) != float(sae.output_scale)
    with torch.no_grad():
        sae.W_skip.normal_() if kind == "skip_transcoder" else None
    sae.eval()
    before = sae.reconstruct(x).detach()
    feats = sae.encode(x).detach()
    sae.fold_input_scale()
    assert float(sae.input_scale) == float(sae.output_scale) == 1.0
    torch.testing.assert_close(sae.encode(x), feats, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sae.reconstruct(x), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture", ["gated", "matryoshka_batchtopk"])
def test_architectures_without_a_transcoder_form_are_refused(architecture):
    with pytest.raises(ConfigError, match="sae.kind"):
        build_sae(small_sae_config(architecture, kind="transcoder"), 16, 12)


def test_a_transcoder_needs_targets():
    with pytest.raises(ConfigError, match="model.hook_point_out"):
        build_sae(small_sae_config("topk", kind="transcoder"), 16)
    sae = build_sae(small_sae_config("topk", kind="transcoder", d_sae=32), 16, 12)
    with pytest.raises(ValueError, match="needs target activations"):
        sae(torch.randn(4, 16))
    with pytest.raises(ValueError, match="inputs alone"):
        fit(sae, [torch.randn(64, 16)], small_train_config(total_tokens=64, init_tokens=64))


def test_an_sae_beside_a_transcoder_trains_on_the_inputs_alone():
    """One pass over pairs trains both; the SAE ends exactly as if trained on the inputs alone."""
    planted = PlantedTranscoder(16, 12, 32)
    pairs = list(planted.batches(256, 8192, seed=4))
    train = small_train_config(total_tokens=8192, batch_size=256, init_tokens=256)
    sae_cfg = small_sae_config("topk", d_sae=64)
    together = [
        build_sae(sae_cfg, 16),
        build_sae(small_sae_config("topk", kind="transcoder", d_sae=64), 16, 12),
    ]
    train_population(Population([Member(s, train) for s in together]), pairs, init_tokens=256)
    alone = build_sae(sae_cfg, 16)
    train_population(Population([Member(alone, train)]), [x for x, _ in pairs], init_tokens=256)
    for name, value in alone.state_dict().items():
        torch.testing.assert_close(together[0].state_dict()[name], value, rtol=0, atol=0)
    assert together[1].d_out == 12 and together[1].initialized
