"""Folders that are local paths or object-store URIs (`s3://bucket/prefix`, `gs://…`, `hdfs://…`).

The few file operations raysae needs on a shared folder (activation caches, run
directories), over
pyarrow's filesystems — the same ones Ray Data and Ray Train use for URIs, with
credentials and endpoints from the usual environment (`AWS_ACCESS_KEY_ID`,
`AWS_ENDPOINT_URL`, an instance role, …). A local path keeps plain local file
operations. Writes are all-or-nothing either way: locally a temporary file is
renamed over the target; on an object store one upload replaces the object, and
readers see the old object or the new one.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
"""A URI's scheme (group 1)."""

REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
"""Object-store URI schemes a shared folder may use (pyarrow has a filesystem for each)."""

Location = str | os.PathLike
"""A file or folder: a local path, or a URI of one of `REMOTE_SCHEMES`."""


def is_remote(location: Location) -> bool:
    return URI.match(str(location)) is not None


def join(location: Location, *names: str) -> str:
    """`location/name/...`; a URI keeps its scheme, bucket and query (`?region=…`)."""
    if not is_remote(location):
        return str(Path(location, *names))
    parts = urlsplit(str(location))
    return urlunsplit(parts._replace(path=posixpath.join(parts.path or "/", *names)))


@lru_cache(maxsize=32)
def _root_filesystem(root: str):
    """One filesystem per scheme, bucket/host and query: creating an S3 filesystem may ask AWS
    for the bucket's region, which should happen once, not once per file."""
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(root)


def resolve(location: Location):
    """(pyarrow filesystem, path inside it) for a URI; a local path gets the local filesystem."""
    import pyarrow.fs as pafs

    if not is_remote(location):
        return pafs.LocalFileSystem(), os.path.abspath(location)
    parts = urlsplit(str(location))
    fs, root = _root_filesystem(urlunsplit(parts._replace(path="/")))
    # S3/GCS paths start with the bucket ("bucket/key"); HDFS paths are absolute ("/key").
    root = root.rstrip("/") or ("/" if root.startswith("/") else "")
    return fs, posixpath.join(root, parts.path.lstrip("/")).rstrip("/")


def _info(location: Location):
    fs, path = resolve(location)
    return fs.get_file_info(path)


def exists(location: Location) -> bool:
    if not is_remote(location):
        return Path(location).exists()
    import pyarrow.fs as pafs

    return _info(location).type != pafs.FileType.NotFound


def stamp(location: Location) -> tuple[int, int] | None:
    """(size, modification time in ns) of a file, None when it is missing."""
    if not is_remote(location):
        try:
            st = os.stat(location)
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime_ns
    import pyarrow.fs as pafs

    info = _info(location)
    if info.type == pafs.FileType.NotFound:
        return None
    return info.size, info.mtime_ns or 0


def read_bytes(location: Location) -> bytes:
    """The file's content; `FileNotFoundError` naming it when it is missing."""
    if not is_remote(location):
        return Path(location).read_bytes()
    fs, path = resolve(location)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:  # pyarrow's names the path inside the bucket
        raise FileNotFoundError(f"{location}: no such file") from None


@contextmanager
def open_input(location: Location) -> Iterator:
    """A binary stream to read the file from (`read(n)`)."""
    if not is_remote(location):
        with open(location, "rb") as f:
            yield f
        return
    fs, path = resolve(location)
    with fs.open_input_stream(path) as f:
        yield f


def write_bytes(location: Location, data: bytes) -> None:
    """All or nothing: a crash leaves the previous file (or none), never part of this one."""
    with staged_file(location) as tmp:
        Path(tmp).write_bytes(data)


