"""`model.layers`: config errors that name their key, hook templates expanded, the checks made
against the model (layers in range, hooks it has), all without Ray."""

import re

import numpy as np
import pytest
import torch

from raysae.activations import int8
from raysae.activations.build import cache_hook_sets, hook_points
from raysae.activations.cache import cache_key, key_inputs, new_manifest
from raysae.activations.layers import expand, expand_hooks, training_columns, training_hooks
from raysae.config import load_config
from raysae.errors import ConfigError
from raysae.preflight import check_hooks, hook_paths
from raysae.training.batch import check_batch

CLT = [
    "model.layers=[0, 1, 2]",
    "model.hook_point=blocks.{layer}.ln2.hook_normalized",
    "model.hook_point_out=blocks.{layer}.hook_mlp_out",
]


@pytest.mark.parametrize(
    ("overrides", "path", "message"),
    [
        (["model.layers=[]"], "model.layers", "is empty"),
        (["model.layers=[-1, 0]"], "model.layers", "block indices from 0"),
        (["model.layers=[0, 1, 1]"], "model.layers", "names a layer twice"),
        (["model.layers=[2, 0]"], "model.layers", r"ascending order, got \[2, 0\] \(write \[0, 2\]\)"),
        (["model.layers=[0, 1]"], "model.hook_point", "must hold {layer} when model.layers is set"),
        (["model.hook_point=blocks.{layer}.hook_resid_post"], "model.hook_point", "needs model.layers"),
        (
            [
                "model.layers=[0, 1]",
                "model.hook_point=blocks.{layer}.hook_resid_post",
                "model.hook_point_out=x",
            ],
            "model.hook_point_out",
            "must hold {layer}",
        ),
        (
            ["model.hook_point_out=blocks.{layer}.hook_mlp_out"],
            "model.hook_point_out",
            "needs model.layers",
        ),
        (["model.layers=[0]", "model.hook_point=blocks.{layer}.x{layer}"], "model.hook_point", "once"),
        (["model.hook_point=blocks.{layr}.hook_resid_post"], "model.hook_point", "pattern"),
    ],
)
def test_bad_layer_settings_name_their_key(overrides, path, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert [p for p, _ in err.value.problems] == [path]
    assert re.search(message, err.value.problems[0][1])


def test_templates_expand_per_layer_inputs_first():
    cfg = load_config(None, CLT)
    inputs, targets = expand_hooks(cfg)
    assert inputs == [f"blocks.{i}.ln2.hook_normalized" for i in range(3)]
    assert targets == [f"blocks.{i}.hook_mlp_out" for i in range(3)]
    assert training_hooks(cfg) == inputs + targets and training_columns(cfg) == ("acts", "acts_1")
    assert expand("a.{layer}.b", [3, 7]) == ["a.3.b", "a.7.b"]
    # The analysis caches hold each layer's input alone; the forward reads every hook once.
    assert cache_hook_sets(cfg, "contexts") == [[h] for h in inputs]
    assert hook_points(cfg) == inputs + targets
    crosscoder = load_config(None, ["model.layers=[1, 2]", "model.hook_point=blocks.{layer}.hook_resid_post"])
    assert expand_hooks(crosscoder) == (["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"], [])
    assert training_columns(crosscoder) == ("acts",)
    one = load_config(None, ["model.hook_point=blocks.1.hook_resid_post"])
    assert training_hooks(one) == ["blocks.1.hook_resid_post"] and training_columns(one) == ("acts",)


def test_the_manifest_names_every_hook_and_the_key_the_layers():
    cfg = load_config(None, CLT)
    hooks = training_hooks(cfg)
    m = new_manifest(cfg, hooks, "tokens")
    assert m["layers"] == [0, 1, 2]
    assert [(h["name"], h["column"], h["layer"], h["slot"], h["role"]) for h in m["hooks"]] == [
        *[(f"blocks.{i}.ln2.hook_normalized", "acts", i, i, "input") for i in range(3)],
        *[(f"blocks.{i}.hook_mlp_out", "acts_1", i, i, "target") for i in range(3)],
    ]
    assert key_inputs(cfg, hooks, "tokens")["layers"] == [0, 1, 2]
    key = cache_key(cfg, hooks, "tokens")
    assert key.startswith("random-blocks-L-ln2-hook-normalized--blocks-L-hook-mlp-out--layers-0-2-n3-tokens-")
    # One layer in the list is still a stacked cache, not the plain one of that hook.
    single = load_config(None, ["model.layers=[1]", "model.hook_point=blocks.{layer}.hook_resid_post"])
    plain = load_config(None, ["model.hook_point=blocks.1.hook_resid_post"])
    assert training_hooks(single) == training_hooks(plain)
    assert cache_key(single, training_hooks(single), "tokens") != cache_key(
        plain, training_hooks(plain), "tokens"
    )
    assert "layers" not in key_inputs(plain, training_hooks(plain), "tokens")
    assert new_manifest(plain, training_hooks(plain)[0], "tokens")["layers"] is None


def test_hooks_are_checked_per_layer_against_the_model(tokenizer_dir):
    base = [f"model.tokenizer={tokenizer_dir}", "model.random.n_layers=3", "activations.source=live"]
    cfg = load_config(None, [*base, *CLT])
    assert hook_paths(cfg)["blocks.2.hook_mlp_out"] == "model.hook_point_out"
    assert hook_paths(cfg)["blocks.1.ln2.hook_normalized"] == "model.hook_point"
    assert check_hooks(cfg) == 64
    beyond = load_config(None, [*base, *CLT[1:], "model.layers=[1, 3, 5]"])
    with pytest.raises(ConfigError) as err:
        check_hooks(beyond)
    assert err.value.problems == [("model.layers", "[3, 5] beyond the model's 3 blocks (0 to 2)")]
    missing = load_config(None, [*base, *CLT[:2], "model.hook_point_out=blocks.{layer}.hook_mlp_outt"])
    with pytest.raises(ConfigError) as err:
        check_hooks(missing)
    ((path, message),) = err.value.problems
    assert path == "model.hook_point_out" and message.startswith(
        "'blocks.0.hook_mlp_outt' is not a hook point"
    )


def test_multilayer_batches_are_checked_with_their_layer_axis():
    x, y = torch.zeros(8, 3, 16), torch.zeros(8, 3, 24)
    check_batch((x, y), 16, 0, 24, layers=3)
    check_batch(x, 16, 0, layers=3)
    with pytest.raises(ValueError, match=r"expected targets a \[rows, 3, 16\] tensor, got \(8, 3, 24\)"):
        check_batch((x, y), 16, 0, 16, layers=3)
    with pytest.raises(ValueError, match=r"expected a \[rows, 16\] tensor, got \(8, 3, 16\)"):
        check_batch(x, 16, 0)


def test_int8_rows_round_trip_within_half_a_step():
    rng = np.random.default_rng(0)
    v = (rng.normal(size=(50, 3, 16)) * rng.uniform(0.01, 100, size=(50, 3, 1))).astype(np.float32)
    v[4, 1] = 0.0  # a zero vector: scale 0, stored as zeros
    q, s = int8.quantise(v)
    assert q.dtype == np.int8 and s.shape == (50, 3) and s[4, 1] == 0 and not q[4, 1].any()
    back = int8.dequantise(q, s)
    step = np.abs(v).max(axis=-1, keepdims=True) / 127
    assert (np.abs(back - v) <= step / 2 * (1 + 1e-5) + 1e-12).all()
    record = int8.new_error()
    int8.add_error(record, v[:20], *int8.quantise(v[:20]))
    int8.add_error(record, v[20:], *int8.quantise(v[20:]))
    err = back.astype(np.float64) - v
    assert record["rows"] == 50
    np.testing.assert_allclose(record["relative_mse"], (err**2).sum() / (v.astype(np.float64) ** 2).sum())
    np.testing.assert_allclose(record["max_abs_error"], np.abs(err).max())
