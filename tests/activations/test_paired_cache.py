"""Paired caches: rows carrying the input and output hooks of one forward pass, shuffled together."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raysae.activations import (
    CacheError,
    cache_key,
    generate_caches,
    live_dataset,
    load_model,
    read_cache,
    read_manifest,
    verify_cache,
)
from raysae.activations.build import training_hooks
from raysae.activations.cache import cache_dir, file_sha256, key_inputs, write_manifest
from raysae.activations.generation import tensor_column
from raysae.activations.language_model import hook_activations, tokenizer_for
from raysae.activations.streams import split_cache
from raysae.activations.tokens import pack_contexts
from raysae.errors import ConfigError
from raysae.preflight import check_inputs
from tests.activations.conftest import crash_at_second_flush

PAIR = ["model.hook_point_out=blocks.1.hook_mlp_out"]


def test_key_of_a_pair_differs_and_one_hook_key_is_unchanged(tiny_config):
    cfg = tiny_config()
    one = cache_key(cfg, "blocks.1.hook_resid_post", "tokens")
    assert cache_key(cfg, ["blocks.1.hook_resid_post"], "tokens") == one
    assert "hooks" not in key_inputs(cfg, "blocks.1.hook_resid_post", "tokens")
    ab = cache_key(cfg, ["blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"], "tokens")
    ba = cache_key(cfg, ["blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"], "tokens")
    assert len({one, ab, ba}) == 3


def test_paired_rows_are_the_two_hooks_of_one_token(tiny_config, ray_local):
    cfg = tiny_config(*PAIR, "activations.n_tokens=300")
    dirs = generate_caches(cfg)
    directory = dirs[("blocks.1.hook_resid_post", "tokens")]
    m = verify_cache(directory)
    assert [(h["name"], h["d"], h["column"]) for h in m["hooks"]] == [
        ("blocks.1.hook_resid_post", 32, "acts"),
        ("blocks.1.hook_mlp_out", 32, "acts_1"),
    ]
    rows = read_cache(directory, seed=None).take_all()
    x = np.stack([r["acts"] for r in rows])
    y = np.stack([r["acts_1"] for r in rows])
    assert x.shape == y.shape == (300, 32)
    # Direct: the model on the same contexts, BOS rows left out, then each cached x row's partner.
    n = int(np.ceil(300 / 15)) + 1
    tokens = torch.as_tensor(pack_contexts(cfg.data, tokenizer_for(cfg), n), dtype=torch.long)
    acts = hook_activations(
        load_model(cfg.model, device="cpu"), tokens, ["blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"]
    )
    dx = acts["blocks.1.hook_resid_post"][:, 1:].reshape(-1, 32).numpy()
    dy = acts["blocks.1.hook_mlp_out"][:, 1:].reshape(-1, 32).numpy()
    where = {r.tobytes(): i for i, r in enumerate(dx)}
    index = [where[r.tobytes()] if r.tobytes() in where else None for r in x]
    matched = [i for i in index if i is not None]
    assert len(matched) == 300, "every cached input row is a row the model computes"
    np.testing.assert_allclose(y, dy[matched], rtol=1e-5, atol=1e-5)
    live = tiny_config(*PAIR, "activations.n_tokens=300", "activations.source=live")
    b = [b for b in live_dataset(live).iter_batches(batch_format="numpy")]
    lx, ly = np.concatenate([i["acts"] for i in b]), np.concatenate([i["acts_1"] for i in b])
    order, lorder = np.lexsort(x.T[::-1]), np.lexsort(lx.T[::-1])
    assert np.array_equal(x[order], lx[lorder]) and np.array_equal(y[order], ly[lorder])


def test_an_interrupted_paired_build_resumes_to_the_same_shards(
    tiny_config, ray_local, tmp_path, monkeypatch
):
    def sums(directory):
        return [s["sha256"] for s in read_manifest(directory)["shards"]]

    clean_cfg = tiny_config(*PAIR, f"activations.cache_dir={tmp_path / 'clean'}")
    clean = generate_caches(clean_cfg)[("blocks.1.hook_resid_post", "tokens")]
    cfg = tiny_config(*PAIR, f"activations.cache_dir={tmp_path / 'interrupted'}")
    restore = crash_at_second_flush(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        generate_caches(cfg)
    partial = cache_dir(cfg, training_hooks(cfg), "tokens")
    m = read_manifest(partial)
    assert not m["complete"] and 0 < m["contexts_done"] < 100
    restore()
    generate_caches(cfg)
    m = verify_cache(partial)
    assert m["generation_passes"] == 2 and [h["column"] for h in m["hooks"]] == ["acts", "acts_1"]
    assert sums(partial) == sums(clean)  # both hooks of every row: nothing lost, nothing twice


def test_a_damaged_paired_shard_is_named(tiny_config, ray_local, tmp_path):
    cfg = tiny_config(*PAIR, f"activations.cache_dir={tmp_path / 'cache'}")
    directory = generate_caches(cfg)[("blocks.1.hook_resid_post", "tokens")]
    shard = sorted(Path(directory).glob("shard-*.parquet"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match=f"cache shard {shard}: checksum mismatch"):
        verify_cache(directory)


def test_nan_in_the_target_hook_of_a_held_out_shard_is_named(tiny_config, ray_local, tmp_path):
    cfg = tiny_config(*PAIR, f"activations.cache_dir={tmp_path / 'cache'}", "train.eval_tokens=100")
    directory = Path(generate_caches(cfg)[("blocks.1.hook_resid_post", "tokens")])
    manifest = read_manifest(directory)
    shard = manifest["shards"][-1]  # held out
    path = directory / shard["file"]
    table = pq.read_table(path)
    y = np.stack(table.column("acts_1").to_pylist()).astype(np.float32)
    y[[2, 5], 0] = np.nan
    x = np.stack(table.column("acts").to_pylist()).astype(np.float32)
    pq.write_table(pa.table({"acts": tensor_column(x), "acts_1": tensor_column(y)}), path, compression="none")
    shard["sha256"] = file_sha256(path)
    write_manifest(directory, manifest)
    with pytest.raises(
        CacheError, match=rf"cache shard {path}: 2 of \d+ rows .* at blocks.1.hook_mlp_out \(column acts_1\)"
    ):
        split_cache(cfg)


def test_bad_pairs_fail_before_any_work_naming_the_key(tiny_config, tmp_path):
    unknown = tiny_config(
        "model.hook_point_out=blocks.1.hook_mlp_ot", f"activations.cache_dir={tmp_path / 'a'}"
    )
    with pytest.raises(
        ConfigError, match=r"model.hook_point_out: 'blocks.1.hook_mlp_ot' is not a hook point.*hook_mlp_out"
    ):
        check_inputs(unknown, tracking=False)
    lonely = tiny_config("sae.kind=transcoder", f"activations.cache_dir={tmp_path / 'b'}")
    with pytest.raises(ConfigError, match="model.hook_point_out: sae.kind=transcoder needs an output hook"):
        check_inputs(lonely, tracking=False)
    same = tiny_config(
        "sae.kind=skip_transcoder",
        "model.hook_point_out=blocks.1.hook_resid_post",
        f"activations.cache_dir={tmp_path / 'c'}",
    )
    with pytest.raises(
        ConfigError, match="model.hook_point_out: sae.kind=skip_transcoder needs an output hook"
    ):
        check_inputs(same, tracking=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing was written
