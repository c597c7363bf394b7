"""int8 activation storage (`activations.dtype: int8`): per row-hook vector, symmetric, absmax.

Each vector `v` (one token's activations at one hook) is stored as `q = round(v / s)` in int8 with
its float32 scale `s = max|v| / 127` in a column `<column>_scale` beside it (shape: the row's
shape without its last axis); a vector of zeros has `s = 0` and `q = 0`. Reading gives
`q.float32 * s`, the same float32 product the writer measured its error on, so the error the
manifest records is the error a reader gets. Plain NumPy and pyarrow: no Ray.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

SCALE_SUFFIX = "_scale"
"""The scale of column `acts` is column `acts_scale`."""


def quantise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float activations [..., d] -> (int8 [..., d], float32 scales [...])."""
    v = np.asarray(values, dtype=np.float32)
    scale = (np.abs(v).max(axis=-1) / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))[..., None]
    q = np.clip(np.rint(v / safe), -127, 127).astype(np.int8)
    return q, scale


def dequantise(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int8 [..., d] and scales [...] -> float32 [..., d]."""
    return np.asarray(q).astype(np.float32) * np.asarray(scale, dtype=np.float32)[..., None]


def new_error() -> dict[str, Any]:
    """An empty reconstruction-error record (what the manifest keeps per hook and in all)."""
    return {"rows": 0, "squared_error": 0.0, "squared_norm": 0.0, "relative_mse": None, "max_abs_error": 0.0}


def add_error(
    record: dict[str, Any], values: np.ndarray, q: np.ndarray, scale: np.ndarray, *, count_rows: bool = True
) -> None:
    """Fold the error of `values` stored as (`q`, `scale`) into `record` (in place): sums in
    float64 over every value, so a resumed build's record equals an uninterrupted one's. Without
    `count_rows`, the rows are not counted again (a row's second column)."""
    v = np.asarray(values, dtype=np.float32)
    err = dequantise(q, scale).astype(np.float64) - v.astype(np.float64)
    record["rows"] += int(len(v)) if count_rows else 0
    record["squared_error"] += float(np.square(err).sum())
    record["squared_norm"] += float(np.square(v.astype(np.float64)).sum())
    record["max_abs_error"] = max(record["max_abs_error"], float(np.abs(err).max(initial=0.0)))
    norm = record["squared_norm"]
    record["relative_mse"] = record["squared_error"] / norm if norm > 0 else 0.0


def tensor_column(array: np.ndarray) -> pa.Array:
    """A Ray tensor column (`generation.tensor_column`'s, without importing generation)."""
    from ray.data.extensions import ArrowTensorArray

    return ArrowTensorArray.from_numpy(np.ascontiguousarray(array))


def _column_array(column: pa.ChunkedArray) -> np.ndarray:
    """A tensor column as [rows, *row shape] (the shape from Ray's tensor type), a plain one as [rows]."""
    array = column.combine_chunks()
    shape: tuple[int, ...] = tuple(getattr(array.type, "shape", None) or ())
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
    return values.reshape(rows, *shape) if shape else values.reshape(rows, -1).squeeze(-1)


def dequantise_table(table: pa.Table) -> pa.Table:
    """A shard's table with every int8 column that has a `_scale` column replaced by its float32
    values (a Ray tensor column of the same row shape) and the scale columns dropped; a table
    without scales is returned as it is. Call with Ray's tensor types loaded (`ray.data`), which
    give each column's row shape."""
    names = table.column_names
    quantised = [c for c in names if c + SCALE_SUFFIX in names]
    if not quantised:
        return table
    for name in quantised:
        q = _column_array(table.column(name))
        scale = _column_array(table.column(name + SCALE_SUFFIX)).reshape(q.shape[:-1])
        table = table.set_column(table.column_names.index(name), name, tensor_column(dequantise(q, scale)))
    return table.drop_columns([c + SCALE_SUFFIX for c in quantised])


def scale_column(scale: np.ndarray) -> pa.Array:
    """The stored scale column: plain float32 for one scale a row, a tensor column for several."""
    return pa.array(scale) if scale.ndim == 1 else tensor_column(scale)
