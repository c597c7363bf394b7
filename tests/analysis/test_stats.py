"""Feature statistics against a dense, single-pass numpy reference; merging is split-invariant."""

import numpy as np
import pytest
import torch

from raysae import build_sae
from raysae.analysis.encode import encode_contexts, keep_mask
from raysae.analysis.stats import (
    Peaks,
    Totals,
    example_priority,
    example_windows,
    histogram_counts,
    histogram_edges,
    log_density,
    select_examples,
)
from raysae.config import SAEConfig

N_CTX, SEQ, D_IN, D_SAE, BOS = 24, 12, 16, 48, 1
BANDS = [[0.8, 1.0], [0.4, 0.6], [0.0, 0.2]]


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(3)
    sae = build_sae(SAEConfig(architecture="topk", d_sae=D_SAE, k=6), D_IN)
    with torch.no_grad():
        sae.b_enc.add_(torch.linspace(-0.6, 0.2, D_SAE))  # some rare, some frequent, some dead features
        sae.b_enc[:3] = -50.0
    acts = torch.randn(N_CTX, SEQ, D_IN)
    acts[3] = acts[5]  # two identical contexts: ties in the top examples
    tokens = np.random.default_rng(0).integers(2, 30, size=(N_CTX, SEQ)).astype(np.int32)
    tokens[:, 0] = BOS
    ids = np.arange(100, 100 + N_CTX, dtype=np.int64)  # context ids need not start at 0
    return sae, acts, tokens, ids


def run(sae, acts, tokens, ids, splits, *, n_top=4, per_band=3, bins=7, before=3, after=2):
    """Statistics computed batch by batch over `splits` (lists of context rows), in that order."""
    keep = torch.as_tensor(keep_mask(tokens, [BOS]))
    parts = [(encode_contexts(sae, acts[s], keep[s]), ids[s], tokens[s]) for s in splits]
    totals, peaks = Totals(D_SAE), Peaks()
    for enc, cid, _ in parts:
        totals.add(enc)
        peaks.add(enc, cid)
    edges = histogram_edges(totals.max, bins)
    ex = select_examples(
        peaks.arrays(),
        totals.max,
        np.concatenate([p[1] for p in parts]),
        n_top=n_top,
        bands=BANDS,
        per_band=per_band,
    )
    hist = sum(histogram_counts(enc, edges) for enc, _, _ in parts)
    width = before + after + 1
    win = (
        np.zeros(len(ex.feat), int),
        np.full((len(ex.feat), width), -1),
        np.full((len(ex.feat), width), np.nan),
    )
    for enc, cid, tok in parts:
        which, start, t, a = example_windows(enc, cid, tok, D_SAE, ex, before, after)
        win[0][which], win[1][which], win[2][which] = start, t, a
    return totals, ex, hist, edges, win


def reference(sae, acts, tokens):
    """Dense feature activations [ctx, seq, d_sae] with BOS positions zeroed, and the keep mask."""
    with torch.no_grad():
        f = sae.encode(acts.reshape(-1, D_IN)).reshape(N_CTX, SEQ, D_SAE).numpy().astype(np.float64)
    keep = tokens != BOS
    return f * keep[..., None], keep


def test_totals_and_histograms_match_a_dense_reference(data):
    sae, acts, tokens, ids = data
    totals, _, hist, edges, _ = run(sae, acts, tokens, ids, [np.arange(N_CTX)])
    f, keep = reference(sae, acts, tokens)
    flat = f[keep]
    assert totals.n_tokens == keep.sum() == N_CTX * (SEQ - 1)
    np.testing.assert_array_equal(totals.count, (flat > 0).sum(0))
    np.testing.assert_array_equal(totals.max, flat.max(0).astype(np.float32))
    active_mean = np.array(
        [flat[flat[:, i] > 0, i].mean() if (flat[:, i] > 0).any() else 0.0 for i in range(D_SAE)]
    )
    np.testing.assert_allclose(totals.mean, active_mean, rtol=1e-12)
    np.testing.assert_allclose(totals.frequency, (flat > 0).mean(0), rtol=1e-15)
    assert (totals.count[:3] == 0).all() and (totals.count > 0).sum() > D_SAE // 2
    for i in range(D_SAE):
        ref_edges = np.linspace(0.0, float(np.float32(flat[:, i].max())), 8)
        values = flat[flat[:, i] > 0, i].astype(np.float32).astype(np.float64)
        np.testing.assert_array_equal(edges[i], ref_edges)
        np.testing.assert_array_equal(hist[i], np.histogram(values, bins=ref_edges)[0] if len(values) else 0)


