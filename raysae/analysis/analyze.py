"""Feature analysis on a Ray Data actor pool, into the store (docs/architecture.md, "Analysis").

1. Contexts of 2d activations come from the `contexts` cache or live from the
   model (`sources`); a pool of actors (`actors`) encodes each batch with every
   SAE of the hook once and keeps the sparse result, materialised in Ray's object store.
2. The driver merges the per-batch totals and peaks (associative), picks the
   examples, then makes a second, cheap pass over the sparse results for the
   histograms and example windows (`stats`).
3. Documents go to the store in idempotent batches (`raysae.store`), as a new generation:
   the SAE's previous analysis stays readable until the new one is complete.
"""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from raysae import filesystem, progress
from raysae.activations.cache import key_inputs
from raysae.activations.language_model import load_model, tokenizer_for
from raysae.analysis.actors import encode_on_pool, parts
from raysae.analysis.documents import FeatureDocuments
from raysae.analysis.logits import decoder_logits, model_unembedding, no_logits
from raysae.analysis.neighbours import best_matches, decoder_neighbours
from raysae.analysis.sources import analysis_config, excluded_token_ids, source_dataset
from raysae.analysis.stats import (
    Examples,
    Peaks,
    Totals,
    example_windows,
    histogram_counts,
    histogram_edges,
    log_density,
    select_examples,
)
from raysae.analysis.token_text import TokenText
from raysae.checkpoint import CFG_FILE, load_single_layer_sae, read_record
from raysae.config import AnalysisConfig, RaysaeConfig, redact
from raysae.config.resolve import embedded_store_problem, store_uri
from raysae.errors import ConfigError
from raysae.models import SparseAutoencoder
from raysae.ray_runtime import ensure_ray
from raysae.run_dir import RunDir, sae_id_of
from raysae.store import Store, open_store

log = logging.getLogger("raysae.analyze")


