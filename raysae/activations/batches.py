"""Training batches from a Ray Dataset of activation rows.

Ray Data re-batching of tensor columns to a fixed row count costs more than
the read itself, so this takes whole blocks (one cache shard or one generated
model batch each) and cuts them into `[batch_size, d_model]` torch tensors.
Rows were already shuffled across contexts when the cache was written and the
file order is reshuffled per epoch, so no further shuffle is needed here.
"""

from __future__ import annotations

from collections.abc import Generator

import torch

from raysae.activations.generation import from_storage


def iter_activation_batches(
    ds,
    batch_size: int,
    *,
    dtype: str = "float32",
    drop_last: bool = False,
    prefetch_blocks: int = 2,
    device: torch.device | None = None,
    columns: tuple[str, ...] | None = None,
) -> Generator:
    """`[batch_size, d_model]` tensors from a Ray Dataset or a Ray Train dataset shard
    (`DataIterator`) with an `acts` column; `prefetch_blocks` are read ahead.

    With a CUDA `device`, Ray's reader threads copy each block into pinned memory and queue
    its copy to the device (non-blocking), `prefetch_blocks` ahead of the consumer, so the
    training thread never waits on a host copy; the stored dtype travels as is (a bf16 cache
    stays bf16, 2 bytes a value, viewed as bf16 on the device). Otherwise (CPU) the call is
    the one it always was, Ray's default placement.

    With `columns` (e.g. `("acts", "acts_1")`, a paired cache's input and target), it yields
    tuples of such tensors, cut at the same rows.
    """
    if columns is not None:
        yield from _iter_columns(ds, batch_size, columns, dtype, drop_last, prefetch_blocks, device)
        return
    pending: list[torch.Tensor] = []
    n = 0
    cuda = device is not None and device.type == "cuda"
    transfer = {"device": device, "pin_memory": True} if cuda else {}
    blocks = ds.iter_torch_batches(batch_size=None, prefetch_batches=prefetch_blocks, **transfer)
    for block in blocks:
        acts = from_storage(block["acts"], dtype)
        pending.append(acts)
        n += len(acts)
        if n < batch_size:
            continue
        rows = torch.cat(pending)
        full = (n // batch_size) * batch_size
        yield from rows[:full].split(batch_size)
        pending, n = [rows[full:]], n - full
    if n and not drop_last:
        yield torch.cat(pending)


def _iter_columns(ds, batch_size, columns, dtype, drop_last, prefetch_blocks, device):
    pending: list[list[torch.Tensor]] = [[] for _ in columns]
    n = 0
    cuda = device is not None and device.type == "cuda"
    transfer = {"device": device, "pin_memory": True} if cuda else {}
    for block in ds.iter_torch_batches(batch_size=None, prefetch_batches=prefetch_blocks, **transfer):
        for i, column in enumerate(columns):
            pending[i].append(from_storage(block[column], dtype))
        n += len(pending[0][-1])
        if n < batch_size:
            continue
        rows = [torch.cat(p) for p in pending]
        full = (n // batch_size) * batch_size
        yield from zip(*(r[:full].split(batch_size) for r in rows), strict=True)
        pending, n = [[r[full:]] for r in rows], n - full
    if n and not drop_last:
        yield tuple(torch.cat(p) for p in pending)
