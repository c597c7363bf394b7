"""Feature analysis on a Ray Data actor pool, into the store (DESIGN.md §1, §6).

1. Contexts of 2d activations come from the `contexts` cache or live from the
   model; a pool of `SAEEncoder` actors (`map_batches`, `ActorPoolStrategy`)
   encodes each batch with every SAE of the hook once and keeps the sparse
   result (`raysae.analysis.encode`), materialised in Ray's object store.
2. The driver merges the per-batch totals and peaks (associative), picks the
   examples, then makes a second, cheap pass over the sparse results for the
   histograms and example windows (`raysae.analysis.stats`).
3. Documents go to the store in idempotent batches (`raysae.store`).
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import pickle
import time
from typing import Any

import numpy as np
import torch

from raysae import storage
from raysae.analysis.documents import FeatureDocuments, TokenText
from raysae.analysis.encode import encode_contexts, keep_mask
from raysae.analysis.logits import decoder_logits, model_unembedding
from raysae.analysis.stats import (
    Peaks,
    Totals,
    example_windows,
    histogram_counts,
    histogram_edges,
    log_density,
    select_examples,
)
from raysae.config import RaysaeConfig, redact

log = logging.getLogger("raysae.analyze")


class SAEEncoder:
    """Ray Data actor: loads the SAEs once, encodes batches of contexts with each."""

    def __init__(self, sae_dirs: list[str], column: str, dtype: str, excluded_ids: list[int], threads: int):
        from raysae.checkpoint import load_sae
        from raysae.devices import resolve_device

        torch.set_num_threads(max(1, threads))
        self.device = resolve_device("auto")
        self.saes = [load_sae(d, self.device) for d in sae_dirs]
        self.column, self.dtype, self.excluded = column, dtype, excluded_ids

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from raysae.activations.generation import from_storage

        tokens = np.asarray(batch["tokens"])
        acts = from_storage(np.asarray(batch[self.column]), self.dtype).to(self.device)
        keep = torch.as_tensor(keep_mask(tokens, self.excluded), device=self.device)
        encoded = [encode_contexts(sae, acts, keep) for sae in self.saes]
        part = {
            "context_id": np.asarray(batch["context_id"]),
            "tokens": tokens,
            "encoded": encoded,
            "actor": os.getpid(),
        }
        return {"part": np.array([pickle.dumps(part, protocol=5)], dtype=object)}


def sae_id_of(directory: storage.Location) -> str:
    """`<name>/<trial>[/<member>]`: the path below the run directory's `saes/`."""
    parts = storage.parts(directory)
    if "saes" in parts:
        i = len(parts) - 1 - parts[::-1].index("saes")
        if i < len(parts) - 1:
            return "/".join(parts[i + 1 :])
    return parts[-1]


def analysis_config(cfg: RaysaeConfig, record: dict[str, Any]) -> RaysaeConfig:
    """The SAE's own model, data and hook; this command's activations, analysis and store."""
    base = RaysaeConfig.model_validate(record["config"]) if "config" in record else cfg
    model = base.model.model_copy(update={"extra_hook_points": []})
    activations = cfg.activations.model_copy(update={"layouts": ["contexts"]})
    return base.model_copy(
        update={
            "model": model,
            "activations": activations,
            "analysis": cfg.analysis,
            "store": cfg.store,
            "name": cfg.name,
            "output_dir": cfg.output_dir,
        }
    )


def excluded_token_ids(tokenizer) -> list[int]:
    """BOS, and a padding token that is not also the document separator (EOS)."""
    ids = {tokenizer.bos_token_id}
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        ids.add(tokenizer.pad_token_id)
    return sorted(i for i in ids if i is not None)


def contexts_to_analyse(cfg: RaysaeConfig) -> int:
    per_context = cfg.data.context_size - (1 if cfg.data.prepend_bos else 0)
    return math.ceil(cfg.analysis.n_tokens / per_context)


