"""Feature-browser page times on an SAE with 16,384 features, against the naive query.

Fills an embedded store with one SAE of `--features` feature documents built by
the analysis' own `FeatureDocuments` (default analysis sizes: 20 top examples,
3 bands x 5 + 5 non-activating, 25-token windows, 10 + 10 logit tokens and a 40-bin
histogram of 49,152 logits, 32 bins, 10 decoder neighbours, matches in 2 other SAEs
of the sweep, 1-3 distinct peak tokens),
then times each page through the Flask app in this process, `--repeat` times,
median. Baseline: one whole feature document fetched by its unique
(sae_id, generation, index) key, in the same process. Also timed once: the list page's query
written the obvious way, `find(...).sort(act_frequency).skip(...).limit(50)`.

    python bench/dashboard.py                 # 16,384 features
    python bench/dashboard.py --features 4096
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

import bson
import numpy as np

from raysae.analysis.documents import FeatureDocuments
from raysae.analysis.logits import DecoderLogits
from raysae.analysis.neighbours import Neighbours
from raysae.analysis.stats import Examples, Totals, log_density
from raysae.dashboard import create_app
from raysae.store import EmbeddedServer, Store, explanations
from raysae.store.client import feature_filter

SAE = "bench/t000"
BANDS = [[0.8, 1.0], [0.4, 0.6], [0.0, 0.2]]


def synthetic_documents(d_sae: int, rng: np.random.Generator) -> tuple[FeatureDocuments, Totals]:
    n_tokens = 1_000_000
    totals = Totals(d_sae)
    totals.n_tokens = n_tokens
    totals.count = np.where(
        rng.random(d_sae) < 0.05, 0, rng.lognormal(6, 2, d_sae).astype(np.int64).clip(0, n_tokens)
    )
    totals.max = (rng.random(d_sae) * 10).astype(np.float32) * (totals.count > 0)
    totals.total = totals.count * totals.max * 0.4
    groups = [-1] * 20 + [g for g in range(len(BANDS) + 1) for _ in range(5)]
    per = len(groups)
    feat = np.repeat(np.arange(d_sae), per)
    examples = Examples(
        feat=feat,
        group=np.tile(groups, d_sae),
        context=rng.integers(0, 10_000, feat.size),
        value=rng.random(feat.size).astype(np.float32),
        pos=rng.integers(0, 128, feat.size),
    )
    width = 25
    pos = examples.pos
    windows = (
        np.maximum(pos - 16, 0),
        rng.integers(0, 500, (feat.size, width)),
        rng.random((feat.size, width)).astype(np.float32),
    )
    # A feature's top examples mostly peak on one of a few tokens of its own.
    own = rng.integers(0, 500, (d_sae, 3))
    windows[1][np.arange(feat.size), pos - windows[0]] = own[
        feat, rng.choice(3, feat.size, p=[0.8, 0.15, 0.05])
    ]
    d_vocab, bins = 49_152, 40
    lo, hi = -rng.random(d_sae) * 5, rng.random(d_sae) * 5
    counts = rng.multinomial(d_vocab, np.ones(bins) / bins, d_sae)
    logits = DecoderLogits(
        rng.integers(0, 500, (d_sae, 10)),
        rng.random((d_sae, 10)),
        rng.integers(0, 500, (d_sae, 10)),
        -rng.random((d_sae, 10)),
        lo[:, None] + (hi - lo)[:, None] * np.linspace(0, 1, bins + 1),
        counts,
    )
    edges = np.stack([np.linspace(0, m or 1.0, 33) for m in totals.max])
    hist = rng.integers(0, 100, (d_sae, 32))
    words = [f" word{i}" for i in range(500)]
    near = Neighbours(rng.integers(0, d_sae, (d_sae, 10)), -np.sort(-rng.random((d_sae, 10)), axis=1))
    matches = [
        (f"bench/t00{k}", Neighbours(rng.integers(0, d_sae, (d_sae, 1)), rng.random((d_sae, 1))))
        for k in (1, 2)
    ]
    docs = FeatureDocuments(
        SAE,
        totals,
        hist,
        edges,
        examples,
        windows,
        logits,
        lambda t: words[t],
        BANDS,
        neighbours=near,
        matches=matches,
    )
    return docs, totals


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=16_384)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    d_sae = args.features
    docs, totals = synthetic_documents(d_sae, np.random.default_rng(0))
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedServer(tmp) as server,
        Store(server.uri, "bench") as store,
    ):
        store.ensure_indexes()
        # Before the features: writing them sets `analysis.generation` on this document, which
        # the pages read (put after, it would name no generation and every page would be empty).
        store.put_sae(
            {
                "_id": SAE,
                "name": "bench",
                "architecture": "topk",
                "model": "synthetic",
                "hook_point": "blocks.0.hook_resid_post",
                "d_in": 512,
                "d_sae": d_sae,
                "metrics": {"fvu": 0.2, "l0": 32.0},
                "analysis": {
                    "n_tokens": totals.n_tokens,
                    "alive": int((totals.count > 0).sum()),
                    "density": log_density(totals.count, totals.n_tokens),
                    "finished_at": 1,
                },
            }
        )
        t0 = time.perf_counter()
        store.write_features(SAE, docs, d_sae)
        write_s = time.perf_counter() - t0
        # One explanation per feature, as after an import of a whole SAE's explanations.
        explanations.ensure_indexes(store)
        explanations.add_many(
            store,
            (
                explanations.document(SAE, i, f"fires on word{i % 500} in lists", "bench")
                for i in range(d_sae)
            ),
        )
        size = len(bson.encode(docs(0)))  # bytes as stored
        client = create_app(store, seed=0).test_client()

        def get(url):
            def fetch():
                response = client.get(url)
                assert response.status_code in (200, 302), (url, response.status_code)

            return fetch

        def naive():
            list(
                store.features.find(
                    {"sae_id": SAE},
                    {"_id": 0, "index": 1, "act_frequency": 1, "max_activation": 1, "logits.top": 1},
                )
                .sort([("act_frequency", -1), ("index", 1)])
                .skip(50)
                .limit(50)
            )

        mid = d_sae // 100
        pages = {
            # By the whole unique key: without `generation` the server cannot use that index.
            "one feature document by key (baseline)": lambda: store.features.find_one(
                {**feature_filter(store.saes.find_one({"_id": SAE}) or {}), "index": d_sae // 3}
            ),
            "SAE list": get("/"),
            "SAE page, by frequency, page 1": get(f"/sae/{SAE}"),
            f"SAE page, by max, page {mid}": get(f"/sae/{SAE}?order=max&page={mid}"),
            "SAE page, by index, last page": get(f"/sae/{SAE}?order=index&page={-(-d_sae // 50)}"),
            "SAE page, frequency range 0.01-0.1 %": get(f"/sae/{SAE}?min_pct=0.01&max_pct=0.1"),
            "feature page": get(f"/sae/{SAE}/feature/{d_sae // 2}"),
            "feature JSON (/api)": get(f"/api/sae/{SAE}/feature/{d_sae // 2}"),
            "search by top token": get(f"/search?q=word7&by=token&sae={SAE}"),
            "search by explanation text": get("/search?q=WORD7+in&by=explanation"),
            "random alive feature (redirect)": get(f"/sae/{SAE}/random"),
        }
        results = {name: timed(fn, args.repeat) for name, fn in pages.items()}
        t0 = time.perf_counter()
        try:
            naive()
            naive_outcome = f"{time.perf_counter() - t0:.2f} s"
        except Exception as exc:  # the embedded server may give up on a sort this large
            naive_outcome = f"failed after {time.perf_counter() - t0:.0f} s ({type(exc).__name__})"
    base = results["one feature document by key (baseline)"]
    print(
        f"# {platform.processor() or platform.machine()}, {d_sae:,} features of ~{size / 1024:.0f} KB "
        f"(written in {write_s:.0f} s, {d_sae / write_s:.0f} docs/s), embedded store, median of {args.repeat}"
    )
    print(f"{'':48s} {'seconds':>8s} {'x baseline':>11s}")
    for name, s in results.items():
        print(f"{name:48s} {s:8.3f} {s / base:11.1f}")
    print(f"naive find().sort(act_frequency).skip(50).limit(50), once: {naive_outcome}")


if __name__ == "__main__":
    main()
