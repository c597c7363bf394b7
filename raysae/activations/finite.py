"""Non-finite activations (NaN, ±Inf): found where they arise, named by where they are.

Generation refuses to hand on or write a row that is not finite (a model in a too-narrow
dtype, a broken model), naming the model, hook and contexts. A cache written before that
check, or edited since, is searched in its held-out shards (small: `train.eval_tokens`
rows) before a run starts, so the shard holding them is named instead of an SAE being
evaluated to NaN. Plain NumPy and pyarrow over the files: no Ray.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from raysae import filesystem
from raysae.errors import CacheError

BFLOAT16_EXPONENT = 0x7F80
"""bfloat16 is stored as its raw 16-bit pattern: all exponent bits set is NaN or ±Inf."""


def nonfinite_rows(values: np.ndarray, dtype: str) -> np.ndarray:
    """Per row (the first axis) of stored activations, whether any value in it is NaN or ±Inf."""
    values = np.asarray(values)
    if dtype == "bfloat16":
        bad = (values & BFLOAT16_EXPONENT) == BFLOAT16_EXPONENT
    else:
        bad = ~np.isfinite(values)
    return np.asarray(np.asarray(bad).reshape(len(values), -1).any(axis=1))


def refuse_nonfinite(values: np.ndarray, dtype: str, context_ids: Any, what: str) -> None:
    """Raise `CacheError` when any of these per-context activations ([contexts, ...], stored in
    `dtype`) is not finite; `what` names their model and hook."""
    bad = nonfinite_rows(values, dtype)
    if not bad.any():
        return
    ids = np.asarray(context_ids)[bad]
    shown = ", ".join(str(int(i)) for i in ids[:5]) + (", …" if len(ids) > 5 else "")
    raise CacheError(
        f"{what} gives non-finite activations (NaN or Inf) in {len(ids)} of {len(bad)} contexts "
        f"(context ids {shown}); refusing to write or train on them. An overflow in "
        f"activations.dtype={dtype} (or model.dtype) is the usual cause: try float32"
    )


def _flat_values(column: pa.ChunkedArray) -> tuple[np.ndarray, int]:
    """(every value of a tensor column, values per row), whether or not Ray's tensor type is loaded."""
    array = column.combine_chunks()
    if isinstance(array, pa.ExtensionArray):
        array = array.storage
    rows = len(array)
    while (
        pa.types.is_list(array.type)
        or pa.types.is_large_list(array.type)
        or pa.types.is_fixed_size_list(array.type)
    ):
        array = array.flatten()
    values = array.to_numpy(zero_copy_only=False)
    return values, (len(values) // rows if rows else 0)


def check_finite_shards(
    directory: filesystem.Location,
    shards: list[dict[str, Any]],
    dtype: str,
    hooks: list[dict[str, Any]] | None = None,
) -> None:
    """Raise `CacheError` naming the first of these cache shards (manifest entries) whose
    activations hold a NaN or Inf, with the hook (of a paired cache), the row and how many
    rows, and the repair. `hooks` are the manifest's (`name`, `column`); default `acts` alone."""
    import pyarrow.parquet as pq

    hooks = hooks or [{"name": None, "column": "acts"}]
    columns = [h["column"] for h in hooks]
    for shard in shards:
        path = filesystem.join(directory, shard["file"])
        fs, inner = filesystem.resolve(path)
        table = pq.read_table(inner, columns=columns, filesystem=fs)
        for hook in hooks:
            values, per_row = _flat_values(table.column(hook["column"]))
            if not per_row:
                continue
            bad = nonfinite_rows(values.reshape(-1, per_row), dtype)
            if bad.any():
                where = f" at {hook['name']} (column {hook['column']})" if len(hooks) > 1 else ""
                raise CacheError(
                    f"cache shard {path}: {int(bad.sum())} of {len(bad)} rows hold non-finite activations"
                    f"{where} (NaN or Inf; the first is row {int(np.argmax(bad))}), in the held-out rows "
                    f"every SAE is evaluated on. Delete {directory} and rerun `python -m raysae.generate`, "
                    "which refuses to write non-finite rows"
                )
