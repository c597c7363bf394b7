"""Our CLTs and per-layer transcoders load in the real circuit-tracer 0.5 (its local-folder loader,
as `ReplacementModel` reaches it) and give the same features and reconstructions; CLT folders
circuit-tracer writes load as ours; TopK, which circuit-tracer cannot compute, is refused.

circuit-tracer runs once, in one subprocess, from the side folder `.circuit-tracer-env`
(tests/compat/circuit-tracer-requirements.txt), for every check in this file."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from raysae import build_sae, load_sae, save_sae
from raysae.circuit_tracer_format import load_circuit_tracer, save_circuit_tracer
from raysae.config import SAEConfig
from raysae.models import CrossLayerTranscoder, SparseAutoencoder
from tests.test_checkpoint_multilayer import D, F, L, multilayer_config, run_config, trained

pytestmark = pytest.mark.circuit_tracer

ENV = Path(os.environ.get("RAYSAE_CIRCUIT_TRACER_ENV", Path(__file__).parents[2] / ".circuit-tracer-env"))
HOOKS = {"input_hook": "blocks.{layer}.ln2.hook_normalized", "output_hook": "blocks.{layer}.hook_mlp_out"}

SCRIPT = """
import json, sys, torch
from pathlib import Path
import circuit_tracer
from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder
from circuit_tracer.utils.caching import load_transcoders_from_cache
from circuit_tracer.utils.hf_utils import load_transcoder_from_hub

jobs, cpu = json.loads(Path(sys.argv[1]).read_text()), torch.device("cpu")
info, outputs = {"version": circuit_tracer.__version__}, {}
for name, job in jobs.items():
    x = torch.load(job["x"])  # [n_layers, n_pos, d_model]
    if job.get("make_relu_clt"):  # circuit-tracer's own ReLU CLT, written by its own writer
        clt = CrossLayerTranscoder(job["n_layers"], job["d_sae"], x.shape[-1], activation_function="relu",
                                   lazy_decoder=False, device=cpu, dtype=torch.float32)
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for p in clt.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            clt.b_enc.sub_(0.2)
            feats = clt.encode(x)
            outputs[name] = {"feats": feats, "recon": clt.decode(feats)}
        clt.to_safetensors(job["folder"])
        continue
    folder = Path(job["folder"])
    eager, config = load_transcoders_from_cache(folder.name, cache_dir=folder.parent, device=cpu,
                                                dtype=torch.float32, lazy_decoder=False)
    # The way ReplacementModel.from_pretrained(model, <name>) loads a cached name: lazy decoders.
    lazy, _ = load_transcoder_from_hub(folder.name, device=cpu, dtype=torch.float32, cache_dir=folder.parent)
    clt = isinstance(eager, CrossLayerTranscoder)
    with torch.no_grad():
        feats = eager.encode(x)
        recon = eager.decode(feats) if clt else eager.decode(feats, x)
        sparse = lazy.compute_attribution_components(x, zero_positions=slice(0, 0))
    outputs[name] = {"feats": feats, "recon": recon, "feats_lazy": sparse["activation_matrix"].to_dense(),
                     "recon_lazy": sparse["reconstruction"]}
    info[name] = {"class": type(eager).__name__, "config": config, "n_layers": eager.n_layers,
                  "d_transcoder": eager.d_transcoder, "input_hook": eager.feature_input_hook,
                  "output_hook": eager.feature_output_hook, "scan": eager.scan,
                  "skip": eager.skip_connection if not clt else eager.W_skip is not None}
    if job.get("resave"):  # circuit-tracer's own writer: a bare folder, no config.yaml
        eager.to_safetensors(job["resave"])