@contextmanager
def staged_file(location: Location) -> Iterator[Path]:
    """A local path to write the file at; on success it replaces `location` in one step.

    Locally the temporary file sits beside the target (`<name>.tmp`, renamed over
    it); for a URI it is in the temporary folder and uploaded, then removed.
    """
    if not is_remote(location):
        target = Path(location)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        try:
            yield tmp
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return
    folder = Path(tempfile.mkdtemp(prefix="raysae-upload-"))
    try:
        tmp = folder / posixpath.basename(urlsplit(str(location)).path)
        yield tmp
        fs, path = resolve(location)
        with open(tmp, "rb") as src, fs.open_output_stream(path) as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fresh_sibling_dir(path: Path) -> Path:
    """An empty hidden folder beside the local folder `path`, named for this process, where a
    replacement of `path` is written before `replace_dir` swaps it in (a leftover from an
    interrupted write is removed first)."""
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(new: Path, target: Path) -> None:
    """Put the local folder `new` in the place of `target` (which need not exist): renames only,
    so a reader sees the old folder or the new one, never a half-written one."""
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def make_dirs(location: Location) -> None:
    """Create a folder (a no-op on object stores, where folders are key prefixes)."""
    if not is_remote(location):
        Path(location).mkdir(parents=True, exist_ok=True)
        return
    fs, path = resolve(location)
    fs.create_dir(path, recursive=True)


def list_names(location: Location) -> list[str]:
    """Names of the files directly inside a folder (none when it does not exist)."""
    if not is_remote(location):
        folder = Path(location)
        return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    import pyarrow.fs as pafs

    fs, path = resolve(location)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.File)


def delete_file(location: Location) -> None:
    if not is_remote(location):
        Path(location).unlink(missing_ok=True)
        return
    fs, path = resolve(location)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def upload_dir(local: os.PathLike, location: Location) -> None:
    """Copy the files of a local folder (recursively) to `location`, replacing same-named ones."""
    if not is_remote(location):
        shutil.copytree(local, location, dirs_exist_ok=True)
        return
    import pyarrow.fs as pafs

    fs, path = resolve(location)
    pafs.copy_files(
        os.path.abspath(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
    )


def download_dir(location: Location, local: os.PathLike) -> Path:
    """Copy the files under `location` (recursively) into the local folder `local`; returns it."""
    if not exists(location):
        raise FileNotFoundError(f"{location}: no such folder")
    if not is_remote(location):
        shutil.copytree(location, local, dirs_exist_ok=True)
        return Path(local)
    import pyarrow.fs as pafs

    fs, path = resolve(location)
    Path(local).mkdir(parents=True, exist_ok=True)
    pafs.copy_files(
        path, os.path.abspath(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem()
    )
    return Path(local)


@contextmanager
def local_copy(location: Location) -> Iterator[Path]:
    """A local folder holding the files under `location`: the folder itself when it is local,
    else a temporary download, removed afterwards."""
    if not is_remote(location):
        yield Path(location)
        return
    folder = Path(tempfile.mkdtemp(prefix="raysae-download-"))
    try:
        yield download_dir(location, folder / "copy")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def staged_dir(location: Location) -> Iterator[Path]:
    """A local folder to write `location`'s files in: the folder itself when it is local, else
    a temporary folder uploaded when the block succeeds (nothing is uploaded if it fails)."""
    if not is_remote(location):
        yield Path(location)
        return
    folder = Path(tempfile.mkdtemp(prefix="raysae-upload-"))
    try:
        yield folder / "staged"
        upload_dir(folder / "staged", location)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def parent(location: Location, levels: int = 1) -> str:
    """The folder `levels` up from `location` (a local path made absolute first)."""
    if not is_remote(location):
        return str(Path(location).resolve().parents[levels - 1])
    parts = urlsplit(str(location))
    path = parts.path.rstrip("/")
    for _ in range(levels):
        path = posixpath.dirname(path)
    return urlunsplit(parts._replace(path=path))


def parts(location: Location) -> tuple[str, ...]:
    """The names along `location`'s path (a local path made absolute first)."""
    if not is_remote(location):
        return Path(location).resolve().parts
    return tuple(p for p in urlsplit(str(location)).path.split("/") if p)


def absolute(location: Location) -> str:
    """A local path made absolute; a URI as it is."""
    return str(location) if is_remote(location) else str(Path(location).resolve())
