"""The `features` and `saes` documents of DESIGN.md §6, from the merged statistics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from raysae.analysis.stats import Examples, Totals


def band_label(band: list[float]) -> str:
    return f"{band[0] * 100:g}-{band[1] * 100:g}% of max"


NON_ACTIVATING = "non-activating"


class TokenText:
    """Token id -> its text (as the tokenizer decodes it alone), cached."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self.cache.get(token_id)
        if text is None:
            text = self.cache[token_id] = self.tokenizer.decode([token_id])
        return text


def feature_documents(
    sae_id: str, totals: Totals, histogram: np.ndarray, edges: np.ndarray, examples: Examples,
    windows: tuple[np.ndarray, np.ndarray, np.ndarray], logits: tuple[np.ndarray, ...],
    text: Callable[[int], str], bands: list[list[float]],
) -> Iterator[dict[str, Any]]:
    """One document per feature, in index order. `windows` = (start, token ids,
    activations) per entry of `examples`; `logits` = (top ids, top values,
    bottom ids, bottom values)."""
    d_sae = len(totals.count)
    freq, mean = totals.frequency, totals.mean
    bounds = np.searchsorted(examples.feat, np.arange(d_sae + 1))
    starts, win_tokens, win_acts = windows
    top_ids, top_vals, bottom_ids, bottom_vals = logits
    labels = [band_label(b) for b in bands] + [NON_ACTIVATING]
    for i in range(d_sae):
        top, banded = [], [[] for _ in labels]
        for e in range(bounds[i], bounds[i + 1]):
            valid = win_tokens[e] >= 0
            pos = int(examples.pos[e])
            example = {
                "tokens": [text(int(t)) for t in win_tokens[e][valid]],
                "activations": [float(a) for a in win_acts[e][valid]],
                "max_activation": float(examples.value[e]),
                "context_id": int(examples.context[e]),
                "start": int(starts[e]),
                "peak": pos - int(starts[e]) if pos >= 0 else -1,
            }
            group = int(examples.group[e])
            (top if group < 0 else banded[group]).append(example)
        yield {
            "sae_id": sae_id,
            "index": i,
            "act_frequency": float(freq[i]),
            "n_active": int(totals.count[i]),
            "max_activation": float(totals.max[i]),
            "mean_activation": float(mean[i]),
            "histogram": {"edges": edges[i].tolist(), "counts": histogram[i].tolist()},
            "top_examples": top,
            "band_examples": [{"band": label, "examples": ex} for label, ex in zip(labels, banded, strict=True)],
            "logits": {
                "top": [{"token": text(int(t)), "value": float(v)} for t, v in zip(top_ids[i], top_vals[i], strict=True)],
                "bottom": [{"token": text(int(t)), "value": float(v)}
                           for t, v in zip(bottom_ids[i], bottom_vals[i], strict=True)],
            },
        }