torch.save(outputs, sys.argv[2])
print(json.dumps(info))
"""


def _circuit_tracer_env() -> Path:
    if not (ENV / "circuit_tracer").is_dir():
        message = f"circuit-tracer not installed in {ENV} (see tests/compat/circuit-tracer-requirements.txt)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it; a silent skip would hide a broken format
        pytest.skip(message)
    return ENV


def trained_transcoders(
    architecture: str, kind: str, seed: int
) -> tuple[list[SparseAutoencoder], torch.Tensor]:
    """L transcoders (d_in = d_out = D), a few Adam steps each on random data with scales far from 1,
    thresholds moved off their initial values; and held-out inputs [n, L, D]."""
    g = torch.Generator().manual_seed(seed)
    transcoders = []
    for layer in range(L):
        tc = build_sae(SAEConfig(architecture=architecture, kind=kind, d_sae=F, k=4, seed=layer), D, D)
        x, y = torch.randn(256, D, generator=g) * (layer + 0.5) + 0.2, torch.randn(256, D, generator=g) * 2
        tc.initialize_from_batch(x, y)
        opt = torch.optim.Adam(tc.parameters(), lr=1e-2)
        for _ in range(5):
            opt.zero_grad()
            tc(x, y).loss.backward()
            tc.remove_parallel_grad()
            opt.step()
            tc.after_optimizer_step()
        with torch.no_grad():
            tc.b_enc.add_(torch.randn(F, generator=g) * 0.1)
            tc.b_dec.add_(torch.randn(D, generator=g) * 0.1)
            if architecture == "jumprelu":
                tc.threshold.copy_(torch.rand(F, generator=g) * 0.5 + 0.05)
            else:  # BatchTopK's inference threshold, as training's running state would set it
                tc.threshold.fill_(0.3)
            if kind == "skip_transcoder":
                tc.W_skip.add_(torch.randn(D, D, generator=g) * 0.05)
        transcoders.append(tc.eval())
    scales = torch.tensor([0.5, 1.5, 2.5])[:, None]
    return transcoders, torch.randn(64, L, D, generator=g) * scales


def folded(model):
    model = copy.deepcopy(model)
    model.fold_input_scale()
    return model


def assert_clear_of_thresholds(pre: torch.Tensor, threshold: torch.Tensor) -> None:
    """The inputs are not degenerate: no pre-activation is within float error of its threshold
    (where two correct float computations could disagree on whether a feature fires)."""
    assert (pre - threshold).abs().min() > 1e-5


@pytest.fixture(scope="module")
def circuit_tracer_run(tmp_path_factory):
    """Our models, their folders, and what circuit-tracer made of them: one subprocess for all."""
    env = _circuit_tracer_env()
    tmp = tmp_path_factory.mktemp("circuit_tracer")
    sae_cfg = multilayer_config("clt", "jumprelu")
    clts = {"clt": trained(build_sae(sae_cfg, D, D, n_layers=L))}
    save_sae(
        clts["clt"][0], tmp / "clt", config=run_config(**sae_cfg.model_dump())
    )  # writes clt/circuit_tracer
    folders = {"clt": tmp / "clt" / "circuit_tracer"}
    for name, scope in (("clt_batchtopk", "layer"), ("clt_batchtopk_model", "model")):
        # BatchTopK's inference threshold per layer, or one for all layers' features.
        clts[name] = trained(
            build_sae(multilayer_config("clt", "batchtopk", topk_scope=scope), D, D, n_layers=L)
        )
        save_circuit_tracer(clts[name][0], tmp / name, **HOOKS)  # not yet folded: the writer folds
        folders[name] = tmp / name
    sets = {
        "jumprelu": trained_transcoders("jumprelu", "transcoder", seed=1),
        "batchtopk_skip": trained_transcoders("batchtopk", "skip_transcoder", seed=2),
    }
    for name, (transcoders, _) in sets.items():
        save_circuit_tracer(transcoders, tmp / f"set_{name}", **HOOKS, model_name="gpt2")
        folders[name] = tmp / f"set_{name}"
    jobs = {}
    for name, (_, xs) in {**clts, **sets}.items():
        torch.save(xs.transpose(0, 1).contiguous(), tmp / f"x_{name}.pt")
        jobs[name] = {"folder": str(folders[name]), "x": str(tmp / f"x_{name}.pt")}
    jobs["clt"]["resave"] = str(tmp / "clt_resaved")
    jobs["relu_clt"] = {"make_relu_clt": True, "folder": str(tmp / "relu_clt"), "x": str(tmp / "x_clt.pt")}
    jobs["relu_clt"] |= {"n_layers": L, "d_sae": F}
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp / "jobs.json"), str(tmp / "out.pt")],
        env={**os.environ, "PYTHONPATH": str(env), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    info = json.loads(run.stdout.strip().splitlines()[-1])
    out = torch.load(tmp / "out.pt")
    return {
        "tmp": tmp,
        "info": info,
        "out": out,
        "clt": clts["clt"][0],
        "x": clts["clt"][1],
        "clts": clts,
        "sets": sets,
    }


@pytest.mark.parametrize("name", ["clt", "clt_batchtopk", "clt_batchtopk_model"])
def test_circuit_tracer_computes_our_clt(circuit_tracer_run, name):
    run, (clt, x) = circuit_tracer_run, circuit_tracer_run["clts"][name]
    info, theirs = run["info"][name], run["out"][name]
    assert run["info"]["version"] == "0.5.0"
    assert (info["class"], info["n_layers"], info["d_transcoder"], info["skip"]) == (
        "CrossLayerTranscoder",
        L,
        F,
        False,
    )
    assert (info["input_hook"], info["output_hook"]) == ("ln2.hook_normalized", "hook_mlp_out")
    assert info["config"]["model_kind"] == "cross_layer_transcoder"
    assert info["scan"] == ("clt-test" if name == "clt" else name)
    reference = folded(clt)
    # Raw inputs, as circuit-tracer reads them; each feature's inference threshold.
    pre = torch.einsum("nld,ldf->nlf", x, reference.W_enc) + reference.b_enc
    if name == "clt":
        threshold = reference.threshold
    else:
        threshold = (
            reference.batch_threshold.view(-1, 1)
            if reference.cfg.topk_scope == "layer"
            else reference.batch_threshold
        )
        assert reference.batch_threshold.numel() == (L if reference.cfg.topk_scope == "layer" else 1)
    assert_clear_of_thresholds(pre, threshold)
    with torch.no_grad():
        feats, recon = clt.encode(x), clt.reconstruct(x)
    assert 0 < (feats > 0).float().mean() < 0.9  # neither dead nor dense
    for key in ("feats", "feats_lazy"):
        torch.testing.assert_close(theirs[key].transpose(0, 1), feats, rtol=1e-5, atol=1e-5)
    for key in ("recon", "recon_lazy"):
        torch.testing.assert_close(theirs[key].transpose(0, 1), recon, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["jumprelu", "batchtopk_skip"])
def test_circuit_tracer_computes_our_per_layer_transcoders(circuit_tracer_run, name):
    transcoders, x = circuit_tracer_run["sets"][name]
    info, theirs = circuit_tracer_run["info"][name], circuit_tracer_run["out"][name]
    assert (info["class"], info["n_layers"], info["d_transcoder"]) == ("TranscoderSet", L, F)
    assert info["skip"] == (name == "batchtopk_skip")
    assert info["config"] == {
        "model_kind": "transcoder_set",
        "feature_input_hook": "ln2.hook_normalized",
        "feature_output_hook": "hook_mlp_out",
        "scan": f"set_{name}",
        "model_name": "gpt2",
    }
    for layer, tc in enumerate(transcoders):
        reference = folded(tc)
        assert_clear_of_thresholds(x[:, layer] @ reference.W_enc + reference.b_enc, reference.threshold)
        with torch.no_grad():
            feats, recon = tc.encode(x[:, layer]), tc.reconstruct(x[:, layer])
        assert 0 < (feats > 0).float().mean() < 0.9
        for key in ("feats", "feats_lazy"):
            torch.testing.assert_close(theirs[key][layer], feats, rtol=1e-5, atol=1e-5)
        for key in ("recon", "recon_lazy"):
            torch.testing.assert_close(theirs[key][layer], recon, rtol=1e-5, atol=1e-5)


def test_our_clt_comes_back_from_circuit_tracer_folders(circuit_tracer_run):
    """Ours -> circuit-tracer's layout -> load_sae gives the same CLT (scales folded), from our folder
    (with config.yaml) and from the one circuit-tracer's own writer made of it (no config.yaml)."""
    reference = folded(circuit_tracer_run["clt"])
    x = circuit_tracer_run["x"]
    for folder in (
        circuit_tracer_run["tmp"] / "clt" / "circuit_tracer",
        circuit_tracer_run["tmp"] / "clt_resaved",
    ):
        loaded = load_sae(folder)
        assert isinstance(loaded, CrossLayerTranscoder) and loaded.architecture == "jumprelu"
        for name in ("W_enc", "b_enc", "b_dec", "threshold", "input_scale", "output_scale"):
            assert torch.equal(getattr(loaded, name), getattr(reference, name)), (folder, name)
        for mine, theirs in zip(loaded.W_dec, reference.W_dec, strict=True):
            assert torch.equal(mine, theirs)
        with torch.no_grad():
            assert torch.equal(loaded.reconstruct(x), reference.reconstruct(x))


