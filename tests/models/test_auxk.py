"""AuxK revives latents that stopped firing."""

import pytest
import torch

from raysae import build_sae, evaluate, fit
from tests.conftest import small_sae_config, small_train_config


def _train_with_crippled_latents(planted, architecture, aux_coefficient):
    sae = build_sae(small_sae_config(architecture, aux_coefficient=aux_coefficient), planted.d_in)
    with torch.no_grad():
        # Three quarters of the latents start with tiny encoder columns: positive but too weak to be
        # selected by top-k, so without help they never fire and never get a gradient.
        sae.W_enc[:, 64:] *= 0.01
    fit(sae, planted.batches(1024, 300_000, seed=2), small_train_config(total_tokens=300_000))
    return evaluate(sae, planted.batches(4096, 40_960, seed=3))["dead_fraction"]


@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
def test_auxk_revives_dead_latents(planted, architecture):
    without = _train_with_crippled_latents(planted, architecture, aux_coefficient=0.0)
    with_aux = _train_with_crippled_latents(planted, architecture, aux_coefficient=1 / 32)
    # 192 of 256 latents start crippled: without AuxK about that many stay dead.
    assert without >= 0.7
    # 128 atoms need 128 live latents (dead <= 0.5); AuxK should bring most of them back.
    assert with_aux <= 0.55
