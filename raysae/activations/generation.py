"""Activations from token contexts on a Ray Data actor pool, for caches or streamed live.

Each actor loads the model once; `map_batches` feeds it `model_batch_size`
contexts at a time and gets back, per context, its id, its tokens and the
activations at every requested hook (`acts_0`, `acts_1`, ... in hook order).
Output order follows input order, so caches are deterministic and resumable.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import torch

from raysae import progress
from raysae.activations.finite import refuse_nonfinite
from raysae.activations.language_model import check_hook_points, hook_activations, load_model, tokenizer_for
from raysae.activations.layers import column_groups, is_stacked, manifest_hook_entries, training_hooks
from raysae.activations.tokens import contexts_for_tokens, pack_contexts, rows_per_context
from raysae.config import ModelConfig, RaysaeConfig
from raysae.devices import DTYPES


def to_storage(acts: torch.Tensor, dtype: str) -> np.ndarray:
    """Activations -> numpy in the cache's dtype; bfloat16 travels as its raw 16-bit pattern, int8
    storage as float32 (the cache writer quantises, measuring the error; live rows stay float32)."""
    if dtype == "int8":
        return acts.to(torch.float32).cpu().numpy()
    if dtype == "bfloat16":
        return acts.to(torch.bfloat16).cpu().view(torch.uint16).numpy()
    return acts.to(DTYPES[dtype]).cpu().numpy()


def from_storage(array, dtype: str) -> torch.Tensor:
    """Stored activations (numpy or torch) -> a torch tensor of the cache's dtype (float32 for
    `int8`, which the cache's reader has dequantised).

    Ray hands out read-only views of its object store; they are wrapped without a
    copy (and never written to), hence the silenced warning.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        t = torch.as_tensor(array)
    return t.view(torch.bfloat16) if dtype == "bfloat16" else t


def tensor_column(array: np.ndarray) -> pa.Array:
    from ray.data.extensions import ArrowTensorArray

    return ArrowTensorArray.from_numpy(np.ascontiguousarray(array))


def contexts_table(tokens: np.ndarray, first_id: int) -> pa.Table:
    ids = np.arange(first_id, first_id + len(tokens), dtype=np.int64)
    return pa.table({"context_id": ids, "tokens": tensor_column(tokens)})


class ActivationGenerator:
    """The Ray Data callable class: one model per actor, contexts in, activations out."""

    def __init__(self, model: dict, hook_points: list[str], dtype: str, threads: int):
        torch.set_num_threads(max(1, threads))
        with progress.quiet_stdout():  # TransformerLens prints as it loads
            self.model = load_model(ModelConfig.model_validate(model))
        check_hook_points(self.model, hook_points)
        self.device = next(self.model.parameters()).device
        self.hook_points = hook_points
        self.dtype = dtype
        self.model_name = model["name"]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tokens = torch.tensor(np.asarray(batch["tokens"]), dtype=torch.long, device=self.device)
        acts = hook_activations(self.model, tokens, self.hook_points)
        out = {"context_id": batch["context_id"], "tokens": batch["tokens"]}
        for i, hook in enumerate(self.hook_points):
            out[f"acts_{i}"] = to_storage(acts[hook], self.dtype)
            # Checked after the cast: a value finite in the model can overflow the stored dtype.
            refuse_nonfinite(
                out[f"acts_{i}"], self.dtype, batch["context_id"], f"{self.model_name} at {hook}"
            )
        return out


def generation_dataset(cfg: RaysaeConfig, tokens: np.ndarray, first_id: int, hook_points: list[str]):
    """A Ray Dataset of per-context activations for `tokens` [n, context_size]."""
    import ray

    a = cfg.activations
    step = a.model_batch_size
    blocks = [contexts_table(tokens[i : i + step], first_id + i) for i in range(0, len(tokens), step)]
    ds = ray.data.from_arrow(blocks)
    ds.context.execution_options.preserve_order = True
    return ds.map_batches(
        ActivationGenerator,
        fn_constructor_kwargs={
            "model": cfg.model.model_dump(),
            "hook_points": hook_points,
            "dtype": a.dtype,
            "threads": round(a.actors.cpus),
        },
        batch_size=step,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=a.actors.num),
        num_cpus=a.actors.cpus,
        num_gpus=a.actors.gpus,
        zero_copy_batch=True,
    )


def token_rows(acts: np.ndarray, skip_first: bool) -> np.ndarray:
    """[contexts, seq, d] activations -> [rows, d], without each context's BOS position."""
    acts = np.asarray(acts)
    if skip_first:
        acts = acts[:, 1:]
    return acts.reshape(-1, acts.shape[-1])


def live_dataset(cfg: RaysaeConfig, contexts: range | None = None, *, skip_rows: int = 0):
    """Training rows (`acts` [d_model], and `acts_1` [d_out] with `model.hook_point_out`; with
    `model.layers`, `acts` [L, d_in] and `acts_1` [L, d_out], as the multi-layer cache holds them)
    generated on the fly, never touching disk.

    By default the contexts of the training budget (`activations.n_tokens` rows);
    `contexts` picks other ones by index in the packed corpus, without the first
    context's first `skip_rows` rows (a stream resumed inside a context).
    """
    whole_budget = contexts is None
    if contexts is None:
        contexts = range(contexts_for_tokens(cfg.data, cfg.activations.n_tokens))
    tokens = pack_contexts(cfg.data, tokenizer_for(cfg), contexts.stop)[contexts.start :]
    skip = rows_per_context(cfg.data) < cfg.data.context_size
    hooks = training_hooks(cfg)
    ds = generation_dataset(cfg, tokens, contexts.start, hooks)
    first = contexts.start
    groups = column_groups(manifest_hook_entries(cfg, hooks, "tokens"))
    stacked = is_stacked(cfg, hooks, "tokens")

    def rows(b) -> dict[str, np.ndarray]:  # a numpy batch (batch_format="numpy")
        per_hook = []
        for i in range(len(hooks)):  # a paired source: `acts` (input), `acts_1` (output), row-aligned
            acts = token_rows(np.asarray(b[f"acts_{i}"]), skip)
            if skip_rows and len(b["context_id"]) and int(b["context_id"][0]) == first:
                acts = acts[skip_rows:]  # the block that opens the stream: its first context, cut
            per_hook.append(acts)
        return {
            column: np.stack([per_hook[i] for i in idx], axis=1) if stacked else per_hook[idx[0]]
            for column, idx in groups.items()
        }

    ds = ds.map_batches(rows, batch_size=None, batch_format="numpy")
    return ds.limit(cfg.activations.n_tokens) if whole_budget else ds
