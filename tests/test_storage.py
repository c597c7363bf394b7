"""raysae.storage on a local folder and on S3 (a local moto server): the same operations,
the same all-or-nothing writes."""

import pytest

from raysae import storage


@pytest.fixture(params=["local", "s3"])
def folder(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "folder")
    return request.getfixturevalue("s3_bucket") + "/folder"


def test_write_read_list_delete(folder):
    a = storage.join(folder, "a.json")
    assert not storage.exists(a) and storage.stamp(a) is None and storage.list_names(folder) == []
    with pytest.raises(FileNotFoundError, match="a.json"):
        storage.read_bytes(a)
    storage.make_dirs(folder)
    storage.write_bytes(a, b"one")
    storage.write_bytes(storage.join(folder, "b"), b"two")
    storage.write_bytes(storage.join(folder, "sub", "c"), b"three")  # not directly inside
    assert storage.exists(a) and storage.read_bytes(a) == b"one" and storage.stamp(a)[0] == 3
    with storage.open_input(storage.join(folder, "b")) as f:
        assert f.read(2) == b"tw" and f.read() == b"o"
    assert storage.list_names(folder) == ["a.json", "b"]
    storage.write_bytes(a, b"replaced")
    assert storage.read_bytes(a) == b"replaced"
    storage.delete_file(a)
    storage.delete_file(a)  # already gone: no error
    assert storage.list_names(folder) == ["b"]


def test_a_failed_write_keeps_the_previous_file(folder):
    target = storage.join(folder, "manifest.json")
    storage.write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="crash"):
        with storage.staged_file(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("crash")
    assert storage.read_bytes(target) == b"old" and storage.list_names(folder) == ["manifest.json"]


def test_folders_round_trip(folder, tmp_path):
    src = tmp_path / "src"
    (src / "inner").mkdir(parents=True)
    (src / "w.bin").write_bytes(bytes(range(256)) * 1000)
    (src / "inner" / "cfg.json").write_text("{}")
    storage.upload_dir(src, storage.join(folder, "sae"))
    back = storage.download_dir(storage.join(folder, "sae"), tmp_path / "back")
    assert (back / "w.bin").read_bytes() == (src / "w.bin").read_bytes()
    assert (back / "inner" / "cfg.json").read_text() == "{}"


def test_join_keeps_scheme_bucket_and_query():
    assert (
        storage.join("s3://bucket/runs?region=eu-west-1", "q", "config.yaml")
        == "s3://bucket/runs/q/config.yaml?region=eu-west-1"
    )
    assert storage.join("s3://bucket", "cache") == "s3://bucket/cache"
    assert storage.join("runs", "q") == "runs/q" and not storage.is_remote("runs/q")
    assert storage.is_remote("gs://b/x")


def test_s3_paths_resolve_inside_the_bucket(s3_bucket):
    fs, path = storage.resolve(storage.join(s3_bucket, "cache", "k", "manifest.json"))
    assert fs.type_name == "s3" and path == f"{s3_bucket[5:]}/cache/k/manifest.json"
