"""A checkpoint of a bf16 run (fp32 master weights, bf16 arithmetic) loads in the real SAELens
exactly as one of an fp32 run does: the same fp32 tensors, the same feature activations."""

import pytest
import torch
from safetensors.torch import load_file

from raysae import build_sae, fit, save_sae
from tests.compat.test_saelens import ENV, _saelens_env, saelens_outputs
from tests.conftest import small_sae_config, small_train_config

pytestmark = pytest.mark.saelens


@pytest.mark.parametrize("architecture", ["topk", "batchtopk"])
def test_saelens_loads_a_bf16_runs_checkpoint_bit_identically(architecture, planted, tmp_path):
    _saelens_env()
    sae = build_sae(small_sae_config(architecture), 64)
    fit(
        sae,
        planted.batches(512, 20_000, seed=2),
        small_train_config(total_tokens=20_000, batch_size=512, precision="bf16"),
    )
    save_sae(sae, tmp_path / "sae")
    saved = load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.float32}
    x = planted.sample(1024, torch.Generator().manual_seed(7))
    info, theirs = saelens_outputs(ENV, tmp_path / "sae", x, tmp_path)
    assert info["version"] == "6.54.12"
    with torch.no_grad():  # our eval-mode encode in fp32, as SAELens runs it
        assert torch.equal(theirs["feats"], sae.encode(x))
