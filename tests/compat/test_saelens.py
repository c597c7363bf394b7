"""Our checkpoints load in the real SAELens and give the same feature activations."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raysae import build_sae, fit, load_sae, save_sae
from raysae.models import ARCHITECTURES
from tests.conftest import small_sae_config, small_train_config

pytestmark = pytest.mark.saelens

ENV = Path(os.environ.get("RAYSAE_SAELENS_ENV", Path(__file__).parents[2] / ".saelens-env"))

SCRIPT = """
import json, sys, torch
from sae_lens import SAE, __version__
sae = SAE.load_from_disk(sys.argv[1])
x = torch.load(sys.argv[2])
with torch.no_grad():
    feats = sae.encode(x)
    recon = sae.decode(feats)
torch.save({"feats": feats, "recon": recon}, sys.argv[3])
print(json.dumps({"class": type(sae).__name__, "version": __version__}))
"""


def _saelens_env() -> Path:
    if not (ENV / "sae_lens").is_dir():
        message = f"SAELens not installed in {ENV} (see tests/compat/saelens-requirements.txt)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it; a silent skip would hide a broken format
        pytest.skip(message)
    return ENV


def saelens_outputs(env: Path, sae_dir: Path, x: torch.Tensor, tmp_path: Path) -> tuple[dict, dict]:
    """The real SAELens (from `env`, in a subprocess) loads `sae_dir` and encodes and decodes `x`:
    its class and version, and {"feats", "recon"}."""
    torch.save(x, tmp_path / "x.pt")
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(sae_dir), str(tmp_path / "x.pt"), str(tmp_path / "out.pt")],
        env={**os.environ, "PYTHONPATH": str(env)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1]), torch.load(tmp_path / "out.pt")


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_saelens_loads_our_checkpoint(architecture, planted, tmp_path):
    env = _saelens_env()
    sae = build_sae(small_sae_config(architecture), 64)
    fit(sae, planted.batches(512, 20_000, seed=2), small_train_config(total_tokens=20_000, batch_size=512))
    save_sae(sae, tmp_path / "sae", feature_frequency=torch.rand(sae.d_sae))
    x = planted.sample(1024, torch.Generator().manual_seed(7))
    info, theirs = saelens_outputs(env, tmp_path / "sae", x, tmp_path)
    assert info["version"] == "6.54.12"
    # BatchTopK and Matryoshka BatchTopK are saved as JumpReLU, as SAELens saves them.
    expected_class = {
        "standard": "StandardSAE",
        "topk": "TopKSAE",
        "batchtopk": "JumpReLUSAE",
        "jumprelu": "JumpReLUSAE",
        "matryoshka_batchtopk": "JumpReLUSAE",
        "gated": "GatedSAE",
    }[architecture]
    assert info["class"] == expected_class
    with torch.no_grad():
        ours = sae.encode(x)
        assert torch.equal(theirs["feats"], ours)
        torch.testing.assert_close(theirs["recon"], sae.decode(ours), rtol=1e-5, atol=1e-6)


SAVE_GATED = """
import sys, torch
from sae_lens.saes.gated_sae import GatedSAE, GatedSAEConfig
torch.manual_seed(0)
sae = GatedSAE(GatedSAEConfig(d_in=16, d_sae=32, dtype="float32", device="cpu"))
with torch.no_grad():
    for p in sae.parameters():
        p.normal_(0, 0.3)
    x = torch.randn(64, 16)
    feats = sae.encode(x)
sae.save_model(sys.argv[1])
torch.save({"x": x, "feats": feats, "recon": sae.decode(feats)}, sys.argv[2])
"""


def test_a_gated_sae_saved_by_saelens_loads_as_ours(tmp_path):
    env = _saelens_env()
    run = subprocess.run(
        [sys.executable, "-c", SAVE_GATED, str(tmp_path / "sae"), str(tmp_path / "out.pt")],
        env={**os.environ, "PYTHONPATH": str(env)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    theirs = torch.load(tmp_path / "out.pt")
    sae = load_sae(tmp_path / "sae")  # cfg.json and weights alone, no raysae.json
    assert sae.architecture == "gated"
    with torch.no_grad():
        assert torch.equal(sae.encode(theirs["x"]), theirs["feats"])
        torch.testing.assert_close(sae.decode(theirs["feats"]), theirs["recon"], rtol=1e-5, atol=1e-6)
