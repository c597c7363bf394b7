"""The `features` and `saes` documents of docs/architecture.md ("Store"), from the merged statistics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from raysae.analysis.stats import Examples, Totals


def band_label(band: list[float]) -> str:
    return f"{band[0] * 100:g}-{band[1] * 100:g}% of max"


NON_ACTIVATING = "non-activating"


def descending_ranks(values: np.ndarray) -> np.ndarray:
    """Each feature's place (0 = first) when sorted by `values` descending, ties by index."""
    order = np.lexsort((np.arange(len(values)), -np.asarray(values, dtype=np.float64)))
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[order] = np.arange(len(values))
    return ranks


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


class FeatureDocuments:
    """Builds the document of any feature on demand (`docs(i)`), so a writer can
    rebuild one it has to write again without holding every document in memory.

    `windows` = (start, token ids, activations) per entry of `examples`;
    `logits` = (top ids, top values, bottom ids, bottom values).
    """

    def __init__(
        self,
        sae_id: str,
        totals: Totals,
        histogram: np.ndarray,
        edges: np.ndarray,
        examples: Examples,
        windows: tuple[np.ndarray, np.ndarray, np.ndarray],
        logits: tuple[np.ndarray, ...],
        text: Callable[[int], str],
        bands: list[list[float]],
    ):
        self.sae_id, self.totals, self.histogram, self.edges = sae_id, totals, histogram, edges
        self.examples, self.windows, self.logits, self.text = examples, windows, logits, text
        self.frequency, self.mean = totals.frequency, totals.mean
        self.bounds = np.searchsorted(examples.feat, np.arange(len(totals.count) + 1))
        self.labels = [band_label(b) for b in bands] + [NON_ACTIVATING]
        self.rank_frequency = descending_ranks(totals.count)
        self.rank_max = descending_ranks(totals.max)

    def __len__(self) -> int:
        return len(self.totals.count)

    def _example(self, e: int) -> dict[str, Any]:
        starts, win_tokens, win_acts = self.windows
        valid = win_tokens[e] >= 0
        pos, start = int(self.examples.pos[e]), int(starts[e])
        return {
            "tokens": [self.text(int(t)) for t in win_tokens[e][valid]],
            "activations": [float(a) for a in win_acts[e][valid]],
            "max_activation": float(self.examples.value[e]),
            "context_id": int(self.examples.context[e]),
            "start": start,
            "peak": pos - start if pos >= 0 else -1,
        }

    def _tokens(self, ids, values) -> list[dict[str, Any]]:
        return [{"token": self.text(int(t)), "value": float(v)} for t, v in zip(ids, values, strict=True)]

    def __call__(self, i: int) -> dict[str, Any]:
        top, banded = [], [[] for _ in self.labels]
        for e in range(self.bounds[i], self.bounds[i + 1]):
            group = int(self.examples.group[e])
            (top if group < 0 else banded[group]).append(self._example(e))
        top_ids, top_vals, bottom_ids, bottom_vals = self.logits
        t = self.totals
        return {
            "sae_id": self.sae_id,
            "index": i,
            "act_frequency": float(self.frequency[i]),
            "n_active": int(t.count[i]),
            "max_activation": float(t.max[i]),
            "mean_activation": float(self.mean[i]),
            "rank_frequency": int(self.rank_frequency[i]),
            "rank_max": int(self.rank_max[i]),
            "histogram": {"edges": self.edges[i].tolist(), "counts": self.histogram[i].tolist()},
            "top_examples": top,
            "band_examples": [
                {"band": label, "examples": ex} for label, ex in zip(self.labels, banded, strict=True)
            ],
            "logits": {
                "top": self._tokens(top_ids[i], top_vals[i]),
                "bottom": self._tokens(bottom_ids[i], bottom_vals[i]),
            },
        }
