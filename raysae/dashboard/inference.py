"""Which features fire on a text: tokenise it as the analysis does, run the SAE's model to
the SAE's hook (stopping after the last block needed), encode, and keep per token its top
features. No Flask here: `inference_views` draws the result.

The model and the SAE load on the first request that needs them and stay cached, a few of
each (least recently used first out), keyed by the model's config and the checkpoint path.
The browser's server is threaded: loading is serialised, and so is each model's forward (a
TransformerLens forward with a cache adds hooks to the shared module).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from raysae.config import ConfigError, RaysaeConfig

MAX_TOKENS = 256
"""Texts are cut to their first this many tokens (BOS not counted)."""
MAX_CHARS = 64 * MAX_TOKENS
"""Characters tokenised at most: a pasted book is not tokenised whole to keep 256 tokens."""
TOP_K = 5
"""Features listed per token."""


class InferenceError(Exception):
    """The model or SAE of an SAE document cannot be loaded or run here; the message says why."""


@dataclass(frozen=True)
class TokenFeatures:
    """One token of the text: its text (decoded alone), and its top features, strongest first,
    as (feature index, activation); none for BOS/padding, which the analysis leaves out too."""

    position: int
    token_id: int
    text: str
    excluded: bool
    features: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class Inference:
    """What the SAE's features do on one text."""

    sae_id: str
    tokens: list[TokenFeatures]
    n_text_tokens: int
    """Tokens of the (uncut) text, BOS not counted."""
    truncated: bool
    """The text was cut at `limit` tokens (or `MAX_CHARS` characters)."""
    limit: int
    strongest: list[tuple[int, float]]
    """Features by their peak on the text, strongest first (at most 20)."""
    feature: int | None = None
    activations: list[float | None] | None = None
    """`feature`'s activation per token (None on BOS/padding)."""
    peak: float = 0.0
    """`feature`'s largest activation on the text."""


@dataclass
class Loaded:
    """A model with its tokenizer, a forward lock, and its token texts as the analysis shows
    them (`raysae.analysis.token_text.TokenText`: decoded alone, byte tokens by their bytes)."""

    model: Any
    tokenizer: Any
    token_text: Callable[[int], str]
    lock: threading.Lock = field(default_factory=threading.Lock)


class LRU:
    """A bounded, thread-safe cache of loaded things; `get(key, load)` loads at most once."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict[Hashable, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        with self.lock:  # held while loading: two requests never load the same model twice
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            value = load()
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
            return value


def checkpoint_config(directory: str) -> RaysaeConfig:
    """The config an SAE was trained under (its `raysae.json`), or an `InferenceError`."""
    from raysae.checkpoint import read_record

    if not Path(directory).is_dir():
        raise InferenceError(f"the SAE's checkpoint directory {directory} does not exist here")
    try:
        record = read_record(directory)
    except (OSError, ValueError) as exc:
        raise InferenceError(f"cannot read the SAE's record in {directory}: {exc}") from None
    if "config" not in record:
        raise InferenceError(
            f"{directory} has no raysae.json with the training config, so its model is unknown"
        )
    try:
        return RaysaeConfig.model_validate(record["config"])
    except ValidationError as exc:
        raise InferenceError(f"the training config in {directory} is not valid: {exc}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Engine:
    """Loads models and SAEs on demand (cached, bounded) and runs texts through them."""

    def __init__(self, *, device: str = "cpu", models: int = 2, saes: int = 8):
        self.device = device
        self.models = LRU(models)
        self.saes = LRU(saes)

    def model(self, cfg: RaysaeConfig) -> Loaded:
        """The SAE's model on this engine's device, with its tokenizer."""
        model_cfg = cfg.model.model_copy(update={"extra_hook_points": [], "device": self.device})

        def load() -> Loaded:
            from raysae.activations.language_model import load_model
            from raysae.analysis.token_text import TokenText

            try:
                model = load_model(model_cfg, self.device)
            except Exception as exc:  # any reason it cannot load is shown, not raised as a 500
                raise InferenceError(f"cannot load the model {model_cfg.name!r}: {_reason(exc)}") from None
            if getattr(model, "tokenizer", None) is None:
                raise InferenceError(f"the model {model_cfg.name!r} has no tokenizer")
            return Loaded(model, model.tokenizer, TokenText(model.tokenizer))

        return self.models.get(model_cfg.model_dump_json(), load)

    def sae(self, directory: str) -> Any:
        def load() -> Any:
            from raysae.checkpoint import load_sae

            try:
                return load_sae(directory, "cpu" if self.device == "auto" else self.device)
            except Exception as exc:  # a broken checkpoint is a message on the page
                raise InferenceError(f"cannot load the SAE in {directory}: {_reason(exc)}") from None

        return self.saes.get(directory, load)

    def run(
        self, sae_doc: dict[str, Any], text: str, feature: int | None = None, top_k: int = TOP_K
    ) -> Inference:
        """Per token of `text` its top `top_k` features, and (`feature`, default the strongest
        on the text) that feature's activation per token."""
        directory = str(sae_doc.get("checkpoint") or "")
        if not directory:
            raise InferenceError(f"the SAE document {sae_doc['_id']!r} names no checkpoint directory")
        cfg = checkpoint_config(directory)
        sae = self.sae(directory)
        if feature is not None and not 0 <= feature < sae.d_sae:
            raise ValueError(f"feature must be in 0–{sae.d_sae - 1}, got {feature}")
        loaded = self.model(cfg)
        hook = str(sae_doc.get("hook_point") or cfg.model.hook_point)  # a transcoder reads it too
        limit = context_limit(loaded.model)
        ids, n_text, cut = tokenize(loaded.tokenizer, cfg, text, limit)
        acts = encode(loaded, sae, hook, ids)
        excluded = excluded_ids(loaded.tokenizer)
        keep = torch.tensor([i not in excluded for i in ids], dtype=torch.bool)
        acts[~keep] = 0
        return summarise(sae_doc["_id"], loaded, ids, keep, acts, (n_text, cut, limit), feature, top_k)


