"""The pieces of `bench/gpu.py` that run at any size on any device (and so are tested on CPU):
what the machine lacks, the hand-written reference step, raysae's step, the timer, and the
offline corpus and tokenizer the Ray parts read (nothing comes from the hub)."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from raysae.config import SAEConfig, TrainConfig
from raysae.models import build_sae
from raysae.synthetic import PlantedDictionary
from raysae.training import SAETrainer

REFUSAL_EXIT = 3
"""Exit status of a refusal (no CUDA, no Triton): distinct from argparse's 2 and a crash's 1."""


def missing() -> list[str]:
    """What this machine lacks for the GPU benchmark, one line each; empty when nothing."""
    lacks = []
    if not torch.cuda.is_available():
        lacks.append(
            f"no CUDA device: torch {torch.__version__} sees none (torch.cuda.is_available() is False)"
        )
    if importlib.util.find_spec("triton") is None:
        lacks.append("no Triton: `import triton` fails (pip install -e '.[gpu]', i.e. triton>=3.5)")
    return lacks


def check_precision_field() -> None:
    """bf16 runs need `train.precision`; say so plainly where this raysae has no such field."""
    if "precision" not in TrainConfig.model_fields:
        raise SystemExit("this raysae has no `train.precision` config field: the bf16 rows cannot run")


def batches(d_in: int, d_sae: int, k: int, batch: int, n: int, device: torch.device) -> list[Tensor]:
    """`n` distinct [batch, d_in] fp32 batches of a planted dictionary (sparse codes, like real
    activations, so top-k sees structure), made on the CPU with a fixed seed, then moved."""
    data = PlantedDictionary(d_in, d_sae // 2, mean_active=k / 2, seed=0)
    gen = torch.Generator().manual_seed(1)
    return [data.sample(batch, gen).to(device) for _ in range(n)]


class ReferenceTopK:
    """The hand-written step of the issue: fp32 master weights and Adam state, bf16 autocast,
    top-k, `embedding_bag` sparse decode (no dense [batch, d_sae] scatter), MSE, Adam.

    No AuxK, no schedules, no decoder constraint: the floor any trainer must clear.
    """

    def __init__(self, d_in: int, d_sae: int, k: int, device: torch.device, lr: float = 3e-4):
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(d_sae, d_in, generator=gen)
        w = w / w.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w.to(device))
        self.W_enc = torch.nn.Parameter(w.T.contiguous().to(device))
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae, device=device))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in, device=device))
        self.k, self.device = k, device
        params = [self.W_enc, self.b_enc, self.W_dec, self.b_dec]
        self.opt = torch.optim.Adam(params, lr=lr, fused=device.type == "cuda")

    def loss(self, x: Tensor) -> Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            # The fp32 bias promotes the bf16 matmul's output: top-k runs on fp32, as in the issue.
            pre = (x - self.b_dec) @ self.W_enc + self.b_enc
            vals, idx = pre.topk(self.k, dim=-1, sorted=False)
            vals = vals.relu()
            recon = F.embedding_bag(idx, self.W_dec, per_sample_weights=vals.to(self.W_dec.dtype), mode="sum")
        return (recon.float() + self.b_dec - x).pow(2).sum(-1).mean()

    def step(self, x: Tensor) -> Tensor:
        loss = self.loss(x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


def dense_reference_loss(ref: ReferenceTopK, x: Tensor) -> Tensor:
    """The same loss in fp32 with a dense scatter decode: what `ReferenceTopK.loss` must equal
    (to bf16 tolerance); the test's independent check of the bench's own baseline."""
    pre = (x - ref.b_dec) @ ref.W_enc + ref.b_enc
    vals, idx = pre.topk(ref.k, dim=-1)
    acts = torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
    return (acts @ ref.W_dec + ref.b_dec - x).pow(2).sum(-1).mean()


def raysae_trainer(
    d_in: int,
    d_sae: int,
    k: int,
    batch: int,
    precision: str,
    device: torch.device,
    init: Tensor,
    *,
    architecture: str = "topk",
    aux_dead_tokens: int | None = None,
) -> SAETrainer:
    """raysae's own step (`SAETrainer`, what `fit` and the Ray Train worker run), initialised on
    `init`. AuxK is on (topk's default `aux_coefficient`); `aux_dead_tokens` lowers the dead
    threshold so the AuxK branch really runs in a short timed window."""
    extra = {} if aux_dead_tokens is None else {"dead_tokens_threshold": aux_dead_tokens}
    sae = build_sae(SAEConfig(architecture=architecture, d_sae=d_sae, k=k, **extra), d_in)
    sae.to(device)
    if precision != "fp32":
        check_precision_field()
    train = TrainConfig(
        total_tokens=10**12,  # never done inside the timed window; the schedules stay at their peak
        batch_size=batch,
        init_tokens=batch,
        device=str(device),
        log_every_steps=10**9,
        lr_warmup_fraction=0.0,
        **({"precision": precision} if precision != "fp32" else {}),
    )
    trainer = SAETrainer(sae, train)
    sae.initialize_from_batch(init)
    return trainer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tokens_per_s(
    step: Callable[[Tensor], object], data: Sequence[Tensor], device: torch.device, warmup: int, steps: int
) -> float:
    """Rows per second of `step` over `steps` batches (cycling `data`) after `warmup` steps.

    On CUDA the window is bounded by two CUDA events after a synchronize, so it holds the
    kernels' time and nothing queued before it; elsewhere, wall time around a synchronize.
    """
    for i in range(warmup):
        step(data[i % len(data)])
    synchronize(device)
    rows = sum(len(data[i % len(data)]) for i in range(steps))
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(steps):
            step(data[i % len(data)])
        end.record()
        end.synchronize()
        return rows / (start.elapsed_time(end) / 1000)
    t0 = time.perf_counter()
    for i in range(steps):
        step(data[i % len(data)])
    return rows / (time.perf_counter() - t0)


def write_tokenizer(directory: Path, words: int = 2000) -> Path:
    """A word-level tokenizer over `w0 … w{words-1}` with BOS/EOS, saved where
    `AutoTokenizer.from_pretrained` loads it: the offline stand-in for GPT-2's."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2, **{f"w{i}": i + 3 for i in range(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # pyright: ignore[reportAttributeAccessIssue]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    )
    fast.save_pretrained(directory)
    return directory


def write_corpus(directory: Path, n_words: int, words: int = 2000, doc_words: int = 4096) -> Path:
    """A jsonl corpus of `n_words` random words in documents of `doc_words` (one token each
    under `write_tokenizer`), so a config can ask for that many tokens of contexts."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = np.array([f"w{i}" for i in range(words)])
    path = directory / "corpus.jsonl"
    with path.open("w") as f:
        for start in range(0, n_words, doc_words):
            ids = rng.integers(0, words, size=min(doc_words, n_words - start))
            f.write(json.dumps({"text": " ".join(names[ids])}) + "\n")
    return directory
