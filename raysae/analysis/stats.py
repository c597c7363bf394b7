"""Exact per-feature statistics from encoded batches (no Ray here).

Everything merges associatively, so any split of the contexts over any number
of actors gives the same answer as one process:
- `Totals`: token/firing counts, activation sums and maxima (added / maxed);
- `Peaks`: every (context, feature) peak > 0 (concatenated; selection sorts);
- `select_examples`: top contexts by peak (ties: lower context id first),
  band examples and non-activating contexts chosen by a fixed hash of
  (context id, feature), so the choice is a pure function of the data;
- `histogram_counts`: per-feature histograms over active tokens with edges
  `linspace(0, max, bins + 1)`, binned exactly as `numpy.histogram` does;
- `example_windows`: per-token activations around the chosen peaks.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from raysae.analysis.encode import EncodedBatch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def example_priority(context_ids: np.ndarray, feats: np.ndarray | int) -> np.ndarray:
    """A fixed pseudo-random uint64 per (context id, feature): splitmix64 of both."""
    with np.errstate(over="ignore"):
        z = np.asarray(context_ids, dtype=np.uint64) * _GOLDEN + np.asarray(feats, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class Totals:
    """Dense per-feature sums over every analyzed token."""

    def __init__(self, d_sae: int):
        self.n_tokens = 0
        self.count = np.zeros(d_sae, dtype=np.int64)
        self.total = np.zeros(d_sae, dtype=np.float64)
        self.max = np.zeros(d_sae, dtype=np.float32)

    def add(self, batch: EncodedBatch) -> None:
        self.n_tokens += batch.n_tokens
        self.count += batch.count
        self.total += batch.total
        np.maximum(self.max, batch.max, out=self.max)

    @property
    def frequency(self) -> np.ndarray:
        return self.count / max(self.n_tokens, 1)

    @property
    def mean(self) -> np.ndarray:
        """Mean activation over the tokens where the feature fires (0 if it never does)."""
        return np.divide(self.total, self.count, out=np.zeros_like(self.total), where=self.count > 0)


class Peaks:
    """Every (context, feature) whose peak is > 0, gathered over batches."""

    def __init__(self):
        self._parts: list[tuple[np.ndarray, ...]] = []

    def add(self, batch: EncodedBatch, context_ids: np.ndarray) -> None:
        ctx = np.asarray(context_ids, dtype=np.int64)[batch.peak_rows]
        self._parts.append((ctx, batch.peak_feats, batch.peak_vals, batch.peak_pos))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(context ids, features, peak values, peak positions)."""
        if not self._parts:
            return (
                np.zeros(0, np.int64),
                np.zeros(0, np.int32),
                np.zeros(0, np.float32),
                np.zeros(0, np.int32),
            )
        ctx, feats, vals, pos = (np.concatenate(col) for col in zip(*self._parts, strict=True))
        return ctx, feats, vals, pos


class Examples(NamedTuple):
    """Chosen examples, one entry each, grouped by feature and ordered within it."""

    feat: np.ndarray
    group: np.ndarray
    """-1: top examples; b >= 0: band b; len(bands): non-activating."""
    context: np.ndarray
    value: np.ndarray
    """The context's peak activation (0 for non-activating examples)."""
    pos: np.ndarray
    """The peak position (non-activating: -1, shown from the context's start)."""


def _first_per_group(keys: np.ndarray, limit: int) -> np.ndarray:
    """Mask of the first `limit` entries of each run of equal `keys` (already sorted)."""
    starts = np.searchsorted(keys, keys, side="left")
    return (np.arange(len(keys)) - starts) < limit


def select_examples(
    peaks: tuple[np.ndarray, ...],
    fmax: np.ndarray,
    context_ids: np.ndarray,
    *,
    n_top: int,
    bands: list[list[float]],
    per_band: int,
) -> Examples:
    """Top contexts by peak, `per_band` sampled contexts per band of the max, and
    `per_band` contexts where the feature never fires."""
    ctx, feat, val, pos = peaks
    parts = []
    order = np.lexsort((ctx, -val, feat))
    keep = order[_first_per_group(feat[order], n_top)]
    parts.append((feat[keep], np.full(len(keep), -1), ctx[keep], val[keep], pos[keep]))

    if per_band:
        v = val.astype(np.float64)
        m = fmax.astype(np.float64)[feat]
        prio = example_priority(ctx, feat)
        for b, (low, high) in enumerate(bands):
            inside = (v >= low * m) & ((v < high * m) if high < 1 else (v <= m))
            idx = np.flatnonzero(inside)
            order = idx[np.lexsort((ctx[idx], prio[idx], feat[idx]))]
            keep = order[_first_per_group(feat[order], per_band)]
            parts.append((feat[keep], np.full(len(keep), b), ctx[keep], val[keep], pos[keep]))
        parts.append(
            _non_activating(ctx, feat, len(fmax), np.asarray(context_ids, np.int64), per_band, len(bands))
        )

    cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
    order = np.lexsort((np.arange(len(cols[0])), cols[1], cols[0]))  # by feature, then group, stable
    return Examples(*(c[order] for c in cols))


