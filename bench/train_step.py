"""Tokens/s of the bare training loop (`raysae.fit`) against a plain PyTorch TopK loop.

Both run in this process on the same pre-generated batches, so the ratio is
meaningful on any machine; absolute figures depend on the machine.

    python bench/train_step.py                     # d_in 512, 8x, k 32, batch 4096
    python bench/train_step.py --steps 20 --architectures topk jumprelu
"""

from __future__ import annotations

import platform
import time

import torch
from shapes import shape_parser  # bench/ is the script's folder, so on sys.path

from raysae import build_sae, fit
from raysae.config import SAEConfig, TrainConfig
from raysae.synthetic import PlantedDictionary


def plain_topk_loop(batches, d_in: int, d_sae: int, k: int, lr: float, device) -> None:
    """The minimal hand-written TopK SAE step: encode, top-k, decode, MSE, Adam."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(d_sae, d_in, generator=gen)
    W_dec = torch.nn.Parameter((w / w.norm(dim=1, keepdim=True)).to(device))
    W_enc = torch.nn.Parameter(W_dec.detach().T.clone())
    b_enc = torch.nn.Parameter(torch.zeros(d_sae, device=device))
    b_dec = torch.nn.Parameter(torch.zeros(d_in, device=device))
    opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=lr)
    for x in batches:
        pre = (x - b_dec) @ W_enc + b_enc
        vals, idx = pre.topk(k, dim=-1, sorted=False)
        acts = torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        loss = (acts @ W_dec + b_dec - x).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = shape_parser(__doc__)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--architectures", nargs="+", default=["topk", "batchtopk", "jumprelu", "standard"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    d_sae = args.d_in * args.expansion
    data = PlantedDictionary(args.d_in, d_sae // 2, mean_active=args.k / 2, seed=0)
    gen = torch.Generator().manual_seed(1)
    pool = [data.sample(args.batch, gen).to(device) for _ in range(4)]
    batches = [pool[i % len(pool)] for i in range(args.steps)]
    tokens = args.steps * args.batch

    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device}"
    )
    print(f"# d_in {args.d_in}, d_sae {d_sae}, k {args.k}, batch {args.batch}, {args.steps} timed steps")
    plain_topk_loop(batches[:2], args.d_in, d_sae, args.k, 3e-4, device)  # warm-up
    base = tokens / timed(lambda: plain_topk_loop(batches, args.d_in, d_sae, args.k, 3e-4, device))
    print(f"{'loop':<22} {'tokens/s':>10} {'vs plain':>9}")
    print(f"{'plain topk (baseline)':<22} {base:>10.0f} {1.0:>9.2f}")
    train = TrainConfig(
        total_tokens=tokens,
        batch_size=args.batch,
        init_tokens=args.batch,
        device=str(device),
        log_every_steps=10**9,
    )
    for arch in args.architectures:
        cfg = SAEConfig(architecture=arch, expansion_factor=args.expansion, k=args.k)
        warm = TrainConfig(**{**train.model_dump(), "total_tokens": 2 * args.batch})
        fit(build_sae(cfg, args.d_in), batches[:2], warm)
        sae = build_sae(cfg, args.d_in)
        rate = tokens / timed(lambda sae=sae: fit(sae, batches, train))
        print(f"{'raysae.fit ' + arch:<22} {rate:>10.0f} {rate / base:>9.2f}")


if __name__ == "__main__":
    main()
