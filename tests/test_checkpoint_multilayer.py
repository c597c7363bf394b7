"""CLTs and crosscoders round-trip through raysae's own record (raysae.json + model.safetensors), a
CLT circuit-tracer can compute also gets its circuit_tracer/ layout, and what cannot be saved says why."""

import copy
import json

import pytest
import torch

from raysae import build_sae, load_sae, save_sae
from raysae.checkpoint import load_single_layer_sae
from raysae.config import RaysaeConfig, SAEConfig
from raysae.models import Crosscoder, CrossLayerTranscoder, MultiLayerDictionary

L, D, F = 3, 16, 32


def multilayer_config(kind: str, architecture: str, **kw) -> SAEConfig:
    return SAEConfig(architecture=architecture, kind=kind, d_sae=F, k=4, seed=3, **kw)


def run_config(layers=(0, 1, 2), **sae) -> RaysaeConfig:
    return RaysaeConfig.model_validate(
        {
            "name": "clt-test",
            "model": {
                "layers": list(layers),
                "hook_point": "blocks.{layer}.ln2.hook_normalized",
                "hook_point_out": "blocks.{layer}.hook_mlp_out",
            },
            "sae": sae,
        }
    )


def trained(model: MultiLayerDictionary, steps: int = 5, seed: int = 0):
    """`model` after a few Adam steps on random data (per-layer scales far from 1), with its biases,
    thresholds and skip moved off their initial values; in eval mode, with held-out inputs."""
    g = torch.Generator().manual_seed(seed)
    x = (
        torch.randn(256, model.n_layers, model.d_in, generator=g) * torch.tensor([3.0, 0.5, 1.5])[:, None]
        + 0.3
    )
    target = torch.randn(256, model.n_layers, model.d_out, generator=g) * 2 if model.is_transcoder else None
    model.initialize_from_batch(x, target)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        out = model(x, target)
        opt.zero_grad()
        out.loss.backward()
        model.remove_parallel_grad()
        opt.step()
        model.after_optimizer_step()
    with torch.no_grad():
        model.b_enc.add_(torch.randn(model.b_enc.shape, generator=g) * 0.1)
        model.b_dec.add_(torch.randn(model.b_dec.shape, generator=g) * 0.1)
        if model.architecture == "jumprelu":
            model.threshold.copy_(torch.rand(model.threshold.shape, generator=g) * 0.5 + 0.05)
        if model.architecture == "batchtopk":  # as training's running state would set it
            model.batch_threshold.copy_(torch.rand(model.batch_threshold.shape, generator=g) * 0.5 + 0.05)
        if model.W_skip is not None:
            model.W_skip.add_(torch.randn(model.W_skip.shape, generator=g) * 0.05)
    x_test = torch.randn(64, model.n_layers, model.d_in, generator=g) * torch.tensor([3.0, 0.5, 1.5])[:, None]
    return model.eval(), x_test


def folded(model: MultiLayerDictionary) -> MultiLayerDictionary:
    model = copy.deepcopy(model)
    model.fold_input_scale()
    return model