def source_dataset(cfg: RaysaeConfig, tokenizer):
    """(Ray Dataset of `context_id`, `tokens`, activations; activation column; dtype; contexts)."""
    from raysae.activations.cache import cache_dir, read_shard_sequence, shard_paths, verify_cache
    from raysae.activations.generation import generation_dataset
    from raysae.activations.pipeline import generate_caches
    from raysae.activations.tokens import pack_contexts

    wanted = contexts_to_analyse(cfg)
    if cfg.activations.source == "live":
        tokens = pack_contexts(cfg.data, tokenizer, wanted)
        return (
            generation_dataset(cfg, tokens, 0, [cfg.model.hook_point]),
            "acts_0",
            cfg.activations.dtype,
            wanted,
        )
    generate_caches(cfg)
    directory = cache_dir(cfg, cfg.model.hook_point, "contexts")
    manifest = verify_cache(directory)
    n = min(wanted, manifest["contexts_done"])
    if n < wanted:
        log.warning(
            "the contexts cache %s holds %d contexts, fewer than the %d that analysis.n_tokens=%d asks "
            "for; analysing all of them (raise activations.n_contexts for more)",
            directory,
            n,
            wanted,
            cfg.analysis.n_tokens,
        )
    rows = np.cumsum([s["rows"] for s in manifest["shards"]])
    paths = shard_paths(directory, manifest)[: int(np.searchsorted(rows, n)) + 1]
    ds = read_shard_sequence(paths, columns=["context_id", "tokens", "acts"]).limit(n)
    # Blocks of about one analysis batch, so that every actor of the pool gets work
    # (an actor takes whole blocks; a cache shard is one block).
    itemsize = 2 if manifest["dtype"] in ("bfloat16", "float16") else 4
    row_bytes = cfg.data.context_size * (manifest["d_model"] * itemsize + 4)
    ds.context.target_max_block_size = cfg.analysis.batch_contexts * row_bytes
    if n * row_bytes <= MATERIALIZE_SOURCE_BYTES:
        # A small source is read in full first, so every actor of the pool has
        # batches from the start; streamed, batches trickle in as shards are read
        # and the first free actor can end up encoding all of them.
        ds = ds.materialize()
    return ds, "acts", manifest["dtype"], n


MATERIALIZE_SOURCE_BYTES = 256 * 2**20


# Long enough for an autoscaler to add a GPU node; then Ray Data fails naming the pool.
ACTOR_START_TIMEOUT_S = 900


def _parts(encoded_ds):
    for batch in encoded_ds.iter_batches(batch_size=None, batch_format="numpy"):
        for blob in batch["part"]:
            yield pickle.loads(blob)


