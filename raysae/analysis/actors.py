"""The analysis' Ray Data actor pool: each actor loads the SAEs once and encodes batches of
contexts with every one of them, keeping only the sparse result (`raysae.analysis.encode`)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from raysae.activations.generation import from_storage
from raysae.analysis.encode import encode_contexts, keep_mask
from raysae.checkpoint import load_sae
from raysae.config import AnalysisConfig
from raysae.devices import resolve_device

ACTOR_START_TIMEOUT_S = 900
"""Long enough for an autoscaler to add a GPU node; then Ray Data fails naming the pool."""


class SAEEncoder:
    """Ray Data actor: loads the SAEs once, encodes batches of contexts with each."""

    def __init__(self, sae_dirs: list[str], column: str, dtype: str, excluded_ids: list[int], threads: int):
        torch.set_num_threads(max(1, threads))
        self.device = resolve_device("auto")
        self.saes = [load_sae(d, self.device) for d in sae_dirs]
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
    source, sae_dirs: list[str], column: str, dtype: str, excluded_ids: list[int], a: AnalysisConfig
):
    """`source` (a Ray Dataset of contexts) encoded by a pool of `analysis.actors`, materialised
    in Ray's object store: one pickled part per batch (`parts`)."""
    import ray

    # Start the whole pool before the first batch: actors start asynchronously by
    # default, and the first one up would take every batch of a short analysis.
    source.context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    return source.map_batches(
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
    ).materialize()


def parts(encoded) -> Iterator[dict[str, Any]]:
    """The encoded batches: `context_id`, `tokens`, `encoded` (one `EncodedBatch` per SAE), `actor`."""
    for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
        for blob in batch["part"]:
            yield pickle.loads(blob)
