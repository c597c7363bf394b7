"""One source for architecture names: the registry; the config offers exactly its choices."""

import typing

import pytest
import torch

from raysae.config import SAEConfig
from raysae.config.sae import Architecture
from raysae.models import ARCHITECTURES, build_sae, saelens_class, width_problems


def test_the_config_offers_exactly_the_registered_architectures():
    assert set(typing.get_args(Architecture)) == set(ARCHITECTURES)
    assert all(cls.architecture == name for name, cls in ARCHITECTURES.items())


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_each_architecture_builds_and_describes_its_saelens_config(name):
    sae = build_sae(SAEConfig(architecture=name, k=4, expansion_factor=2), 8)
    cfg = sae.saelens_config()
    assert cfg["architecture"] == type(sae).saelens_architecture and (cfg["d_in"], cfg["d_sae"]) == (8, 16)
    # A gated SAE has a gate and a magnitude bias instead of b_enc, as SAELens's GatedSAE.
    encoder_biases = {"b_gate", "b_mag", "r_mag"} if name == "gated" else {"b_enc"}
    assert set(sae.inference_state()) >= {"W_enc", "W_dec", "b_dec", *encoder_biases}


def test_saelens_checkpoints_load_as_the_architecture_that_trains_as_saved():
    assert saelens_class("topk") is ARCHITECTURES["topk"]
    assert saelens_class("jumprelu") is ARCHITECTURES["jumprelu"]
    assert saelens_class("batchtopk") is None  # SAELens has no such inference class; ours saves as jumprelu
    assert saelens_class("matryoshka_batchtopk") is None  # saved as jumprelu too
    assert saelens_class("gated") is ARCHITECTURES["gated"]


def test_width_checks_live_on_the_classes():
    topk = SAEConfig(architecture="topk", k=40, expansion_factor=2)
    assert list(width_problems(topk, 16)) == [("sae.k", "k=40 is larger than d_sae=32")]
    # k means nothing to the L1 architecture, so it is not checked there
    assert list(width_problems(topk.model_copy(update={"architecture": "standard"}), 16)) == []
    assert [p for p, _ in width_problems(SAEConfig(k_aux=99, expansion_factor=2), 16)] == ["sae.k_aux"]


def test_the_forward_pass_takes_the_dead_mask():
    sae = build_sae(SAEConfig(architecture="topk", k=2, expansion_factor=4, aux_coefficient=1.0), 8).train()
    x = torch.randn(16, 8)
    assert float(sae(x).aux_loss.detach()) == 0.0  # no mask, no AuxK
    everything_dead = torch.ones(sae.d_sae, dtype=torch.bool)
    assert float(sae(x, dead_mask=everything_dead).aux_loss.detach()) > 0
    assert float(sae(x, dead_mask=~everything_dead).aux_loss.detach()) == 0.0
