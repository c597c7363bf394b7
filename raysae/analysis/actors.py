"""The analysis' Ray Data actor pool: each actor loads the SAEs once and encodes batches of
contexts with every one of them, keeping only the sparse result (`raysae.analysis.encode`)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from raysae.activations.generation import from_storage
from raysae.analysis.encode import encode_contexts, keep_mask
from raysae.checkpoint import load_single_layer_sae
from raysae.config import AnalysisConfig
from raysae.devices import resolve_device

ACTOR_START_TIMEOUT_S = 900
"""Long enough for an autoscaler to add a GPU node; then Ray Data fails naming the pool."""


class SAEEncoder:
    """Ray Data actor: loads the SAEs once, encodes batches of contexts with each."""

    def __init__(self, sae_dirs: list[str], column: str, dtype: str, excluded_ids: list[int], threads: int):
        torch.set_num_threads(max(1, threads))
        self.device = resolve_device("auto")
        self.saes = [load_single_layer_sae(d, self.device) for d in sae_dirs]
        self.column, self.dtype, self.excluded = column, dtype, excluded_ids

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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


def encode_on_pool(
    source,
    sae_dirs: list[str],
    column: str,
    dtype: str,
    excluded_ids: list[int],
    a: AnalysisConfig,
    on_batches: Callable[[int], None] | None = None,
) -> list:
    """`source` (a Ray Dataset of contexts) encoded by a pool of `analysis.actors`, kept in Ray's
    object store: the refs of its blocks, one pickled part per batch (`parts`). `on_batches(n)`
    is called as each block of `n` batches is done (the progress line)."""
    import ray

    # Start the whole pool before the first batch: actors start asynchronously by
    # default, and the first one up would take every batch of a short analysis.
    source.context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    encoded = source.map_batches(
        SAEEncoder,
        fn_constructor_kwargs={
            "sae_dirs": [str(d) for d in sae_dirs],
            "column": column,
            "dtype": dtype,
            "excluded_ids": excluded_ids,
            "threads": round(a.actors.cpus),
        },
        batch_size=a.batch_contexts,
        batch_format="numpy",
        zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=a.actors.num),
        num_cpus=a.actors.cpus,
        num_gpus=a.actors.gpus,
    )
    # As materialize() does, but block by block, so the driver sees the encoding progress.
    refs = []
    for bundle in encoded.iter_internal_ref_bundles():
        refs += bundle.block_refs
        if on_batches is not None:
            on_batches(bundle.num_rows() or 0)
    return refs


def parts(encoded: list) -> Iterator[dict[str, Any]]:
    """The encoded batches: `context_id`, `tokens`, `encoded` (one `EncodedBatch` per SAE), `actor`."""
    import ray
    from ray.data.block import BlockAccessor

    for ref in encoded:
        for blob in BlockAccessor.for_block(ray.get(ref)).to_numpy("part"):
            yield pickle.loads(blob)  # pyright: ignore[reportArgumentType]