def context_limit(model: Any) -> int:
    """MAX_TOKENS, or fewer where the model's context is shorter (BOS takes one)."""
    n_ctx = int(getattr(model.cfg, "n_ctx", 0) or 0)
    return min(MAX_TOKENS, n_ctx - 1) if n_ctx > 1 else MAX_TOKENS


def excluded_ids(tokenizer: Any) -> set[int]:
    from raysae.analysis.sources import excluded_token_ids

    return set(excluded_token_ids(tokenizer))


def tokenize(tokenizer: Any, cfg: RaysaeConfig, text: str, limit: int) -> tuple[list[int], int, bool]:
    """The text's ids as the analysis packs them (BOS first when `data.prepend_bos`), cut at
    `limit` text tokens; (ids, the text's token count, whether it was cut)."""
    cut = len(text) > MAX_CHARS
    body = tokenizer(text[:MAX_CHARS], add_special_tokens=False, verbose=False)["input_ids"]
    n_text = len(body)
    cut = cut or n_text > limit
    ids = list(body[:limit])
    if cfg.data.prepend_bos:
        if tokenizer.bos_token_id is None:
            raise InferenceError("the config prepends BOS but the tokenizer has no BOS token")
        ids = [tokenizer.bos_token_id, *ids]
    return ids, n_text, cut


def encode(loaded: Loaded, sae: Any, hook: str, ids: list[int]) -> torch.Tensor:
    """[tokens, d_sae] feature activations (float32) of the ids at the hook."""
    from raysae.activations.language_model import check_hook_points, hook_activations

    if not ids:
        return torch.zeros(0, sae.d_sae)
    model = loaded.model
    try:
        check_hook_points(model, [hook])
    except ConfigError as exc:
        raise InferenceError(_reason(exc)) from None
    device = next(model.parameters()).device
    with loaded.lock, torch.no_grad():
        x = hook_activations(model, torch.tensor([ids], device=device), [hook])[hook][0]
        dtype = next(sae.parameters()).dtype
        f = sae.encode(x.to(device=next(sae.parameters()).device, dtype=dtype))
    return f.float().cpu()


def summarise(
    sae_id: str,
    loaded: Loaded,
    ids: list[int],
    keep: torch.Tensor,
    acts: torch.Tensor,
    lengths: tuple[int, bool, int],
    feature: int | None,
    top_k: int,
) -> Inference:
    """The result from the dense activations; `lengths` = (text tokens, cut, limit)."""
    n_text, cut, limit = lengths
    k = min(top_k, acts.shape[1]) if acts.numel() else 0
    values, indices = acts.topk(k, dim=1) if k else (acts[:, :0], acts[:, :0].long())
    tokens = []
    # Whole tensors to lists once: per-row tensor indexing costs more than the rest of the page.
    rows = zip(ids, values.tolist(), indices.tolist(), keep.tolist(), strict=True)
    for pos, (token_id, row_values, row_indices, kept) in enumerate(rows):
        feats = tuple((i, v) for v, i in zip(row_values, row_indices, strict=True) if v > 0)
        tokens.append(TokenFeatures(pos, token_id, loaded.token_text(token_id), not kept, feats))
    peaks = acts.max(dim=0).values if acts.shape[0] else torch.zeros(acts.shape[1])
    top = peaks.topk(min(20, peaks.numel()))
    strongest = [
        (int(i), float(v)) for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True) if v > 0
    ]
    if feature is None and strongest:
        feature = strongest[0][0]
    activations = None
    peak = 0.0
    if feature is not None:
        column = acts[:, feature].tolist()
        activations = [a if kept else None for a, kept in zip(column, keep.tolist(), strict=True)]
        peak = float(peaks[feature]) if peaks.numel() else 0.0
    return Inference(
        sae_id=sae_id,
        tokens=tokens,
        n_text_tokens=n_text,
        truncated=cut,
        limit=limit,
        strongest=strongest,
        feature=feature,
        activations=activations,
        peak=peak,
    )


def as_json(result: Inference) -> dict[str, Any]:
    """The API's document of a result."""
    doc: dict[str, Any] = {
        "sae_id": result.sae_id,
        "limit": result.limit,
        "truncated": result.truncated,
        "n_text_tokens": result.n_text_tokens,
        "tokens": [
            {
                "position": t.position,
                "id": t.token_id,
                "text": t.text,
                "excluded": t.excluded,
                "features": [{"index": i, "activation": a} for i, a in t.features],
            }
            for t in result.tokens
        ],
        "strongest": [{"index": i, "activation": a} for i, a in result.strongest],
    }
    if result.feature is not None:
        doc["feature"] = {"index": result.feature, "activations": result.activations, "peak": result.peak}
    return doc