def analyze(
    cfg: RaysaeConfig,
    sae_dirs: Sequence[filesystem.Location],
    *,
    store: Store | None = None,
    store_dir: filesystem.Location | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Analyze the SAEs in `sae_dirs` into `store`, else the configured one (embedded under
    `store_dir`, by default the run's `store/`, when none is); SAEs on the same activations
    share a pass. Returns a summary per SAE."""
    groups: dict[str, tuple[RaysaeConfig, list[str], list[dict]]] = {}
    for d in map(filesystem.absolute, sae_dirs):
        if not filesystem.exists(filesystem.join(d, CFG_FILE)):
            raise FileNotFoundError(f"{d}: not an SAE checkpoint directory (no {CFG_FILE})")
        record = read_record(d)
        acfg = analysis_config(cfg, record)
        key = json.dumps(
            [acfg.activations.source, key_inputs(acfg, acfg.model.hook_point, "contexts")], sort_keys=True
        )
        groups.setdefault(key, (acfg, [], []))
        groups[key][1].append(d)
        groups[key][2].append(record)
    if not groups:
        return []
    if store is not None:
        return _analyze_groups(list(groups.values()), store, on_batch)
    folder = store_dir or RunDir.of(cfg).store
    problem = embedded_store_problem(cfg, folder)
    if problem:
        raise ConfigError([problem])
    with open_store(store_uri(cfg), folder, cfg.store, create=True) as opened:
        return _analyze_groups(list(groups.values()), opened, on_batch)


def _analyze_groups(
    groups: list[tuple[RaysaeConfig, list[str], list[dict]]],
    store: Store,
    on_batch: Callable[[int], None] | None,
) -> list[dict[str, Any]]:
    ensure_ray()
    summaries = []
    for acfg, dirs, records in groups:
        log.info("analyzing %d SAE(s) on %s %s", len(dirs), acfg.model.name, acfg.model.hook_point)
        summaries += analyze_group(acfg, dirs, records, store, on_batch=on_batch)
    return summaries


@dataclass
class FeatureStatistics:
    """Everything the feature documents of one SAE are built from."""

    totals: Totals
    edges: np.ndarray
    examples: Examples
    histogram: np.ndarray
    windows: tuple[np.ndarray, np.ndarray, np.ndarray]
    """(start, token ids, activations) per entry of `examples`."""


def merge_statistics(
    encoded, saes: list[SparseAutoencoder], a: AnalysisConfig
) -> tuple[list[FeatureStatistics], set[int]]:
    """Two passes over the encoded batches (`actors.parts`): totals and peaks, then (once the
    examples are chosen) histograms and example windows. Returns them per SAE, and the actors seen."""
    totals = [Totals(s.d_sae) for s in saes]
    peaks = [Peaks() for _ in saes]
    context_ids, actors = [], set()
    for part in parts(encoded):
        context_ids.append(part["context_id"])
        actors.add(part["actor"])
        for t, p, enc in zip(totals, peaks, part["encoded"], strict=True):
            t.add(enc)
            p.add(enc, part["context_id"])
    all_contexts = np.concatenate(context_ids)
    width = a.window_before + a.window_after + 1
    stats = []
    for s, t, p in zip(saes, totals, peaks, strict=True):
        examples = select_examples(
            p.arrays(), t.max, all_contexts, n_top=a.top_examples, bands=a.bands, per_band=a.band_examples
        )
        n = len(examples.feat)
        windows = (
            np.zeros(n, np.int64),
            np.full((n, width), -1, np.int64),
            np.full((n, width), np.nan, np.float32),
        )
        hist = np.zeros((s.d_sae, a.histogram_bins), np.int64)
        stats.append(FeatureStatistics(t, histogram_edges(t.max, a.histogram_bins), examples, hist, windows))
    for part in parts(encoded):
        for st, s, enc in zip(stats, saes, part["encoded"], strict=True):
            st.histogram += histogram_counts(enc, st.edges)
            which, start, tok, acts = example_windows(
                enc, part["context_id"], part["tokens"], s.d_sae, st.examples, a.window_before, a.window_after
            )
            st.windows[0][which], st.windows[1][which], st.windows[2][which] = start, tok, acts
    return stats, actors


def analyze_group(
    cfg: RaysaeConfig,
    sae_dirs: list[str],
    records: list[dict],
    store: Store,
    *,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Analyze SAEs that read the same activations in one pass; write their documents."""
    a = cfg.analysis
    started = time.perf_counter()
    tokenizer = tokenizer_for(cfg)
    source, column, dtype, n_contexts = source_dataset(cfg, tokenizer)
    meter = progress.Progress(
        f"analysis: encoding with {len(sae_dirs)} SAE(s)", -(-n_contexts // a.batch_contexts), "batches"
    )
    meter.update(0)

    def encoded_batches(n: int) -> None:
        meter.update(meter.done + n)

    encoded = encode_on_pool(
        source, sae_dirs, column, dtype, excluded_token_ids(tokenizer), a, on_batches=encoded_batches
    )
    meter.close()
    seconds = time.perf_counter() - started
    log.debug("encoded %d contexts with %d SAE(s) in %.1f s", n_contexts, len(sae_dirs), seconds)

    saes = [load_single_layer_sae(d) for d in sae_dirs]
    stats, actors = merge_statistics(encoded, saes, a)
    del encoded
    seconds_stats = time.perf_counter() - started
    n_tokens = stats[0].totals.n_tokens
    log.info("statistics of %d SAE(s) over %d tokens in %.1f s", len(saes), n_tokens, seconds_stats)

    unembed = None
    try:
        with progress.quiet_stdout():
            model = load_model(cfg.model, device="cpu")
        unembed = model_unembedding(model)
    except Exception as exc:  # logit attribution is optional; the statistics are not
        log.warning("no logit attribution: cannot load %s (%s)", cfg.model.name, exc)
    text = TokenText(tokenizer)
    sae_ids = [sae_id_of(d) for d in sae_dirs]
    sae_docs = [
        sae_document(cfg, d, record, sae, sae_id, st.totals, n_contexts)
        for d, record, sae, sae_id, st in zip(sae_dirs, records, saes, sae_ids, stats, strict=True)
    ]
    summaries = []
    for i, (sae, st, sae_id, sae_doc) in enumerate(zip(saes, stats, sae_ids, sae_docs, strict=True)):
        logits = (
            decoder_logits(sae.W_dec, unembed, a.logit_tokens, bins=a.logit_bins)
            if unembed is not None
            else no_logits(sae.d_sae)
        )
        t_near = time.perf_counter()
        neighbours = decoder_neighbours(sae.W_dec, a.neighbours) if a.neighbours > 0 else None
        matches = [
            (sae_ids[j], best_matches(sae.W_dec, saes[j].W_dec))
            for j in range(len(saes))
            if j != i and same_space(sae_doc, sae_docs[j])
        ]
        neighbour_s = time.perf_counter() - t_near
        log.info("%s: decoder neighbours and %d match(es) in %.1f s", sae_id, len(matches), neighbour_s)
        t0 = time.perf_counter()
        docs = FeatureDocuments(
            sae_id,
            st.totals,
            st.histogram,
            st.edges,
            st.examples,
            st.windows,
            logits,
            text,
            a.bands,
            neighbours=neighbours,
            matches=matches,
        )

        def publish(generation: str, sae_doc=sae_doc, t0=t0) -> None:
            # The SAE document is written once its features are all in: until then a
            # reader sees the previous analysis, whole, or (a new SAE) none.
            sae_doc["analysis"] |= {
                "generation": generation,
                "finished_at": datetime.datetime.now(datetime.UTC),
                "write_seconds": round(time.perf_counter() - t0, 2),
            }
            store.put_sae(sae_doc)

        meter = progress.Progress(f"store: {sae_id} feature documents", sae.d_sae, "features")

        def written(n: int, meter=meter) -> None:  # n: the documents written so far
            meter.update(n)
            if on_batch is not None:
                on_batch(n)

        n = store.write_features(sae_id, docs, sae.d_sae, on_batch=written, publish=publish)
        meter.close()
        write_s = time.perf_counter() - t0
        log.debug("%s: %d feature documents in %.1f s (%.0f/s)", sae_id, n, write_s, n / max(write_s, 1e-9))
        summaries.append(
            {
                "sae_id": sae_id,
                "features": n,
                "n_tokens": st.totals.n_tokens,
                "alive": int((st.totals.count > 0).sum()),
                "write_seconds": write_s,
                "stats_seconds": seconds_stats,
                "neighbour_seconds": neighbour_s,
                "actors": len(actors),
            }
        )
    return summaries


def same_space(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two analyzed SAEs (their `saes` documents) whose features can be matched by decoder cosine:
    the same sweep (`name`), writing to the same activations (output hook, d_out)."""
    return (
        a["name"] == b["name"]
        and a["d_out"] == b["d_out"]
        and (a["hook_point_out"] or a["hook_point"]) == (b["hook_point_out"] or b["hook_point"])
    )


def sae_document(
    cfg: RaysaeConfig,
    directory: filesystem.Location,
    record: dict,
    sae: SparseAutoencoder,
    sae_id: str,
    totals: Totals,
    n_contexts: int,
) -> dict[str, Any]:
    """The store's `saes` document of one analyzed SAE."""
    run = RunDir.holding(directory, sae_id)
    trained = record.get("config", {})
    return {
        "_id": sae_id,
        "name": trained.get("name", cfg.name),
        "sweep": trained.get("name") if filesystem.exists(run.sweep_record) else None,
        "architecture": record.get("architecture", sae.architecture),
        "model": cfg.model.name,
        "hook_point": cfg.model.hook_point,
        # A transcoder's output hook: its features read hook_point (the analysis encodes those
        # activations) and write here, which is what its decoder logits go through.
        "kind": sae.kind,
        # The SAE's own (SAEs of a group share the input hook, not necessarily the output one).
        "hook_point_out": trained.get("model", {}).get("hook_point_out", cfg.model.hook_point_out)
        if sae.is_transcoder
        else None,
        "d_in": sae.d_in,
        "d_out": sae.d_out,
        "d_sae": sae.d_sae,
        "config": redact(trained),
        "metrics": record.get("metrics", {}),
        "tokens": record.get("tokens"),
        "checkpoint": filesystem.absolute(directory),
        "run_dir": run.root,
        "analysis": {
            "n_tokens": totals.n_tokens,
            "n_contexts": n_contexts,
            "source": cfg.activations.source,
            "alive": int((totals.count > 0).sum()),
            "generation": None,
            "finished_at": None,
            "density": log_density(totals.count, totals.n_tokens),
        },
    }
