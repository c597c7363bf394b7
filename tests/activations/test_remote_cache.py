"""An activation cache under an s3:// URI (a local moto S3): built, verified, reused and read
through Ray Data exactly like the same cache in a local folder."""

import numpy as np
import pytest

from raysae import filesystem
from raysae.activations import generate_caches, read_cache, verify_cache
from raysae.activations.cache import CacheError, cache_dir, read_manifest
from raysae.activations.streams import held_out_dataset


def rows(ds) -> np.ndarray:
    return np.concatenate([b["acts"] for b in ds.iter_batches(batch_format="numpy")])


def test_a_cache_on_s3_equals_the_local_one(train_config, s3_bucket):
    local = train_config("s3cache")
    remote = train_config("s3cache", f"activations.cache_dir={s3_bucket}/cache")
    hook = local.model.hook_point
    local_dir, remote_dir = cache_dir(local, hook, "tokens"), cache_dir(remote, hook, "tokens")
    assert remote_dir.startswith(f"{s3_bucket}/cache/") and remote_dir.endswith(local_dir.rsplit("/", 1)[1])

    assert generate_caches(remote) == {(hook, "tokens"): remote_dir}
    ours, theirs = verify_cache(remote_dir), verify_cache(local_dir)
    assert [(s["file"], s["rows"], s["sha256"]) for s in ours["shards"]] == [
        (s["file"], s["rows"], s["sha256"]) for s in theirs["shards"]
    ]  # byte for byte
    assert filesystem.list_names(remote_dir) == sorted(
        ["manifest.json", *(s["file"] for s in ours["shards"])]
    )

    # Read in Ray workers, by both readers: the seeded file shuffle and the ordered shard sequence.
    assert np.array_equal(rows(read_cache(remote_dir, seed=None)), rows(read_cache(local_dir, seed=None)))
    assert np.array_equal(rows(held_out_dataset(remote)), rows(held_out_dataset(local)))

    generate_caches(remote)  # complete: reused, not generated again
    assert read_manifest(remote_dir)["generation_passes"] == 1


def test_a_damaged_shard_on_s3_is_named(train_config, s3_bucket):
    cfg = train_config("s3damaged", f"activations.cache_dir={s3_bucket}/cache", "activations.n_tokens=4096")
    ((_, directory),) = generate_caches(cfg).items()
    shard = filesystem.join(directory, verify_cache(directory)["shards"][1]["file"])
    data = filesystem.read_bytes(shard)
    filesystem.write_bytes(shard, data[: len(data) // 2])
    with pytest.raises(CacheError, match=f"cache shard {shard}: checksum mismatch"):
        verify_cache(directory)
    filesystem.delete_file(shard)
    with pytest.raises(CacheError, match=f"cache shard {shard}: missing"):
        verify_cache(directory)
