"""cache_dir / output_dir given as file:// URIs mean the same folders as paths; object-store
URIs are kept as they are; anything else is refused by name before any work."""

import pytest

from raysae.activations import generate_caches
from raysae.activations.cache import cache_dir, read_manifest
from raysae.config import ConfigError, load_config
from raysae.run_dir import RunDir


@pytest.mark.parametrize(
    "uri,path",
    [
        ("file:///mnt/shared/runs", "/mnt/shared/runs"),
        ("file://localhost/mnt/shared/runs", "/mnt/shared/runs"),
        ("file:///tmp/with%20space", "/tmp/with space"),
        ("local:///data/cache", "/data/cache"),
        ("runs", "runs"),
        ("/abs/runs", "/abs/runs"),
    ],
)
def test_local_uris_become_paths(uri, path):
    cfg = load_config(None, [f"output_dir={uri}", f"activations.cache_dir={uri}"])
    assert cfg.output_dir == path and cfg.activations.cache_dir == path


@pytest.mark.parametrize(
    "uri",
    ["s3://bucket/raysae", "gs://bucket/x/y", "s3://bucket/p?region=eu-west-1", "abfs://container/cache"],
)
def test_object_store_uris_are_kept(uri):
    cfg = load_config(None, [f"output_dir={uri}", f"activations.cache_dir={uri}"])
    assert cfg.output_dir == cfg.activations.cache_dir == uri


@pytest.mark.parametrize(
    "value,says",
    [
        ("file://otherhost/x", "not host 'otherhost'"),
        ("file://./relative", "not host '.'"),
        ("ftp://host/x", "ftp:// is not a storage scheme raysae can use"),
        ("s3:///no-bucket", "needs a bucket or host"),
    ],
)
def test_other_uris_fail_naming_the_field(value, says):
    for field in ("output_dir", "activations.cache_dir"):
        with pytest.raises(ConfigError) as err:
            load_config(None, [f"{field}={value}"])
        assert str(err.value).startswith(f"{field}: ") and says in str(err.value)


def test_a_file_uri_finds_the_cache_and_run_directory_a_path_made(train_config):
    by_path = train_config("uri")
    by_uri = train_config(
        "uri",
        f"activations.cache_dir=file://{by_path.activations.cache_dir}",
        f"output_dir=file://{by_path.output_dir}",
    )
    hook = by_path.model.hook_point
    assert cache_dir(by_uri, hook, "tokens") == cache_dir(by_path, hook, "tokens")
    before = read_manifest(cache_dir(by_path, hook, "tokens"))
    generate_caches(by_uri)  # complete already: reused, not generated again
    assert read_manifest(cache_dir(by_uri, hook, "tokens")) == before and before["generation_passes"] == 1
    assert RunDir.of(by_uri).root == RunDir.of(by_path).root