def test_a_relu_clt_circuit_tracer_wrote_loads_as_ours(circuit_tracer_run):
    loaded = load_sae(circuit_tracer_run["tmp"] / "relu_clt")
    theirs, x = circuit_tracer_run["out"]["relu_clt"], circuit_tracer_run["x"]
    assert isinstance(loaded, CrossLayerTranscoder) and torch.equal(loaded.threshold, torch.zeros(L, F))
    with torch.no_grad():
        feats = loaded.encode(x)
        assert 0 < (feats > 0).float().mean() < 0.9
        torch.testing.assert_close(feats, theirs["feats"].transpose(0, 1), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            loaded.reconstruct(x), theirs["recon"].transpose(0, 1), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("name", ["jumprelu", "batchtopk_skip"])
def test_our_transcoders_come_back_from_their_circuit_tracer_folder(circuit_tracer_run, name):
    transcoders, x = circuit_tracer_run["sets"][name]
    loaded = load_circuit_tracer(circuit_tracer_run["tmp"] / f"set_{name}")
    assert isinstance(loaded, list) and len(loaded) == L
    for layer, (mine, tc) in enumerate(zip(loaded, transcoders, strict=True)):
        assert (mine.architecture, mine.kind) == ("jumprelu", tc.kind)  # BatchTopK as its JumpReLU form
        with torch.no_grad():
            torch.testing.assert_close(
                mine.reconstruct(x[:, layer]), tc.reconstruct(x[:, layer]), rtol=1e-5, atol=1e-5
            )
    with pytest.raises(ValueError, match="transcoder set is one transcoder per layer.*load_circuit_tracer"):
        load_sae(circuit_tracer_run["tmp"] / f"set_{name}")


def test_topk_is_refused_never_saved_differently(tmp_path):
    clt = build_sae(multilayer_config("clt", "topk"), D, D, n_layers=L)
    with pytest.raises(ValueError, match="no top-k activation.*'jumprelu', or 'batchtopk'"):
        save_circuit_tracer(clt, tmp_path / "clt", **HOOKS)
    transcoders = [
        build_sae(SAEConfig(architecture="topk", kind="transcoder", d_sae=F, k=4), D, D) for _ in range(L)
    ]
    with pytest.raises(ValueError, match="layer 0: circuit-tracer 0.5 has no top-k activation"):
        save_circuit_tracer(transcoders, tmp_path / "set", **HOOKS)
    assert not (tmp_path / "clt").exists() and not (tmp_path / "set").exists()


def test_what_else_circuit_tracer_cannot_hold_is_refused(tmp_path):
    clt = build_sae(multilayer_config("clt", "jumprelu"), D, 24, n_layers=L)
    with pytest.raises(ValueError, match="one width d_model, but d_in=16 != d_out=24"):
        save_circuit_tracer(clt, tmp_path / "clt", **HOOKS)
    with pytest.raises(ValueError, match=r"block 0, but these layers are \[1, 2, 3\]"):
        save_circuit_tracer(
            build_sae(multilayer_config("clt", "jumprelu"), D, D, n_layers=L),
            tmp_path / "c",
            **HOOKS,
            layers=[1, 2, 3],
        )
    with pytest.raises(ValueError, match="inside a block"):
        save_circuit_tracer(
            build_sae(multilayer_config("clt", "jumprelu"), D, D, n_layers=L),
            tmp_path / "c",
            input_hook="hook_embed.{layer}",
            output_hook="blocks.{layer}.hook_mlp_out",
        )


@pytest.mark.parametrize("name", ["clt_batchtopk", "clt_batchtopk_model"])
def test_a_batchtopk_clt_comes_back_as_its_jumprelu_form(circuit_tracer_run, name):
    clt, x = circuit_tracer_run["clts"][name]
    loaded = load_sae(circuit_tracer_run["tmp"] / name)
    assert isinstance(loaded, CrossLayerTranscoder) and loaded.architecture == "jumprelu"
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), folded(clt).encode(x))
        torch.testing.assert_close(loaded.reconstruct(x), clt.reconstruct(x), rtol=1e-5, atol=1e-5)
