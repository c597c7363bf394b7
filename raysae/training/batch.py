"""What the trainer steps on: a `[rows, d_in]` tensor of inputs, or an `(inputs, targets)`
pair of tensors cut at the same rows (a paired cache's `acts` and `acts_1`). A multi-layer
cache (`model.layers`) gives the same forms with a layer axis: `[rows, L, d_in]` inputs and
`[rows, L, d_out]` targets (layer i = the i-th configured layer); a crosscoder's are inputs alone.

An SAE reconstructs the inputs and ignores targets; a transcoder needs them. These few
functions let the loops treat both forms alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Batch = Tensor | tuple[Tensor, Tensor]
"""Inputs, or (inputs, targets) for the same tokens."""


def split_batch(batch: Batch) -> tuple[Tensor, Tensor | None]:
    """(inputs, targets or None)."""
    if isinstance(batch, Tensor):
        return batch, None
    x, y = batch
    return x, y


def batch_rows(batch: Batch) -> int:
    return split_batch(batch)[0].shape[0]


def batch_to(batch: Batch, device: torch.device | str) -> Batch:
    x, y = split_batch(batch)
    x = x.to(device, non_blocking=True)
    return x if y is None else (x, y.to(device, non_blocking=True))


def first_rows(batch: Batch, n: int) -> Batch:
    x, y = split_batch(batch)
    return x[:n] if y is None else (x[:n], y[:n])


def concat_batches(batches: Sequence[Batch]) -> Batch:
    xs, ys = zip(*(split_batch(b) for b in batches), strict=True)
    x = torch.cat(xs)
    return x if ys[0] is None else (x, torch.cat(ys))  # type: ignore[arg-type]


def nonfinite_rows(batch: Batch) -> Tensor:
    """[rows] bool: the rows holding a NaN or Inf in the inputs or (a pair) in the targets."""
    x, y = split_batch(batch)
    bad = ~torch.isfinite(x).reshape(len(x), -1).all(dim=1)
    return bad if y is None else bad | ~torch.isfinite(y).reshape(len(y), -1).all(dim=1)


def check_batch(
    batch: Batch, d_in: int, index: int, d_out: int | None = None, *, layers: int | None = None
) -> None:
    """A clear error for a batch of the wrong shape (`d_out`: the targets' width, when needed;
    `layers`: a multi-layer batch's L, whose tensors are `[rows, L, d]`)."""
    if isinstance(batch, tuple | list) and len(batch) == 2:
        x, y = batch
        _check_tensor(x, d_in, index, "inputs", layers)
        _check_tensor(y, d_out, index, "targets", layers)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"batch {index}: {x.shape[0]} input rows but {y.shape[0]} target rows")
        return
    _check_tensor(batch, d_in, index, "", layers)
    if d_out is not None:
        raise ValueError(
            f"batch {index}: a transcoder needs (inputs, targets) pairs, got inputs alone "
            "(train on a paired cache: model.hook_point_out)"
        )


def _check_tensor(t: object, width: int | None, index: int, what: str, layers: int | None = None) -> None:
    ndim = 2 if layers is None else 3
    ok = (
        isinstance(t, Tensor)
        and t.ndim == ndim
        and (width is None or t.shape[-1] == width)
        and (layers is None or t.shape[1] == layers)
    )
    if not ok:
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        axes = "" if layers is None else f"{layers}, "
        expected = f"[rows, {axes}{width if width is not None else 'd'}]"
        raise ValueError(
            f"batch {index}: expected {what + ' ' if what else ''}a {expected} tensor, got {shape}"
        )
