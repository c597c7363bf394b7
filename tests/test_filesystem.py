"""raysae.filesystem on a local folder and on S3 (a local moto server): the same operations,
the same all-or-nothing writes."""

import pytest

from raysae import filesystem


@pytest.fixture(params=["local", "s3"])
def folder(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "folder")
    return request.getfixturevalue("s3_bucket") + "/folder"


def test_write_read_list_delete(folder):
    a = filesystem.join(folder, "a.json")
    assert not filesystem.exists(a) and filesystem.stamp(a) is None and filesystem.list_names(folder) == []
    with pytest.raises(FileNotFoundError, match="a.json"):
        filesystem.read_bytes(a)
    filesystem.make_dirs(folder)
    filesystem.write_bytes(a, b"one")
    filesystem.write_bytes(filesystem.join(folder, "b"), b"two")
    filesystem.write_bytes(filesystem.join(folder, "sub", "c"), b"three")  # not directly inside
    assert filesystem.exists(a) and filesystem.read_bytes(a) == b"one" and filesystem.stamp(a)[0] == 3
    with filesystem.open_input(filesystem.join(folder, "b")) as f:
        assert f.read(2) == b"tw" and f.read() == b"o"
    assert filesystem.list_names(folder) == ["a.json", "b"]
    filesystem.write_bytes(a, b"replaced")
    assert filesystem.read_bytes(a) == b"replaced"
    filesystem.delete_file(a)
    filesystem.delete_file(a)  # already gone: no error
    assert filesystem.list_names(folder) == ["b"]


def test_a_failed_write_keeps_the_previous_file(folder):
    target = filesystem.join(folder, "manifest.json")
    filesystem.write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="crash"):
        with filesystem.staged_file(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("crash")
    assert filesystem.read_bytes(target) == b"old" and filesystem.list_names(folder) == ["manifest.json"]


def test_folders_round_trip(folder, tmp_path):
    src = tmp_path / "src"
    (src / "inner").mkdir(parents=True)
    (src / "w.bin").write_bytes(bytes(range(256)) * 1000)
    (src / "inner" / "cfg.json").write_text("{}")
    filesystem.upload_dir(src, filesystem.join(folder, "sae"))
    back = filesystem.download_dir(filesystem.join(folder, "sae"), tmp_path / "back")
    assert (back / "w.bin").read_bytes() == (src / "w.bin").read_bytes()
    assert (back / "inner" / "cfg.json").read_text() == "{}"


def test_join_keeps_scheme_bucket_and_query():
    assert (
        filesystem.join("s3://bucket/runs?region=eu-west-1", "q", "config.yaml")
        == "s3://bucket/runs/q/config.yaml?region=eu-west-1"
    )
    assert filesystem.join("s3://bucket", "cache") == "s3://bucket/cache"
    assert filesystem.join("runs", "q") == "runs/q" and not filesystem.is_remote("runs/q")
    assert filesystem.is_remote("gs://b/x")


def test_s3_paths_resolve_inside_the_bucket(s3_bucket):
    fs, path = filesystem.resolve(filesystem.join(s3_bucket, "cache", "k", "manifest.json"))
    assert fs.type_name == "s3" and path == f"{s3_bucket[5:]}/cache/k/manifest.json"
