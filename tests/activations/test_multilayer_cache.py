"""Multi-layer caches (`model.layers`): every layer's input and target from one forward pass, int8
storage with its measured error, and the disk-size check before anything is written."""

import collections
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raysae.activations import (
    disk_budget,
    generate_caches,
    iter_activation_batches,
    live_dataset,
    load_model,
    read_cache,
)
from raysae.activations.cache import cache_dir, verify_cache
from raysae.activations.language_model import tokenizer_for
from raysae.activations.layers import training_columns, training_hooks
from raysae.activations.streams import training_rows
from raysae.activations.tokens import pack_contexts
from raysae.config import load_config
from raysae.errors import CacheError
from raysae.preflight import check_generation
from raysae.training.batch import check_batch, split_batch

CLT = [
    "model.layers=[0, 2]",
    "model.hook_point=blocks.{layer}.ln2.hook_normalized",
    "model.hook_point_out=blocks.{layer}.hook_mlp_out",
    "activations.n_tokens=300",
    "activations.layouts=[tokens]",
    "train.eval_tokens=100",
    "train.total_tokens=256",
    "train.batch_size=64",
]
CROSSCODER = [
    "model.layers=[0, 2]",
    "model.hook_point=blocks.{layer}.ln2.hook_normalized",
    "activations.n_tokens=300",
    "activations.layouts=[tokens]",
    "train.eval_tokens=100",
    "train.total_tokens=256",
    "train.batch_size=50",
]


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus_dir, tokenizer_dir, ray_local):
    """(config maker over one cache folder, the float32 CLT cache's folder), built once for the module."""
    root = tmp_path_factory.mktemp("multilayer")

    def make(*overrides):
        return load_config(
            None,
            [
                "model.name=random",
                f"model.tokenizer={tokenizer_dir}",
                "model.random.d_model=32",
                "model.random.n_layers=3",
                "model.random.n_heads=4",
                f"data.path={corpus_dir}",
                "data.context_size=16",
                f"activations.cache_dir={root / 'cache'}",
                "activations.shard_rows=128",
                "activations.model_batch_size=4",
                "activations.shuffle_buffer_shards=2",
                *overrides,
            ],
        )

    return make, generate_caches(make(*CLT))[("blocks.0.ln2.hook_normalized", "tokens")]


def _direct(cfg, hooks: list[str], n_contexts: int) -> dict[str, np.ndarray]:
    """Each hook's [rows, d] from a plain TransformerLens `run_with_cache` (every block run), BOS left out."""
    tokens = torch.as_tensor(pack_contexts(cfg.data, tokenizer_for(cfg), n_contexts), dtype=torch.long)
    model = load_model(cfg.model, device="cpu")
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hooks)
    return {h: cache[h][:, 1:].reshape(-1, cache[h].shape[-1]).numpy() for h in hooks}


def _stacked(rows: list[dict], column: str) -> np.ndarray:
    return np.stack([r[column] for r in rows])


