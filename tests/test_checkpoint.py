import json

import pytest
import torch
from safetensors.torch import load_file

from raysae import build_sae, fit, load_sae, save_sae
from raysae.config import load_config
from raysae.models import ARCHITECTURES
from tests.conftest import small_sae_config, small_train_config

SAELENS_ARCH = {
    "standard": "standard",
    "topk": "topk",
    "batchtopk": "jumprelu",
    "jumprelu": "jumprelu",
    "matryoshka_batchtopk": "jumprelu",
    "gated": "gated",
}


@pytest.fixture(params=list(ARCHITECTURES))
def trained(request, planted):
    sae = build_sae(small_sae_config(request.param), 64)
    fit(sae, planted.batches(512, 20_000, seed=2), small_train_config(total_tokens=20_000, batch_size=512))
    return sae


def test_round_trip_is_bit_identical(trained, planted, tmp_path):
    freq = torch.rand(trained.d_sae)
    cfg = load_config(None, ["model.name=gpt2", "model.hook_point=blocks.6.hook_resid_post"])
    save_sae(trained, tmp_path / "sae", config=cfg, feature_frequency=freq, record={"tokens": 20_000})
    loaded = load_sae(tmp_path / "sae")
    assert type(loaded) is type(trained) and not loaded.training
    x = planted.sample(2048, torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), trained.encode(x))
        assert torch.equal(loaded.decode(loaded.encode(x)), trained.decode(trained.encode(x)))
    sparsity = load_file(tmp_path / "sae" / "sparsity.safetensors")["sparsity"]  # log10 frequency
    torch.testing.assert_close(torch.pow(10.0, sparsity.double()), freq.double(), rtol=1e-6, atol=0)


def test_files_follow_saelens_layout(trained, tmp_path):
    cfg = load_config(None, ["model.name=gpt2", "data.path=shakespeare", "data.context_size=64"])
    save_sae(trained, tmp_path / "sae", config=cfg, feature_frequency=torch.rand(trained.d_sae))
    files = sorted(p.name for p in (tmp_path / "sae").iterdir())
    assert files == ["cfg.json", "raysae.json", "sae_weights.safetensors", "sparsity.safetensors"]
    saelens_cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    arch = trained.architecture
    assert saelens_cfg["architecture"] == SAELENS_ARCH[arch]
    assert saelens_cfg["d_in"] == 64 and saelens_cfg["d_sae"] == 256
    assert saelens_cfg["normalize_activations"] == "none" and saelens_cfg["apply_b_dec_to_input"] is True
    assert saelens_cfg["metadata"]["model_name"] == "gpt2"
    assert saelens_cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_post"
    assert saelens_cfg["metadata"]["context_size"] == 64
    assert saelens_cfg["metadata"]["dataset_path"] == "shakespeare"
    assert ("k" in saelens_cfg) == (arch == "topk")
    tensors = load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    expected = {"W_enc": (64, 256), "W_dec": (256, 64), "b_enc": (256,), "b_dec": (64,)}
    if SAELENS_ARCH[arch] == "jumprelu":
        expected["threshold"] = (256,)
    if arch == "gated":  # SAELens's GatedSAE: a gate and a magnitude path instead of b_enc
        del expected["b_enc"]
        expected.update(b_gate=(256,), b_mag=(256,), r_mag=(256,))
    assert shapes == expected
    if arch in ("batchtopk", "matryoshka_batchtopk"):
        assert torch.all(tensors["threshold"] == float(trained.threshold))
    assert load_file(str(tmp_path / "sae" / "sparsity.safetensors"))["sparsity"].shape == (256,)
    record = json.loads((tmp_path / "sae" / "raysae.json").read_text())
    assert record["architecture"] == arch and record["config"]["model"]["name"] == "gpt2"


def test_unfolded_sae_is_folded_on_save(planted, tmp_path):
    sae = build_sae(small_sae_config("topk"), 64)
    x = planted.sample(1024, torch.Generator().manual_seed(0))
    sae.initialize_from_batch(x)
    sae.eval()
    save_sae(sae, tmp_path / "sae")
    assert float(sae.input_scale) != 1.0  # the caller's SAE is untouched
    loaded = load_sae(tmp_path / "sae")
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), sae.encode(x), rtol=1e-4, atol=1e-5)


def test_resave_replaces_and_errors_name_files(trained, tmp_path):
    save_sae(trained, tmp_path / "sae")
    save_sae(trained, tmp_path / "sae")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sae"]
    (tmp_path / "sae" / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="cfg.json: not valid JSON"):
        load_sae(tmp_path / "sae")
    with pytest.raises(FileNotFoundError, match="missing"):
        load_sae(tmp_path / "nowhere")


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_a_loaded_sae_config_states_its_width(architecture, tmp_path):
    # Trained with d_in unset (read from the activations) and d_sae from expansion_factor.
    sae = build_sae(small_sae_config(architecture).model_copy(update={"d_sae": None}), 64)
    assert sae.cfg.d_in is None and sae.cfg.d_sae is None and sae.d_sae == 512
    save_sae(sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert (loaded.cfg.d_in, loaded.cfg.d_sae) == (64, sae.d_sae) == (loaded.d_in, loaded.d_sae)
    assert loaded.cfg.architecture == architecture
    assert build_sae(loaded.cfg, 64).d_sae == sae.d_sae  # the config rebuilds the same shape
    (tmp_path / "sae" / "raysae.json").unlink()  # as SAELens writes it: cfg.json alone
    plain = load_sae(tmp_path / "sae")
    assert (plain.cfg.d_in, plain.cfg.d_sae) == (64, sae.d_sae)
