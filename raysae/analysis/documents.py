"""The `features` and `saes` documents of docs/architecture.md ("Store"), from the merged statistics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from raysae.analysis.logits import DecoderLogits
from raysae.analysis.neighbours import Neighbours
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


class FeatureDocuments:
    """Builds the document of any feature on demand (`docs(i)`), so a writer can
    rebuild one it has to write again without holding every document in memory.

    `windows` = (start, token ids, activations) per entry of `examples`;
    `neighbours`: the SAE's own nearest decoder directions (None: not computed);
    `matches`: (sae_id, best match per feature) of each other SAE of its sweep in the same space.
    """

    def __init__(
        self,
        sae_id: str,
        totals: Totals,
        histogram: np.ndarray,
        edges: np.ndarray,
        examples: Examples,
        windows: tuple[np.ndarray, np.ndarray, np.ndarray],
        logits: DecoderLogits,
        text: Callable[[int], str],
        bands: list[list[float]],
        neighbours: Neighbours | None = None,
        matches: list[tuple[str, Neighbours]] | None = None,
    ):
        self.sae_id, self.totals, self.histogram, self.edges = sae_id, totals, histogram, edges
        self.examples, self.windows, self.logits, self.text = examples, windows, logits, text
        self.frequency, self.mean = totals.frequency, totals.mean
        self.bounds = np.searchsorted(examples.feat, np.arange(len(totals.count) + 1))
        self.labels = [band_label(b) for b in bands] + [NON_ACTIVATING]
        self.rank_frequency = descending_ranks(totals.count)
        self.rank_max = descending_ranks(totals.max)
        self.neighbours, self.matches = neighbours, matches or []

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

    def _peak_tokens(self, top: list[int]) -> list[str]:
        """The distinct texts of the tokens the top examples peak on, first seen first."""
        starts, win_tokens, _ = self.windows
        seen: dict[str, None] = {}
        for e in top:
            pos = int(self.examples.pos[e])
            if pos >= 0:
                seen.setdefault(self.text(int(win_tokens[e][pos - int(starts[e])])), None)
        return list(seen)

    def _neighbours(self, i: int) -> list[dict[str, Any]]:
        if self.neighbours is None:
            return []
        ids, cos = self.neighbours.indices[i], self.neighbours.cosines[i]
        return [{"index": int(j), "cosine": float(c)} for j, c in zip(ids, cos, strict=True)]

    def __call__(self, i: int) -> dict[str, Any]:
        top, banded, top_entries = [], [[] for _ in self.labels], []
        for e in range(self.bounds[i], self.bounds[i + 1]):
            group = int(self.examples.group[e])
            (top if group < 0 else banded[group]).append(self._example(e))
            if group < 0:
                top_entries.append(e)
        lg = self.logits
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
            "peak_tokens": self._peak_tokens(top_entries),
            "logits": {
                "top": self._tokens(lg.top_ids[i], lg.top_values[i]),
                "bottom": self._tokens(lg.bottom_ids[i], lg.bottom_values[i]),
                "histogram": {"edges": lg.edges[i].tolist(), "counts": lg.counts[i].tolist()},
            },
            "neighbours": self._neighbours(i),
            "matches": [
                {"sae_id": other, "index": int(m.indices[i, 0]), "cosine": float(m.cosines[i, 0])}
                for other, m in self.matches
            ],
        }
