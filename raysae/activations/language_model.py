"""TransformerLens 4.x models and reading their hook points.

`load_model` gives a `TransformerBridge` from a hub name, a local Hugging Face
directory, or (`random`) a tiny randomly initialised TL-native model; the
tokenizer comes with it. `hook_activations` runs one forward pass that stops
after the last layer any requested hook needs.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import torch
from torch import Tensor

from raysae.config import ModelConfig, RaysaeConfig
from raysae.devices import DTYPES, resolve_device
from raysae.errors import ConfigError


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise ConfigError([("model.tokenizer", f"{path} is not a local tokenizer directory")])
    return AutoTokenizer.from_pretrained(path)


def tokenizer_for(cfg: RaysaeConfig):
    """The tokenizer the model's actors use, loaded in the driver for packing contexts."""
    if cfg.model.tokenizer:
        return load_tokenizer(cfg.model.tokenizer)
    if cfg.model.name == "random":
        raise ConfigError([("model.tokenizer", "a `random` model needs a tokenizer directory")])
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cfg.model.name)


def load_model(cfg: ModelConfig, device: str | torch.device | None = None):
    """The model as a `TransformerBridge` in eval mode, with `.tokenizer` set."""
    from transformer_lens.model_bridge import TransformerBridge

    device = resolve_device(cfg.device) if device is None else torch.device(device)
    dtype = DTYPES[cfg.dtype]
    tokenizer = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else None
    if cfg.name == "random":
        model = _boot_random(cfg, tokenizer)
        model.to(device=device, dtype=dtype)
    else:
        local = Path(cfg.name)
        if not local.is_dir() and (local.is_absolute() or cfg.name.startswith(".")):
            raise ConfigError([("model.name", f"{cfg.name}: no such local model directory")])
        try:
            model = TransformerBridge.boot_transformers(
                cfg.name, device=device, dtype=dtype, tokenizer=tokenizer
            )
        except OSError as exc:
            raise ConfigError([("model.name", f"cannot load {cfg.name!r}: {exc}")]) from None
    model.eval()
    return model


def _boot_random(cfg: ModelConfig, tokenizer):
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    if tokenizer is None:
        raise ConfigError([("model.tokenizer", "a `random` model needs a tokenizer directory")])
    r = cfg.random
    d_vocab = r.d_vocab or len(tokenizer)
    if d_vocab < len(tokenizer):
        raise ConfigError(
            [("model.random.d_vocab", f"{d_vocab} is smaller than the tokenizer's {len(tokenizer)} tokens")]
        )
    if r.d_model % r.n_heads:
        raise ConfigError([("model.random.n_heads", f"must divide d_model={r.d_model}")])
    bridge_cfg = TransformerBridgeConfig(
        d_model=r.d_model,
        d_head=r.d_model // r.n_heads,
        n_layers=r.n_layers,
        n_ctx=r.n_ctx,
        n_heads=r.n_heads,
        d_vocab=d_vocab,
        act_fn="gelu",
        seed=r.seed,
    )
    # boot_native is added to TransformerBridge at import time, so the type checker cannot see it
    return TransformerBridge.boot_native(bridge_cfg, tokenizer=tokenizer)  # pyright: ignore[reportAttributeAccessIssue]


_LAYER = re.compile(r"^blocks\.(\d+)\.")


def block_index(hook_point: str) -> int | None:
    """The block a TransformerLens hook belongs to (`blocks.6.hook_resid_post` -> 6); None for
    hooks outside the blocks (embeddings, final norm, unembedding)."""
    match = _LAYER.match(hook_point)
    return int(match.group(1)) if match else None


def stop_layer(hook_points: list[str], n_layers: int) -> int | None:
    """The `stop_at_layer` that still runs every block the hooks read (None: run all)."""
    needed = []
    for hook in hook_points:
        block = block_index(hook)
        if block is None:
            return None  # embeddings are cheap; final-norm / unembed hooks need everything
        needed.append(block + 1)
    last = max(needed)
    return None if last >= n_layers else last


def check_hook_points(model, hook_points: list[str], paths: dict[str, str] | None = None) -> None:
    """Every hook point exists in `model`, or a `ConfigError` names the first that does not, by
    its config path (`paths`: hook -> dotted path; `model.hook_point` otherwise)."""
    unknown = [h for h in hook_points if h not in model.hook_dict]
    if unknown:
        near = difflib.get_close_matches(unknown[0], list(model.hook_dict), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        path = (paths or {}).get(unknown[0], "model.hook_point")
        raise ConfigError([(path, f"{unknown[0]!r} is not a hook point of the model{hint}")])


@torch.no_grad()
def hook_activations(model, tokens: Tensor, hook_points: list[str]) -> dict[str, Tensor]:
    """Activations [batch, seq, d] at each hook point from one (early-stopped) forward pass."""
    stop = stop_layer(hook_points, model.cfg.n_layers)
    _, cache = model.run_with_cache(
        tokens, names_filter=list(hook_points), stop_at_layer=stop, return_cache_object=False
    )
    return {h: cache[h] for h in hook_points}
