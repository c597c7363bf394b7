import numpy as np
import pyarrow as pa
import torch

from raysae.activations import iter_activation_batches
from raysae.activations.generation import tensor_column


def test_rebatching_keeps_every_row_in_order(ray_local):
    blocks = [
        np.random.default_rng(i).standard_normal((n, 8)).astype(np.float32)
        for i, n in enumerate([5, 17, 3, 40])
    ]
    ds = ray_local.data.from_arrow([pa.table({"acts": tensor_column(b)}) for b in blocks])
    ds.context.execution_options.preserve_order = True
    out = list(iter_activation_batches(ds, 16))
    assert [len(b) for b in out] == [16, 16, 16, 16, 1]
    assert torch.equal(torch.cat(out), torch.from_numpy(np.concatenate(blocks)))
    assert [len(b) for b in iter_activation_batches(ds, 16, drop_last=True)] == [16, 16, 16, 16]