def _non_activating(ctx, feat, d_sae: int, context_ids: np.ndarray, k: int, group: int):
    """Per feature, the first `k` contexts where it never fires, walking the contexts
    in a fixed hashed order from a feature-dependent start."""
    ranked = context_ids[np.argsort(example_priority(context_ids, 0), kind="stable")]
    n = len(ranked)
    by_feat = np.lexsort((ctx, feat))
    starts = np.searchsorted(feat[by_feat], np.arange(d_sae + 1))
    offsets = (example_priority(np.arange(d_sae), 1) % np.uint64(max(n, 1))).astype(np.int64)
    feats, ctxs = [], []
    for f in range(d_sae):
        active = ctx[by_feat[starts[f] : starts[f + 1]]]
        if len(active) >= n:
            continue
        cand = ranked[(offsets[f] + np.arange(min(n, k + len(active)))) % n]
        chosen = cand[~np.isin(cand, active)][:k]
        feats.append(np.full(len(chosen), f))
        ctxs.append(chosen)
    feats = np.concatenate(feats) if feats else np.zeros(0, np.int64)
    ctxs = np.concatenate(ctxs) if ctxs else np.zeros(0, np.int64)
    return feats, np.full(len(feats), group), ctxs, np.zeros(len(feats), np.float32), np.full(len(feats), -1)


def histogram_edges(fmax: np.ndarray, bins: int) -> np.ndarray:
    """[d_sae, bins + 1] float64: `numpy.linspace(0, max, bins + 1)` of each feature.

    Computed as linspace does for one scalar stop (`i * (max / bins)`, last edge
    `max`); linspace over an array of stops switches every row to another
    rounding as soon as one stop is 0 (a dead feature).
    """
    top = fmax.astype(np.float64)
    edges = np.arange(bins + 1, dtype=np.float64)[None, :] * (top / bins)[:, None]
    edges[:, -1] = top
    return edges


def histogram_counts(batch: EncodedBatch, edges: np.ndarray) -> np.ndarray:
    """[d_sae, bins] int64 counts of this batch's active entries; bin i holds
    edges[i] <= v < edges[i + 1], the last bin also v == max (numpy's rule)."""
    d_sae, bins = edges.shape[0], edges.shape[1] - 1
    if not len(batch.vals):
        return np.zeros((d_sae, bins), dtype=np.int64)
    v = batch.vals.astype(np.float64)
    f = batch.feats.astype(np.int64)
    top = edges[f, -1]
    b = np.clip(np.floor(v / top * bins), 0, bins - 1).astype(np.int64)
    for _ in range(4):  # the floating-point guess is at most a bin off; settle it on the edges
        lower = v < edges[f, b]
        upper = (v >= edges[f, b + 1]) & (b < bins - 1)
        if not (lower.any() or upper.any()):
            break
        b = b - lower + upper
    return np.bincount(f * bins + b, minlength=d_sae * bins).reshape(d_sae, bins)


def example_windows(
    batch: EncodedBatch,
    context_ids: np.ndarray,
    tokens: np.ndarray,
    d_sae: int,
    examples: Examples,
    before: int,
    after: int,
):
    """Windows of the `examples` whose context is in this batch: (their indices in
    `examples`, start position, token ids [n, W], activations [n, W]); -1 / nan pad."""
    ctx_ids = np.asarray(context_ids, dtype=np.int64)
    lookup = np.argsort(ctx_ids, kind="stable")
    slot = np.minimum(np.searchsorted(ctx_ids[lookup], examples.context), len(ctx_ids) - 1)
    here = ctx_ids[lookup][slot] == examples.context
    which = np.flatnonzero(here)
    row = lookup[slot[here]]
    seq = tokens.shape[1]
    width = before + after + 1
    peak = examples.pos[which]
    start = np.where(peak >= 0, np.maximum(peak - before, 0), 0)
    end = np.where(peak >= 0, np.minimum(peak + after, seq - 1), min(width, seq) - 1)
    p = start[:, None] + np.arange(width)[None, :]
    valid = p <= end[:, None]
    pc = np.minimum(p, seq - 1)
    tok = np.where(valid, tokens[row[:, None], pc], -1).astype(np.int64)
    keys = (row[:, None].astype(np.int64) * seq + pc) * d_sae + examples.feat[which][:, None]
    sparse_keys = batch.rows.astype(np.int64) * d_sae + batch.feats
    hit = np.minimum(np.searchsorted(sparse_keys, keys), max(len(sparse_keys) - 1, 0))
    found = (sparse_keys[hit] == keys) if len(sparse_keys) else np.zeros(keys.shape, bool)
    acts = np.where(found, batch.vals[hit] if len(sparse_keys) else 0.0, 0.0).astype(np.float32)
    acts = np.where(valid, acts, np.nan).astype(np.float32)
    return which, start, tok, acts


def log_density(count: np.ndarray, n_tokens: int, bins_per_decade: int = 4) -> dict:
    """The feature-density histogram of an SAE: how many features fire at each
    log10 frequency, from the rarest frequency observable (1 / n_tokens) up to 1.
    Dead features (count 0) have no logarithm and are counted apart."""
    alive = count > 0
    low = np.floor(np.log10(1.0 / max(n_tokens, 1)))
    n_bins = max(int(-low) * bins_per_decade, 1)
    edges = np.linspace(low, 0.0, n_bins + 1)
    counts, _ = np.histogram(np.log10(count[alive] / max(n_tokens, 1)), bins=edges)
    return {"log10_edges": edges.tolist(), "counts": counts.tolist(), "dead": int((~alive).sum())}