@pytest.mark.parametrize(
    ("kind", "architecture", "skip"),
    [
        ("clt", "jumprelu", False),
        ("clt", "topk", False),
        ("clt", "jumprelu", True),
        ("clt", "batchtopk", False),
        ("crosscoder", "topk", False),
        ("crosscoder", "jumprelu", False),
        ("crosscoder", "batchtopk", False),
    ],
)
def test_a_multilayer_dictionary_round_trips_through_its_record(kind, architecture, skip, tmp_path):
    sae_cfg = multilayer_config(kind, architecture, **({"skip_connection": True} if skip else {}))
    model, x = trained(build_sae(sae_cfg, D, D, n_layers=L))
    assert not torch.all(model.input_scale == 1)  # the save has something to fold
    config = run_config(**sae_cfg.model_dump())
    save_sae(model, tmp_path / "m", config=config, record={"tokens": 1280})
    loaded = load_sae(tmp_path / "m")
    assert type(loaded) is type(model) and not loaded.training
    assert isinstance(loaded, CrossLayerTranscoder if kind == "clt" else Crosscoder)
    assert (loaded.n_layers, loaded.d_in, loaded.d_out, loaded.d_sae) == (L, D, D, F)
    assert (loaded.W_skip is not None) == skip
    reference = folded(model)  # what the files hold: raw units, scales 1
    expected, found = reference.state_dict(), loaded.state_dict()
    assert list(found) == list(expected)
    for name, value in expected.items():
        assert torch.equal(found[name], value), name
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), reference.encode(x))
        torch.testing.assert_close(loaded.reconstruct(x), model.reconstruct(x), rtol=1e-5, atol=1e-5)
    record = json.loads((tmp_path / "m" / "raysae.json").read_text())
    assert (record["kind"], record["architecture"], record["n_layers"], record["layers"]) == (
        kind,
        architecture,
        L,
        [0, 1, 2],
    )
    assert record["hook_point_out"] == "blocks.{layer}.hook_mlp_out" and record["tokens"] == 1280
    expressible = kind == "clt" and architecture in ("jumprelu", "batchtopk") and not skip
    assert (tmp_path / "m" / "circuit_tracer" / "config.yaml").exists() == expressible
    if kind == "clt":
        ct = record["circuit_tracer"]
        assert ct == {"folder": "circuit_tracer", "version": "0.5.0"} if expressible else "skipped" in ct
        if architecture == "topk":
            assert "no top-k activation" in ct["skipped"] and "'jumprelu'" in ct["skipped"]
        if skip:
            assert "W_skip" in ct["skipped"]
    else:
        assert "circuit_tracer" not in record


def test_the_circuit_tracer_layout_is_left_out_where_layers_do_not_start_at_block_0(tmp_path):
    sae_cfg = multilayer_config("clt", "jumprelu")
    model, _ = trained(build_sae(sae_cfg, D, D, n_layers=L))
    save_sae(model, tmp_path / "m", config=run_config(layers=(2, 3, 4), **sae_cfg.model_dump()))
    record = json.loads((tmp_path / "m" / "raysae.json").read_text())
    assert (
        "block 0" in record["circuit_tracer"]["skipped"]
        and "[2, 3, 4]" in record["circuit_tracer"]["skipped"]
    )
    assert not (tmp_path / "m" / "circuit_tracer").exists()
    save_sae(model, tmp_path / "bare")  # no config: no hooks to name
    assert "hooks" in json.loads((tmp_path / "bare" / "raysae.json").read_text())["circuit_tracer"]["skipped"]
    assert isinstance(load_sae(tmp_path / "bare"), CrossLayerTranscoder)


def test_one_feature_shard_is_not_saved_as_the_model(tmp_path):
    shard = build_sae(multilayer_config("clt", "jumprelu"), D, D, n_layers=L, shard=(1, 2))
    with pytest.raises(ValueError, match="16 of 32 features per layer.*merge_states"):
        save_sae(shard, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_damaged_record_is_named(tmp_path):
    model, _ = trained(build_sae(multilayer_config("crosscoder", "topk"), D, D, n_layers=L))
    save_sae(model, tmp_path / "m")
    record = json.loads((tmp_path / "m" / "raysae.json").read_text())
    (tmp_path / "m" / "raysae.json").write_text(json.dumps({**record, "n_layers": 4}))
    with pytest.raises(ValueError, match=r"model\.safetensors: tensors .* do not match"):
        load_sae(tmp_path / "m")


def test_the_single_layer_loader_refuses_a_clt(tmp_path):
    model, _ = trained(build_sae(multilayer_config("clt", "topk"), D, D, n_layers=L))
    save_sae(model, tmp_path / "m")
    with pytest.raises(ValueError, match="a clt over 3 layers, not a one-hook SAE"):
        load_single_layer_sae(tmp_path / "m")