def analyse_group(
    cfg: RaysaeConfig, sae_dirs: list[str], records: list[dict], store, *, on_batch=None
) -> list[dict[str, Any]]:
    """Analyse SAEs that read the same activations in one pass; write their documents."""
    import ray

    from raysae.activations.models import load_model
    from raysae.activations.pipeline import tokenizer_for
    from raysae.checkpoint import load_sae

    a = cfg.analysis
    started = time.perf_counter()
    tokenizer = tokenizer_for(cfg)
    source, column, dtype, n_contexts = source_dataset(cfg, tokenizer)
    # Start the whole pool before the first batch: actors start asynchronously by
    # default, and the first one up would take every batch of a short analysis.
    source.context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    encoded = source.map_batches(
        SAEEncoder,
        fn_constructor_kwargs={
            "sae_dirs": [str(d) for d in sae_dirs],
            "column": column,
            "dtype": dtype,
            "excluded_ids": excluded_token_ids(tokenizer),
            "threads": round(a.cpus_per_actor),
        },
        batch_size=a.batch_contexts,
        batch_format="numpy",
        zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=a.num_actors),
        num_cpus=a.cpus_per_actor,
        num_gpus=a.num_gpus_per_actor,
    ).materialize()
    log.info(
        "encoded %d contexts with %d SAE(s) in %.1f s",
        n_contexts,
        len(sae_dirs),
        time.perf_counter() - started,
    )

    saes = [load_sae(d) for d in sae_dirs]
    totals = [Totals(s.d_sae) for s in saes]
    peaks = [Peaks() for _ in saes]
    context_ids, actors = [], set()
    for part in _parts(encoded):
        context_ids.append(part["context_id"])
        actors.add(part["actor"])
        for t, p, enc in zip(totals, peaks, part["encoded"], strict=True):
            t.add(enc)
            p.add(enc, part["context_id"])
    context_ids = np.concatenate(context_ids)
    edges = [histogram_edges(t.max, a.histogram_bins) for t in totals]
    examples = [
        select_examples(
            p.arrays(), t.max, context_ids, n_top=a.top_examples, bands=a.bands, per_band=a.band_examples
        )
        for t, p in zip(totals, peaks, strict=True)
    ]
    hist = [np.zeros((s.d_sae, a.histogram_bins), np.int64) for s in saes]
    width = a.window_before + a.window_after + 1
    windows = [
        (
            np.zeros(len(e.feat), np.int64),
            np.full((len(e.feat), width), -1, np.int64),
            np.full((len(e.feat), width), np.nan, np.float32),
        )
        for e in examples
    ]
    for part in _parts(encoded):
        for i, enc in enumerate(part["encoded"]):
            hist[i] += histogram_counts(enc, edges[i])
            which, start, tok, acts = example_windows(
                enc,
                part["context_id"],
                part["tokens"],
                saes[i].d_sae,
                examples[i],
                a.window_before,
                a.window_after,
            )
            windows[i][0][which], windows[i][1][which], windows[i][2][which] = start, tok, acts
    del encoded
    seconds_stats = time.perf_counter() - started
    log.info("statistics of %d SAE(s) over %d tokens in %.1f s", len(saes), totals[0].n_tokens, seconds_stats)

    unembed = None
    try:
        unembed = model_unembedding(load_model(cfg.model, device="cpu"))
    except Exception as exc:  # logit attribution is optional; the statistics are not
        log.warning("no logit attribution: cannot load %s (%s)", cfg.model.name, exc)
    text = TokenText(tokenizer)
    summaries = []
    for i, (d, record, sae) in enumerate(zip(sae_dirs, records, saes, strict=True)):
        sae_id = sae_id_of(d)
        logits = (
            decoder_logits(sae.W_dec, unembed, a.logit_tokens)
            if unembed is not None
            else tuple(np.zeros((sae.d_sae, 0)) for _ in range(4))
        )
        doc = sae_document(cfg, d, record, sae, sae_id, totals[i], n_contexts)
        store.put_sae(doc)
        t0 = time.perf_counter()
        docs = FeatureDocuments(
            sae_id, totals[i], hist[i], edges[i], examples[i], windows[i], logits, text, a.bands
        )
        n = store.write_features(sae_id, docs, sae.d_sae, on_batch=on_batch)
        write_s = time.perf_counter() - t0
        finished = datetime.datetime.now(datetime.UTC)
        store.set_sae_fields(
            sae_id, {"analysis.finished_at": finished, "analysis.write_seconds": round(write_s, 2)}
        )
        log.info("%s: %d feature documents in %.1f s (%.0f/s)", sae_id, n, write_s, n / max(write_s, 1e-9))
        summaries.append(
            {
                "sae_id": sae_id,
                "features": n,
                "n_tokens": totals[i].n_tokens,
                "alive": int((totals[i].count > 0).sum()),
                "write_seconds": write_s,
                "stats_seconds": seconds_stats,
                "actors": len(actors),
            }
        )
    return summaries


def sae_document(
    cfg: RaysaeConfig,
    directory: storage.Location,
    record: dict,
    sae,
    sae_id: str,
    totals: Totals,
    n_contexts: int,
) -> dict[str, Any]:
    run = storage.parent(directory, len(sae_id.split("/")) + 1)
    trained = record.get("config", {})
    return {
        "_id": sae_id,
        "name": trained.get("name", cfg.name),
        "sweep": trained.get("name") if storage.exists(storage.join(run, "sweep.json")) else None,
        "architecture": record.get("architecture", sae.architecture),
        "model": cfg.model.name,
        "hook_point": cfg.model.hook_point,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "config": redact(trained),
        "metrics": record.get("metrics", {}),
        "tokens": record.get("tokens"),
        "checkpoint": storage.absolute(directory),
        "run_dir": run,
        "analysis": {
            "n_tokens": totals.n_tokens,
            "n_contexts": n_contexts,
            "source": cfg.activations.source,
            "alive": int((totals.count > 0).sum()),
            "finished_at": None,
            "density": log_density(totals.count, totals.n_tokens),
        },
    }


def read_record(directory: storage.Location) -> dict[str, Any]:
    """The SAE's `raysae.json` ({} for a checkpoint written by SAELens itself)."""
    from raysae.checkpoint import RECORD_FILE, read_json

    file = storage.join(directory, RECORD_FILE)
    return read_json(file) if storage.exists(file) else {}
