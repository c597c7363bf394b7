import json
from pathlib import Path

import numpy as np
import pytest

from raysae import filesystem
from raysae.activations import (
    CacheError,
    cache_dir,
    cache_key,
    generate_caches,
    read_cache,
    read_manifest,
    verify_cache,
)
from tests.activations.conftest import crash_at_second_flush


def shard_sums(directory):
    return [s["sha256"] for s in read_manifest(directory)["shards"]]


def test_tokens_cache_round_trip_and_reuse(tiny_config, ray_local):
    cfg = tiny_config()
    (directory,) = generate_caches(cfg).values()
    m = verify_cache(directory)
    assert m["complete"] and m["layout"] == "tokens" and m["n_tokens"] == 1500
    assert m["d_model"] == 32 and m["hook_point"] == "blocks.1.hook_resid_post" and m["dtype"] == "float32"
    assert sum(s["rows"] for s in m["shards"]) == 1500 and m["generation_passes"] == 1
    assert read_cache(directory).count() == 1500
    generate_caches(cfg)  # complete: reused, not regenerated
    assert read_manifest(directory)["generation_passes"] == 1


def test_file_order_is_shuffled_per_seed(tiny_config, ray_local):
    (directory,) = generate_caches(tiny_config()).values()
    first = lambda seed: read_cache(directory, seed=seed).take(1)[0]["acts"]  # noqa: E731
    rows = {seed: first(seed).tobytes() for seed in range(6)}
    assert len(set(rows.values())) > 1


@pytest.mark.parametrize("where", ["local", "s3"])
def test_interrupted_generation_resumes_exactly(
    where, tiny_config, ray_local, tmp_path, monkeypatch, request
):
    root = str(tmp_path) if where == "local" else request.getfixturevalue("s3_bucket")
    clean_cfg = tiny_config(f"activations.cache_dir={tmp_path / 'clean'}")
    (clean,) = generate_caches(clean_cfg).values()

    cfg = tiny_config(f"activations.cache_dir={filesystem.join(root, 'interrupted')}")
    restore = crash_at_second_flush(monkeypatch, debris=True)
    with pytest.raises(KeyboardInterrupt):
        generate_caches(cfg)
    partial = cache_dir(cfg, cfg.model.hook_point, "tokens")
    m = read_manifest(partial)
    assert not m["complete"] and 0 < m["contexts_done"] < 100
    restore()
    generate_caches(cfg)
    m = verify_cache(partial)
    assert m["generation_passes"] == 2 and m["n_tokens"] == 1500
    assert shard_sums(partial) == shard_sums(clean)  # nothing lost, nothing written twice
    assert not filesystem.exists(filesystem.join(partial, "shard-99999.parquet"))


def test_corruption_after_a_good_verification_is_caught(tiny_config, ray_local):
    (directory,) = generate_caches(tiny_config()).values()
    verify_cache(directory)  # checked once and remembered ...
    shard = sorted(Path(directory).glob("shard-*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[200] ^= 0xFF
    shard.write_bytes(bytes(data))  # ... until a shard changes (same size, new mtime)
    with pytest.raises(CacheError, match=f"cache shard {shard}: checksum mismatch"):
        verify_cache(directory)


def test_bad_shards_are_named(tiny_config, ray_local):
    (directory,) = generate_caches(tiny_config()).values()
    shard = sorted(Path(directory).glob("shard-*.parquet"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(CacheError, match=f"cache shard {shard}: checksum mismatch"):
        verify_cache(directory)
    shard.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    with pytest.raises(CacheError, match=str(shard)):
        read_cache(directory)
    shard.unlink()
    with pytest.raises(CacheError, match=f"cache shard {shard}: missing"):
        verify_cache(directory)


def test_incomplete_or_missing_cache_is_an_error(tmp_path):
    with pytest.raises(CacheError, match="manifest.json: missing"):
        verify_cache(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"complete": False, "shards": []}))
    with pytest.raises(CacheError, match="incomplete"):
        verify_cache(tmp_path)


@pytest.mark.parametrize(
    "override",
    [
        "model.hook_point=blocks.0.hook_resid_post",
        "model.random.seed=1",
        "model.random.d_model=64",
        "model.dtype=bfloat16",
        "data.context_size=32",
        "data.prepend_bos=false",
        "data.exclude_bos=false",
        "data.seed=3",
        "data.path=/elsewhere",
        "data.text_column=body",
        "activations.n_tokens=3000",
        "activations.dtype=float16",
        "activations.seed=1",
    ],
)
def test_key_changes_with_every_input(tiny_config, override):
    hook = lambda c: c.model.hook_point  # noqa: E731
    base, changed = tiny_config(), tiny_config(override)
    assert cache_key(base, hook(base), "tokens") != cache_key(changed, hook(changed), "tokens")


@pytest.mark.parametrize(
    "override",
    ["train.lr=0.1", "sae.k=8", "activations.actors.num=2", "activations.model_batch_size=2", "name=other"],
)
def test_key_ignores_what_does_not_change_activations(tiny_config, override):
    base, changed = tiny_config(), tiny_config(override)
    assert cache_key(base, "h", "tokens") == cache_key(changed, "h", "tokens")
    assert cache_key(base, "h", "tokens") != cache_key(base, "h", "contexts")


def test_bfloat16_cache(tiny_config, ray_local):
    from raysae.activations import from_storage

    cfg = tiny_config("activations.dtype=bfloat16", "activations.layouts=[contexts]")
    (directory,) = generate_caches(cfg).values()
    rows = read_cache(directory, seed=None).take(2)
    acts = from_storage(np.stack([r["acts"] for r in rows]), "bfloat16")
    assert str(acts.dtype) == "torch.bfloat16" and acts.shape == (2, 16, 32)
    assert acts.float().norm() > 0
