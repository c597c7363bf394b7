"""The CPU-checkable parts of bench/gpu.py: arguments, the refusal without CUDA, the reference
step against a dense fp32 one, raysae's step and the timer at tiny sizes, and the offline
tokenizer, corpus, model and configs the Ray sections build (no Ray is started)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import gpu  # noqa: E402
import gpu_parts  # noqa: E402

CPU = torch.device("cpu")


def test_arguments():
    args = gpu.parse_args(["--out", "x.json"])
    assert args.only == gpu.SECTIONS and args.batch == 4096 and args.population == 8
    assert gpu.SHAPES == [(768, 24_576, 32), (2304, 65_536, 64)]
    assert gpu.parse_args(["--out", "x", "--only", "steps", "live"]).only == ["steps", "live"]
    with pytest.raises(SystemExit):
        gpu.parse_args([])  # --out is required


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_refuses_without_cuda(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--out", str(out)]) == gpu_parts.REFUSAL_EXIT == 3
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "nothing was measured" in err
    assert not out.exists()  # no CPU number is reported as a GPU one


def test_missing_names_triton(monkeypatch):
    monkeypatch.setattr(gpu_parts.importlib.util, "find_spec", lambda name: None)
    assert any("no Triton" in line for line in gpu_parts.missing())


def test_reference_step_matches_dense_fp32():
    torch.manual_seed(0)
    ref = gpu_parts.ReferenceTopK(16, 64, 4, CPU)
    x = gpu_parts.batches(16, 64, 4, 256, 1, CPU)[0]
    # bf16 matmul inputs: agree with the dense fp32 loss to bf16's ~3 significant digits
    assert torch.allclose(ref.loss(x), gpu_parts.dense_reference_loss(ref, x), rtol=2e-2)
    first = float(ref.step(x))
    for _ in range(20):
        last = float(ref.step(x))
    assert last < first


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_raysae_step_and_timer(precision):
    data = gpu_parts.batches(16, 64, 4, 128, 2, CPU)
    trainer = gpu_parts.raysae_trainer(16, 64, 4, 128, precision, CPU, data[0], aux_dead_tokens=128)
    assert trainer.sae.d_sae == 64 and trainer.sae.cfg.aux_coefficient > 0
    if precision == "bf16":
        assert trainer.cfg.precision == "bf16"
    rate = gpu_parts.tokens_per_s(trainer.step, data, CPU, warmup=1, steps=3)
    assert rate > 0 and trainer.steps == 4 and trainer.tokens_seen == 4 * 128
    # the lowered dead threshold: latents unfired for a batch count as dead, so AuxK runs
    assert trainer.sae.dead_mask().dtype == torch.bool


def test_offline_tokenizer_corpus_and_model(tmp_path):
    from raysae.activations import load_model
    from raysae.activations.language_model import hook_activations, load_tokenizer
    from raysae.activations.tokens import pack_contexts
    from raysae.config import DataConfig, ModelConfig

    tok = load_tokenizer(str(gpu_parts.write_tokenizer(tmp_path / "tok", words=50)))
    assert tok("w0 w49", add_special_tokens=False)["input_ids"] == [3, 52]
    assert tok.bos_token_id == 1 and tok.eos_token_id == 2
    corpus = gpu_parts.write_corpus(tmp_path / "corpus", 4000, words=50, doc_words=500)
    contexts = pack_contexts(DataConfig(path=str(corpus), context_size=32), tok, 100)
    assert contexts.shape == (100, 32) and (contexts[:, 0] == 1).all()
    # The live section's model at a tiny size: a random TL-native model, stopped early.
    model = load_model(
        ModelConfig(
            name="random",
            tokenizer=str(tmp_path / "tok"),
            random={"d_model": 32, "n_layers": 4, "n_heads": 4, "n_ctx": 32, "d_vocab": 64},
        ),
        CPU,
    )
    acts = hook_activations(
        model, torch.as_tensor(contexts[:2], dtype=torch.long), ["blocks.1.hook_resid_post"]
    )
    assert acts["blocks.1.hook_resid_post"].shape == (2, 32, 32)


def test_ray_section_configs_validate(tmp_path):
    """Every override the Ray sections pass is a real, valid config key (no Ray is started)."""
    args = gpu.parse_args(["--out", "x", "--cache-tokens", "4096", "--live-tokens", "4096"])
    base = gpu.cache_config(args, tmp_path, "single")
    assert base.activations.dtype == "bfloat16" and base.train.precision == "bf16"
    assert base.train.workers.gpu and base.activations.actors.gpus == 1
    assert base.model.random.d_model == 768 and base.sae.k == 32
    # the bench's overrides win over bench/ray_train.py's (later ones replace earlier ones)
    assert base.activations.n_tokens == 4096 + 65536 and base.model.random.n_heads == 12
    assert base.train.total_tokens == args.train_tokens
    assert (tmp_path / "tokenizer" / "tokenizer.json").exists()
    pop = gpu.cache_config(args, tmp_path, "population", "train.population=[{train.lr: 0.001}]")
    assert len(pop.train.population) == 1


def test_live_config_is_gpt2_small_shaped(tmp_path):
    from raysae.activations.language_model import stop_layer

    cfg = gpu.live_config(
        gpu.parse_args(["--out", "x", "--cache-tokens", "4096", "--live-tokens", "4096"]), tmp_path
    )
    r = cfg.model.random
    assert (r.d_model, r.n_layers, r.n_heads, r.n_ctx, r.d_vocab) == (768, 12, 12, 1024, 50257)
    assert cfg.activations.source == "live" and cfg.activations.actors.gpus == 0.5
    assert stop_layer([cfg.model.hook_point], r.n_layers) == 7 and cfg.data.context_size == 1024