def test_examples_match_a_dense_reference(data):
    sae, acts, tokens, ids = data
    n_top, per_band, before, after = 4, 3, 3, 2
    totals, ex, _, _, (start, win_tok, win_act) = run(
        sae, acts, tokens, ids, [np.arange(N_CTX)], n_top=n_top, per_band=per_band, before=before, after=after
    )
    f, _ = reference(sae, acts, tokens)
    f32 = f.astype(np.float32)
    for i in range(D_SAE):
        peak = f32[:, :, i].max(1)
        order = sorted(range(N_CTX), key=lambda c: (-peak[c], ids[c]))
        expected_top = [c for c in order if peak[c] > 0][:n_top]
        mine = np.flatnonzero((ex.feat == i) & (ex.group == -1))
        assert list(ex.context[mine]) == [ids[c] for c in expected_top]
        for e, c in zip(mine, expected_top, strict=True):
            p = int(np.argmax(f32[c, :, i]))  # first position of the peak
            assert ex.value[e] == peak[c] and ex.pos[e] == p
            lo, hi = max(p - before, 0), min(p + after, SEQ - 1)
            valid = win_tok[e] >= 0
            assert start[e] == lo
            np.testing.assert_array_equal(win_tok[e][valid], tokens[c, lo : hi + 1])
            np.testing.assert_array_equal(win_act[e][valid], f32[c, lo : hi + 1, i])
        for b, (low, high) in enumerate(BANDS):
            m = float(totals.max[i])
            eligible = [
                c
                for c in range(N_CTX)
                if peak[c] > 0 and peak[c] >= low * m and (peak[c] < high * m if high < 1 else True)
            ]
            by_priority = sorted(eligible, key=lambda c: (int(example_priority(ids[c], i)), ids[c]))[
                :per_band
            ]
            mine = np.flatnonzero((ex.feat == i) & (ex.group == b))
            assert list(ex.context[mine]) == [ids[c] for c in by_priority]
        quiet = np.flatnonzero((ex.feat == i) & (ex.group == len(BANDS)))
        inactive = {ids[c] for c in range(N_CTX) if peak[c] == 0}
        assert len(quiet) == min(per_band, len(inactive)) and set(ex.context[quiet]) <= inactive
        assert all((win_act[e][win_tok[e] >= 0] == 0).all() for e in quiet)


def test_any_split_and_order_gives_the_same_statistics(data):
    sae, acts, tokens, ids = data
    whole = run(sae, acts, tokens, ids, [np.arange(N_CTX)])
    rng = np.random.default_rng(1)
    perm = rng.permutation(N_CTX)
    split = run(sae, acts, tokens, ids, [perm[:5], perm[5:6], perm[6:17], perm[17:]])
    t1, ex1, h1, e1, w1 = whole
    t2, ex2, h2, e2, w2 = split
    assert t1.n_tokens == t2.n_tokens
    np.testing.assert_array_equal(t1.count, t2.count)
    np.testing.assert_array_equal(t1.max, t2.max)
    np.testing.assert_allclose(t1.total, t2.total, rtol=1e-12)
    for a, b in zip(ex1, ex2, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(h1, h2)
    np.testing.assert_array_equal(e1, e2)
    for a, b in zip(w1, w2, strict=True):
        np.testing.assert_array_equal(a, b)


def test_log_density_counts_each_feature_once_by_its_log_frequency():
    n_tokens = 1000  # frequencies down to 1e-3: 3 decades of 4 bins
    count = np.array([0, 0, 1, 10, 11, 100, 999, 1000])
    density = log_density(count, n_tokens)
    edges = np.array(density["log10_edges"])
    assert edges[0] == -3 and edges[-1] == 0 and len(edges) == 13
    assert density["dead"] == 2 and sum(density["counts"]) == 6
    # independent: place each alive frequency by hand (a value on an inner edge opens the
    # next bin; 1.0 closes the last one)
    expected = np.zeros(12, int)
    for c in count[count > 0]:
        x = np.log10(c / n_tokens)
        expected[min(int(np.floor((x + 3) * 4 + 1e-9)), 11)] += 1
    assert density["counts"] == expected.tolist()
