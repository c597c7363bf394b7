"""Our transcoders and skip transcoders load in the real SAELens 6.54 as its transcoder classes and
give the same features and outputs; SAELens's own transcoder checkpoints load as ours."""

import json
import os
import subprocess
import sys

import pytest
import torch

from raysae import build_sae, fit, load_sae, save_sae
from raysae.config import RaysaeConfig
from raysae.synthetic import PlantedTranscoder
from tests.compat.test_saelens import _saelens_env
from tests.conftest import small_sae_config, small_train_config

pytestmark = pytest.mark.saelens

FORWARD = """
import json, sys, torch
from sae_lens import SAE, __version__
sae = SAE.load_from_disk(sys.argv[1])
x = torch.load(sys.argv[2])
with torch.no_grad():
    feats = sae.encode(x)
    out = sae(x)
torch.save({"feats": feats, "out": out}, sys.argv[3])
print(json.dumps({"class": type(sae).__name__, "version": __version__, "d_out": sae.cfg.d_out,
                  "hook_name_out": (sae.cfg.metadata.hook_name_out if hasattr(sae.cfg.metadata, "hook_name_out")
                                    else getattr(sae.cfg.metadata, "__dict__", {}).get("hook_name_out"))}))
"""

CLASSES = {
    ("standard", "transcoder"): "Transcoder",
    ("standard", "skip_transcoder"): "SkipTranscoder",
    ("jumprelu", "transcoder"): "JumpReLUTranscoder",
    ("jumprelu", "skip_transcoder"): "JumpReLUSkipTranscoder",
    # BatchTopK saves as its JumpReLU form, as for SAEs.
    ("batchtopk", "transcoder"): "JumpReLUTranscoder",
    ("batchtopk", "skip_transcoder"): "JumpReLUSkipTranscoder",
}


def run_saelens(script: str, *args) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        env={**os.environ, "PYTHONPATH": str(_saelens_env())},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1]) if run.stdout.strip() else {}


def trained(architecture: str, kind: str):
    planted = PlantedTranscoder(32, 24, 64, skip_scale=0.5)
    sae = build_sae(small_sae_config(architecture, kind=kind, d_sae=128), 32, 24)
    fit(sae, planted.batches(512, 20_000, seed=2), small_train_config(total_tokens=20_000, batch_size=512))
    return sae, planted.sample(1024, torch.Generator().manual_seed(7))[0]


@pytest.mark.parametrize(("architecture", "kind"), list(CLASSES))
def test_saelens_loads_our_transcoder(architecture, kind, tmp_path):
    sae, x = trained(architecture, kind)
    cfg = RaysaeConfig.model_validate(
        {"model": {"hook_point": "blocks.1.ln2.hook_normalized", "hook_point_out": "blocks.1.hook_mlp_out"}}
    )
    save_sae(sae, tmp_path / "tc", config=cfg)
    saved = json.loads((tmp_path / "tc" / "cfg.json").read_text())
    assert saved["d_out"] == 24 and saved["apply_b_dec_to_input"] is False
    assert saved["metadata"]["hook_name_out"] == "blocks.1.hook_mlp_out"
    torch.save(x, tmp_path / "x.pt")
    info = run_saelens(FORWARD, tmp_path / "tc", tmp_path / "x.pt", tmp_path / "out.pt")
    theirs = torch.load(tmp_path / "out.pt")
    assert info["version"] == "6.54.12" and info["class"] == CLASSES[architecture, kind]
    assert info["d_out"] == 24
    with torch.no_grad():
        assert torch.equal(theirs["feats"], sae.encode(x))
        torch.testing.assert_close(theirs["out"], sae.reconstruct(x), rtol=1e-5, atol=1e-5)
    ours = load_sae(tmp_path / "tc")
    assert (ours.kind, ours.d_out) == (kind, 24)
    with torch.no_grad():
        torch.testing.assert_close(ours.reconstruct(x), sae.reconstruct(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["transcoder", "skip_transcoder"])
def test_a_topk_transcoder_keeps_the_layout_and_loads_in_raysae(kind, tmp_path):
    """SAELens 6.54 has no TopK transcoder: ours saves as `topk_transcoder` in the same layout."""
    sae, x = trained("topk", kind)
    save_sae(sae, tmp_path / "tc")
    saved = json.loads((tmp_path / "tc" / "cfg.json").read_text())
    assert saved["architecture"] == f"topk_{'skip_' if kind == 'skip_transcoder' else ''}transcoder"
    assert saved["k"] == sae.cfg.k
    (tmp_path / "tc" / "raysae.json").unlink()  # as a bare cfg.json + weights would arrive
    ours = load_sae(tmp_path / "tc")
    with torch.no_grad():
        torch.testing.assert_close(ours.reconstruct(x), sae.reconstruct(x), rtol=0, atol=0)


SAVE_JUMPRELU_SKIP = """
import sys, torch
from sae_lens.saes.transcoder import JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig
torch.manual_seed(0)
sae = JumpReLUSkipTranscoder(JumpReLUSkipTranscoderConfig(
    d_in=16, d_out=12, d_sae=32, dtype="float32", device="cpu", apply_b_dec_to_input=False))
with torch.no_grad():
    for p in sae.parameters():
        p.normal_(0, 0.3)
    sae.threshold.abs_()
    x = torch.randn(64, 16)
    feats, out = sae.encode(x), sae(x)
sae.save_model(sys.argv[1])
torch.save({"x": x, "feats": feats, "out": out}, sys.argv[2])
"""


def test_a_skip_transcoder_saved_by_saelens_loads_as_ours(tmp_path):
    run_saelens(SAVE_JUMPRELU_SKIP, tmp_path / "tc", tmp_path / "out.pt")
    theirs = torch.load(tmp_path / "out.pt")
    sae = load_sae(tmp_path / "tc")
    assert (sae.architecture, sae.kind, sae.d_in, sae.d_out) == ("jumprelu", "skip_transcoder", 16, 12)
    with torch.no_grad():
        assert torch.equal(sae.encode(theirs["x"]), theirs["feats"])
        torch.testing.assert_close(sae.reconstruct(theirs["x"]), theirs["out"], rtol=1e-5, atol=1e-6)
