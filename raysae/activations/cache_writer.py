"""Writing one activation cache, resumably.

Contexts arrive in order. The builder buffers whole contexts and, when the
buffer is large enough, writes it out as shards (1d rows shuffled within the
buffer), then records the shards and the number of contexts consumed in the
manifest (atomically). An interrupted run leaves a manifest that lists only
complete shards; rerunning deletes any stray shard file and continues from
`contexts_done`, so no row is lost or written twice.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raysae import filesystem
from raysae.activations.cache import (
    file_sha256,
    is_activation_column,
    manifest_hooks,
    read_manifest,
    write_manifest,
)
from raysae.activations.finite import refuse_nonfinite
from raysae.activations.generation import tensor_column, token_rows
from raysae.activations.int8 import SCALE_SUFFIX, add_error, new_error, quantise, scale_column
from raysae.activations.layers import column_groups
from raysae.errors import CacheError

log = logging.getLogger("raysae.cache")


class CacheBuilder:
    """Fills one cache directory from batches of per-context activations."""

    def __init__(
        self,
        directory: filesystem.Location,
        manifest: dict[str, Any],
        *,
        columns: list[str],
        n_contexts: int,
        n_rows: int,
        shard_rows: int,
        buffer_shards: int,
        seed: int,
    ):
        self.dir = str(directory)
        self.columns = columns
        """The generator's column of each of the cache's hooks, in the manifest's hook order."""
        self.n_contexts = n_contexts
        self.n_rows = n_rows
        self.layout = manifest["layout"]
        self.shard_rows = shard_rows
        self.buffer_shards = buffer_shards
        self.seed = seed
        existing = read_manifest(self.dir)
        if existing is not None and existing.get("key") != manifest["key"]:
            raise CacheError(f"{self.dir}: holds cache {existing.get('key')!r}, not {manifest['key']!r}")
        self.manifest = existing or manifest
        filesystem.make_dirs(self.dir)
        self._remove_stray_shards()
        self._buffer: list[list[np.ndarray]] = [[] for _ in columns]
        self._buffer_ids: list[np.ndarray] = []
        self._buffer_tokens: list[np.ndarray] = []
        self._buffered_rows = 0
        self._buffered_contexts = 0
        self._started = time.perf_counter()
        self._rows_at_start = self.manifest["n_tokens"]

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    @property
    def contexts_done(self) -> int:
        return int(self.manifest["contexts_done"])

    def _remove_stray_shards(self) -> None:
        listed = {s["file"] for s in self.manifest["shards"]}
        for name in filesystem.list_names(self.dir):
            if name.startswith("shard-") and name not in listed:
                filesystem.delete_file(filesystem.join(self.dir, name))

    def start_pass(self) -> None:
        self.manifest["generation_passes"] += 1
        write_manifest(self.dir, self.manifest)

    def add(self, batch: dict[str, np.ndarray]) -> None:
        """Take the contexts of `batch` this cache does not have yet."""
        ids = np.asarray(batch["context_id"])
        seen = self.contexts_done + self._buffered_contexts
        keep = (ids >= seen) & (ids < self.n_contexts)
        if not keep.any():
            return
        if ids[keep][0] != seen:
            raise CacheError(f"{self.dir}: expected context {seen} next, got {ids[keep][0]}")
        hooks = self.manifest.get("hooks") or [{"name": self.manifest["hook_point"]}]
        n_rows = 0
        for i, (hook, column) in enumerate(zip(hooks, self.columns, strict=True)):
            acts = np.asarray(batch[column])[keep]
            # Before anything is buffered: the shards written so far stay, the manifest stays incomplete.
            refuse_nonfinite(
                acts, self.manifest["dtype"], ids[keep], f"{self.manifest['model']} at {hook['name']}"
            )
            hook["d"] = int(acts.shape[-1])
            if i == 0:
                self.manifest["d_model"] = int(acts.shape[-1])
            if self.layout == "tokens":
                rows = token_rows(acts, skip_first=self.manifest["rows_per_context"] < acts.shape[1])
                rows = rows[: self.n_rows - self.manifest["n_tokens"] - self._buffered_rows]
                self._buffer[i].append(rows)
                n_rows = len(rows)
            else:
                self._buffer[i].append(acts)
                n_rows = int(keep.sum()) * acts.shape[1]
        if self.layout != "tokens":
            self._buffer_ids.append(ids[keep])
            self._buffer_tokens.append(np.asarray(batch["tokens"])[keep])
        self._buffered_rows += n_rows
        self._buffered_contexts += int(keep.sum())
        if self._buffered_rows >= self.shard_rows * (self.buffer_shards if self.layout == "tokens" else 1):
            self.flush()

    def flush(self) -> None:
        if not self._buffered_contexts:
            return
        if self.layout == "tokens":
            per_hook = [np.concatenate(b) for b in self._buffer]
            flush_index = len(self.manifest["shards"])
            # One permutation for every hook: a paired row stays one token's activations.
            order = np.random.default_rng([self.seed, flush_index]).permutation(len(per_hook[0]))
            per_hook = [rows[order] for rows in per_hook]
            stored = self._stored_columns(per_hook)
            for start in range(0, len(order), self.shard_rows):
                self._write_shard(
                    {name: rows[start : start + self.shard_rows] for name, rows in stored.items()}
                )
        else:
            self._write_shard(
                {
                    "context_id": np.concatenate(self._buffer_ids),
                    "tokens": np.concatenate(self._buffer_tokens),
                    "acts": np.concatenate(self._buffer[0]),
                }
            )
        self.manifest["contexts_done"] += self._buffered_contexts
        self._buffer = [[] for _ in self.columns]
        self._buffer_ids, self._buffer_tokens = [], []
        self._buffered_rows = self._buffered_contexts = 0
        write_manifest(self.dir, self.manifest)
        self._report()

    def _stored_columns(self, per_hook: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Each stored column's rows: one hook's `[rows, d]`, or, in a multi-layer cache
        (`model.layers`), its hooks stacked `[rows, L, d]` (layer i = the i-th configured layer)."""
        stacked = self.manifest.get("layers") is not None
        return {
            column: np.stack([per_hook[i] for i in hooks], axis=1) if stacked else per_hook[hooks[0]]
            for column, hooks in column_groups(manifest_hooks(self.manifest)).items()
        }

    def _arrow_columns(self, columns: dict[str, np.ndarray]) -> dict[str, pa.Array]:
        """The shard's Arrow columns; with `activations.dtype: int8`, each activation column
        quantised (`activations.int8`) beside its scales, and its error folded into the manifest."""
        out: dict[str, pa.Array] = {}
        int8 = self.manifest["dtype"] == "int8"
        groups = column_groups(manifest_hooks(self.manifest))
        for name, values in columns.items():
            if name == "context_id":
                out[name] = pa.array(values)
            elif not (int8 and is_activation_column(name)):
                out[name] = tensor_column(values)
            else:
                q, scale = quantise(values)
                out[name], out[name + SCALE_SUFFIX] = tensor_column(q), scale_column(scale)
                total = self.manifest.setdefault("int8_error", new_error())
                add_error(total, values, q, scale, count_rows=name == "acts")
                stacked = self.manifest.get("layers") is not None
                for slot, i in enumerate(groups[name]):
                    hook = manifest_hooks(self.manifest)[i]
                    part = (slice(None), slot) if stacked else (slice(None),)
                    add_error(hook.setdefault("int8_error", new_error()), values[part], q[part], scale[part])
        return out

    def _write_shard(self, columns: dict[str, np.ndarray]) -> None:
        name = f"shard-{len(self.manifest['shards']):05d}.parquet"
        table = pa.table(self._arrow_columns(columns))
        with filesystem.staged_file(filesystem.join(self.dir, name)) as tmp:
            pq.write_table(table, tmp, compression="none")
            sha256 = file_sha256(tmp)
        rows = table.num_rows
        self.manifest["shards"].append({"file": name, "rows": rows, "sha256": sha256})
        self.manifest["n_tokens"] += rows if self.layout == "tokens" else rows * self.manifest["context_size"]

    def _report(self) -> None:
        # At DEBUG: the command's progress line (`raysae.progress`) says how far generation is.
        done, total = self.manifest["contexts_done"], self.n_contexts
        rate = (self.manifest["n_tokens"] - self._rows_at_start) / max(
            time.perf_counter() - self._started, 1e-9
        )
        log.debug(
            "cache %s: %d/%d contexts (%.0f%%), %d shards, %.0f tokens/s",
            self.manifest["key"],
            done,
            total,
            100 * done / total,
            len(self.manifest["shards"]),
            rate,
        )

    def finish(self) -> None:
        self.flush()
        if self.contexts_done < self.n_contexts:
            raise CacheError(
                f"{self.dir}: generation stopped at context {self.contexts_done} of {self.n_contexts}"
            )
        self.manifest["complete"] = True
        write_manifest(self.dir, self.manifest)
        log.info(
            "cache %s complete: %d rows in %d shards",
            self.manifest["key"],
            self.manifest["n_tokens"] if self.layout == "tokens" else self.contexts_done,
            len(self.manifest["shards"]),
        )