def test_one_pass_fills_every_layer_and_rows_equal_a_direct_run(built):
    make, directory = built
    cfg = make(*CLT)
    hooks = training_hooks(cfg)
    assert hooks == [
        "blocks.0.ln2.hook_normalized",
        "blocks.2.ln2.hook_normalized",
        "blocks.0.hook_mlp_out",
        "blocks.2.hook_mlp_out",
    ]
    m = verify_cache(directory)
    assert m["layers"] == [0, 2] and m["generation_passes"] == 1 and m["d_model"] == 32
    assert [(h["name"], h["column"], h["layer"], h["slot"], h["role"], h["d"]) for h in m["hooks"]] == [
        ("blocks.0.ln2.hook_normalized", "acts", 0, 0, "input", 32),
        ("blocks.2.ln2.hook_normalized", "acts", 2, 1, "input", 32),
        ("blocks.0.hook_mlp_out", "acts_1", 0, 0, "target", 32),
        ("blocks.2.hook_mlp_out", "acts_1", 2, 1, "target", 32),
    ]
    rows = read_cache(directory, seed=None).take_all()
    x, y = _stacked(rows, "acts"), _stacked(rows, "acts_1")
    assert x.shape == y.shape == (300, 2, 32)
    direct = _direct(cfg, hooks, 300 // 15 + 1)
    dx = np.concatenate([direct[h] for h in hooks[:2]], axis=1)  # [rows, 2 * 32]: both layers' inputs
    distance = ((x.reshape(300, 1, -1) - dx[None]) ** 2).sum(-1)  # each cached row to each direct one
    index = distance.argmin(axis=1)
    assert distance.min(axis=1).max() < 1e-8, "every cached row is one token's inputs at both layers"
    for slot, (hin, hout) in enumerate(zip(hooks[:2], hooks[2:], strict=True)):
        np.testing.assert_allclose(x[:, slot], direct[hin][index], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(y[:, slot], direct[hout][index], rtol=1e-4, atol=1e-5)

    # The training stream: x [B, L, d_in], target [B, L, d_out], as the trainer takes them.
    batch = next(iter_activation_batches(training_rows(cfg), 64, columns=training_columns(cfg)))
    bx, by = split_batch(batch)
    assert by is not None and bx.shape == by.shape == (64, 2, 32)
    check_batch(batch, 32, 0, 32, layers=2)
    with pytest.raises(ValueError, match=r"expected inputs a \[rows, 3, 32\] tensor, got \(64, 2, 32\)"):
        check_batch(batch, 32, 0, 32, layers=3)

    # Live: the same rows, streamed.
    live = make(*CLT, "activations.source=live")
    blocks = list(live_dataset(live).iter_batches(batch_format="numpy"))
    lx = np.concatenate([b["acts"] for b in blocks])
    ly = np.concatenate([b["acts_1"] for b in blocks])
    assert lx.shape == (300, 2, 32)
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    order, lorder = np.lexsort(flat(x).T[::-1]), np.lexsort(flat(lx).T[::-1])
    assert np.array_equal(x[order], lx[lorder]) and np.array_equal(y[order], ly[lorder])

    # The size stated up front errs high, by little more than the per-shard allowance.
    written = sum(p.stat().st_size for p in Path(directory).iterdir())
    estimate = disk_budget.cache_bytes(cfg, hooks, "tokens", dict.fromkeys(hooks, 32))
    shards = len(m["shards"])
    assert written <= estimate
    assert estimate - shards * disk_budget.PARQUET_SHARD_OVERHEAD - disk_budget.MANIFEST_BYTES < 1.2 * written


def test_int8_error_in_the_manifest_equals_a_recomputation(built):
    make, exact_dir = built
    # A crosscoder over the CLT's inputs, stored as int8: its `acts` are the float32 cache's `acts`
    # in the same order (the shuffle depends on the seed and the rows, not the dtype or the hooks).
    small = make(*CROSSCODER, "activations.dtype=int8")
    small_dir = generate_caches(small)[("blocks.0.ln2.hook_normalized", "tokens")]
    m = verify_cache(small_dir)
    assert [h["column"] for h in m["hooks"]] == ["acts", "acts"] and m["layers"] == [0, 2]
    v = _stacked(read_cache(exact_dir, seed=None).take_all(), "acts").astype(np.float64)
    q = np.concatenate(
        [np.stack(pq.read_table(Path(small_dir) / s["file"]).column("acts").to_pylist()) for s in m["shards"]]
    )
    s = np.concatenate(
        [
            np.stack(pq.read_table(Path(small_dir) / s["file"]).column("acts_scale").to_pylist())
            for s in m["shards"]
        ]
    )
    assert q.shape == (300, 2, 32) and s.shape == (300, 2)
    np.testing.assert_allclose(s, np.abs(v).max(axis=-1) / 127, rtol=1e-6)
    assert np.abs(q).max() == 127 and np.array_equal(q, np.rint(v / s[..., None]))
    back = q * s[..., None].astype(np.float32)
    err = back.astype(np.float64) - v
    rec = m["int8_error"]
    assert rec["rows"] == 300
    np.testing.assert_allclose(rec["relative_mse"], (err**2).sum() / (v**2).sum(), rtol=1e-6)
    np.testing.assert_allclose(rec["max_abs_error"], np.abs(err).max(), rtol=1e-6)
    assert 0 < rec["relative_mse"] < 1e-3
    for slot, hook in enumerate(m["hooks"]):
        e = err[:, slot]
        np.testing.assert_allclose(hook["int8_error"]["relative_mse"], (e**2).sum() / (v[:, slot] ** 2).sum())
    # Reading dequantises to float32: exactly the values the error was measured on.
    read = _stacked(read_cache(small_dir, seed=None).take_all(), "acts")
    assert read.dtype == np.float32 and np.array_equal(read, back)
    # The crosscoder's stream: inputs alone, [B, L, d].
    batch = next(
        iter_activation_batches(training_rows(small), 50, dtype="int8", columns=training_columns(small))
    )
    assert training_columns(small) == ("acts",) and batch[0].shape == (50, 2, 32)


def test_a_too_small_disk_is_refused_before_anything_is_written(
    tiny_config, ray_local, tmp_path, monkeypatch
):
    cfg = tiny_config(*CLT, f"activations.cache_dir={tmp_path / 'nowhere' / 'cache'}")
    usage = collections.namedtuple("usage", "total used free")
    seen = []

    def small_disk(path):
        seen.append(Path(path))
        return usage(10**9, 10**9 - 4096, 4096)

    monkeypatch.setattr(disk_budget.shutil, "disk_usage", small_disk)
    directory = cache_dir(cfg, training_hooks(cfg), "tokens")
    # In preflight, before Ray is needed: the widths come from the model on the CPU.
    with pytest.raises(
        CacheError, match=rf"{directory}: building this cache needs about .* but .* \(4096 bytes\) free"
    ):
        check_generation(cfg)
    with pytest.raises(CacheError, match=r"\(4096 bytes\) free; nothing was written"):
        generate_caches(cfg)
    assert seen and seen[0] == tmp_path  # the nearest existing folder above the cache
    assert not (tmp_path / "nowhere").exists()
    need = disk_budget.cache_bytes(cfg, training_hooks(cfg), "tokens", dict.fromkeys(training_hooks(cfg), 32))
    monkeypatch.setattr(disk_budget.shutil, "disk_usage", lambda path: usage(10**12, 0, need))
    check_generation(cfg)  # exactly enough
