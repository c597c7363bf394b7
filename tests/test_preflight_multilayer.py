"""The training commands refuse, before Ray starts, multi-layer settings that disagree: each
error names the key to change."""

import pytest

from raysae.config import load_config
from raysae.errors import ConfigError
from raysae.preflight import check_widths, multilayer_problems

CLT = [
    "model.hook_point=blocks.{layer}.ln2.hook_normalized",
    "model.hook_point_out=blocks.{layer}.hook_mlp_out",
    "model.layers=[0, 1]",
    "sae.kind=clt",
    "sae.d_sae=64",
]


def problems(*overrides):
    return dict(multilayer_problems(load_config(None, list(overrides))))


def test_a_consistent_clt_and_crosscoder_pass():
    assert problems(*CLT) == {}
    assert (
        problems(
            "model.hook_point=blocks.{layer}.hook_resid_post", "model.layers=[0, 1]", "sae.kind=crosscoder"
        )
        == {}
    )


@pytest.mark.parametrize(
    "overrides, key, words",
    [
        (["sae.kind=clt"], "model.layers", "list them"),
        (["sae.kind=transcoder", *CLT[:3]], "model.layers", "only multi-layer"),
        ([*CLT[:1], "model.layers=[0, 1]", "sae.kind=clt"], "model.hook_point_out", "later layer"),
        ([*CLT[:3], "sae.kind=crosscoder"], "model.hook_point_out", "leave it empty"),
        ([*CLT, "train.feature_shards=2"], "train.feature_shards", "not yet wired"),
    ],
)
def test_disagreements_name_their_key(overrides, key, words):
    found = problems(*overrides)
    assert key in found and words in found[key]


def test_check_widths_raises_them_as_one_config_error():
    with pytest.raises(ConfigError, match="model.layers"):
        check_widths([load_config(None, ["sae.kind=crosscoder"])], 32)
    check_widths([load_config(None, CLT)], 32)  # per-layer widths: 64 features of 32 dimensions
