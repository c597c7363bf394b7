"""Activation caches on disk (docs/architecture.md, "Activation cache"): key, manifest, verification, reading.

`<cache_dir>/<key>/manifest.json` + `shard-NNNNN.parquet` files, in a local
folder or under an object-store URI (`raysae.filesystem`). Shards are
Parquet with Ray's tensor extension columns, so Ray Data reads them straight
into `[rows, d_model]` batches:

- layout `tokens` (1d, training): `acts` [d_model] per row, shuffled across
  contexts at write time;
- layout `contexts` (2d, analysis): `context_id`, `tokens` [seq], `acts` [seq, d_model];
- a paired `tokens` cache adds `acts_1` (the target hook); a multi-layer one (`model.layers`;
  module `layers`) stacks every layer: `acts` [L, d_in], `acts_1` [L, d_out];
- `activations.dtype: int8` stores each activation column as int8 beside `<column>_scale`
  (`activations.int8`); the reader gives float32 back.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from raysae import filesystem
from raysae.activations.int8 import SCALE_SUFFIX, dequantise_table
from raysae.activations.layers import column_name as column_name  # re-exported: caches name their columns
from raysae.activations.layers import is_stacked, manifest_hook_entries
from raysae.activations.tokens import rows_per_context
from raysae.config import RaysaeConfig
from raysae.config.activations import LAYER_FIELD
from raysae.errors import CacheError

if TYPE_CHECKING:
    import pyarrow as pa

MANIFEST = "manifest.json"
CACHE_VERSION = 1


def _local_path(path: str | None) -> str | None:
    """A local file or folder by what it points to (absolute, `.`/`..` and a trailing `/` gone,
    relative to the working folder as every config path is); anything else (a hub name) as given."""
    if path is None or not Path(path).exists():
        return path
    return str(Path(path).resolve())


_CONTENT_HASHES: dict[tuple[str, int, int], str] = {}
"""sha256 of the local files this process has hashed, by (path, size, mtime)."""


def _content_sha256(path: Path) -> str:
    st = path.stat()
    stamp = (str(path), st.st_size, st.st_mtime_ns)
    if stamp not in _CONTENT_HASHES:
        _CONTENT_HASHES[stamp] = file_sha256(path)
    return _CONTENT_HASHES[stamp]


def content_fingerprint(path: str | None) -> str | None:
    """sha256 over the names and contents of a local file or folder's files, so data edited in
    place gives a new cache key; None when `path` is not local (a hub name). Contents, not
    modification times: a node that got the same files by copying (`ray job submit
    --working-dir`) computes the same key. Hashed once per process while a file's size and
    modification time stay the same."""
    if path is None or not Path(path).exists():
        return None
    root = Path(path).resolve()
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(root) if f != root else f.name}\0{_content_sha256(f)}\0".encode())
    return h.hexdigest()


def _model_identity(cfg: RaysaeConfig) -> dict[str, Any]:
    """What identifies the model's weights: its name, plus config/size for local dirs."""
    m = cfg.model
    ident: dict[str, Any] = {
        "name": m.name if m.name == "random" else _local_path(m.name),
        "dtype": m.dtype,
        "tokenizer": _local_path(m.tokenizer),
        "tokenizer_content": content_fingerprint(m.tokenizer),
    }
    if m.name == "random":
        ident["random"] = m.random.model_dump()
    elif Path(m.name).is_dir():
        d = Path(m.name)
        config = d / "config.json"
        ident["config_sha256"] = hashlib.sha256(config.read_bytes()).hexdigest() if config.exists() else None
        ident["weights"] = sorted((p.name, p.stat().st_size) for p in d.glob("*.safetensors"))
    return ident


Hooks = str | list[str]
"""One hook point, or the ordered hooks of a paired cache (input first)."""


def hook_list(hooks: Hooks) -> list[str]:
    return [hooks] if isinstance(hooks, str) else list(hooks)


def key_inputs(cfg: RaysaeConfig, hook_point: Hooks, layout: str) -> dict[str, Any]:
    """Everything that changes the cached activations. A 1-hook cache's inputs are exactly what
    they always were (existing caches keep their keys); a paired one adds the ordered `hooks`, a
    multi-layer one (`model.layers`, rows stacked [L, d]) the `layers` too."""
    d, a = cfg.data, cfg.activations
    hooks = hook_list(hook_point)
    extra: dict[str, Any] = {"hooks": hooks} if len(hooks) > 1 else {}
    if is_stacked(cfg, hooks, layout):
        extra |= {"hooks": hooks, "layers": cfg.model.layers}
    return extra | {
        "version": CACHE_VERSION,
        "model": _model_identity(cfg),
        "hook_point": hooks[0],
        "data": {
            "path": _local_path(d.path),
            "content": content_fingerprint(d.path),
            "split": d.split,
            "text_column": d.text_column,
            "seed": d.seed,
        },
        "context_size": d.context_size,
        "prepend_bos": d.prepend_bos,
        "exclude_bos": d.exclude_bos if layout == "tokens" else None,
        "budget": a.n_tokens if layout == "tokens" else a.n_contexts,
        "dtype": a.dtype,
        "layout": layout,
        "shuffle": [a.seed, a.shard_rows, a.shuffle_buffer_shards] if layout == "tokens" else None,
    }


def cache_key(cfg: RaysaeConfig, hook_point: Hooks, layout: str) -> str:
    """`<model>-<hook>-<layout>-<hash>`: readable, and different whenever the activations are."""
    digest = hashlib.sha256(json.dumps(key_inputs(cfg, hook_point, layout), sort_keys=True).encode())
    model = re.sub(r"[^A-Za-z0-9]+", "-", Path(cfg.model.name).name).strip("-").lower() or "model"
    names = hook_list(hook_point)
    layers = cfg.model.layers
    if layers is not None and is_stacked(cfg, names, layout):  # the templates, not every layer's name
        m = cfg.model
        names = [
            t.replace(LAYER_FIELD, "L") for t in dict.fromkeys([m.hook_point, m.hook_point_out or ""]) if t
        ]
        names.append(f"layers-{layers[0]}-{layers[-1]}-n{len(layers)}")
    hook = "--".join(re.sub(r"[^A-Za-z0-9]+", "-", h).strip("-") for h in names)
    return f"{model}-{hook}-{layout}-{digest.hexdigest()[:16]}"


def cache_dir(cfg: RaysaeConfig, hook_point: Hooks, layout: str) -> str:
    """The cache's folder: a path, or a URI when `activations.cache_dir` is one."""
    return filesystem.join(cfg.activations.cache_dir, cache_key(cfg, hook_point, layout))


def new_manifest(cfg: RaysaeConfig, hook_point: Hooks, layout: str) -> dict[str, Any]:
    d = cfg.data
    hooks = hook_list(hook_point)
    if len(hooks) > 1 and layout != "tokens":
        raise CacheError(f"a {layout} cache holds one hook, not {hooks}")
    return {
        "version": CACHE_VERSION,
        "key": cache_key(cfg, hook_point, layout),
        "model": cfg.model.name,
        "hook_point": hooks[0],
        "d_model": None,
        "hooks": manifest_hook_entries(cfg, hooks, layout),
        "layers": cfg.model.layers if is_stacked(cfg, hooks, layout) else None,
        "dtype": cfg.activations.dtype,
        "layout": layout,
        "n_tokens": 0,
        "context_size": d.context_size,
        "prepend_bos": d.prepend_bos,
        "rows_per_context": rows_per_context(d) if layout == "tokens" else d.context_size,
        "dataset_path": d.path,
        "shards": [],
        "contexts_done": 0,
        "generation_passes": 0,
        "complete": False,
        "key_inputs": key_inputs(cfg, hook_point, layout),
    }


def manifest_hooks(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The cache's hooks (`name`, `d`, `column`), input first; a manifest written before paired
    caches existed has one, `hook_point` in column `acts`."""
    return manifest.get("hooks") or [
        {"name": manifest["hook_point"], "d": manifest["d_model"], "column": "acts"}
    ]


def read_manifest(directory: filesystem.Location) -> dict[str, Any] | None:
    path = filesystem.join(directory, MANIFEST)
    try:
        return json.loads(filesystem.read_bytes(path))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise CacheError(f"{path}: not valid JSON ({exc})") from None


def write_manifest(directory: filesystem.Location, manifest: dict[str, Any]) -> None:
    """Atomic: a crash leaves the previous manifest, never half of one."""
    filesystem.write_bytes(filesystem.join(directory, MANIFEST), json.dumps(manifest, indent=1).encode())


def file_sha256(path: filesystem.Location) -> str:
    h = hashlib.sha256()
    with filesystem.open_input(path) as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


_VERIFIED: dict[str, tuple] = {}
"""Caches whose checksums this process has checked, with the file stamps they had then."""


def _stamps(directory: filesystem.Location, manifest: dict[str, Any]) -> tuple:
    files = [MANIFEST] + [s["file"] for s in manifest["shards"]]
    return tuple(filesystem.stamp(filesystem.join(directory, f)) for f in files)


def verify_cache(directory: filesystem.Location, *, checksums: bool = True) -> dict[str, Any]:
    """The manifest of a complete cache whose shards are all present and intact.

    Each shard's row count is read from its Parquet metadata; with `checksums`
    its sha256 is compared too (once per process while no file's size or
    modification time changes). Any mismatch raises `CacheError` naming the shard.
    """
    import pyarrow.parquet as pq

    manifest = read_manifest(directory)
    if manifest is None:
        raise CacheError(f"{filesystem.join(directory, MANIFEST)}: missing; not an activation cache")
    if not manifest["complete"]:
        raise CacheError(f"{directory}: cache is incomplete; rerun `python -m raysae.generate` to finish it")
    stamps = _stamps(directory, manifest)
    if _VERIFIED.get(filesystem.absolute(directory)) == stamps:
        return manifest
    for shard, found in zip(manifest["shards"], stamps[1:], strict=True):
        path = filesystem.join(directory, shard["file"])
        if found is None:
            raise CacheError(f"cache shard {path}: missing")
        if checksums and file_sha256(path) != shard["sha256"]:
            raise CacheError(f"cache shard {path}: checksum mismatch (corrupted or truncated)")
        try:
            fs, inner = filesystem.resolve(path)
            meta = pq.read_metadata(inner, filesystem=fs)
        except Exception as exc:
            raise CacheError(f"cache shard {path}: unreadable ({exc})") from None
        if meta.num_rows != shard["rows"]:
            raise CacheError(f"cache shard {path}: {meta.num_rows} rows, manifest says {shard['rows']}")
    if checksums:
        _VERIFIED[filesystem.absolute(directory)] = stamps
    return manifest


def shard_paths(directory: filesystem.Location, shards: list[dict[str, Any]]) -> list[str]:
    """The files of these manifest entries (`{"file", "rows", "sha256"}`)."""
    return [filesystem.join(directory, s["file"]) for s in shards]


def shard_sequence(shards: list[dict[str, Any]], seed: int, rows: int) -> list[dict[str, Any]]:
    """Shards in a fresh seeded order per epoch, as many epochs as `rows` needs."""
    out, total, epoch = [], 0, 0
    while total < rows:
        for i in np.random.default_rng([seed, epoch]).permutation(len(shards)):
            out.append(shards[i])
            total += shards[i]["rows"]
            if total >= rows:
                break
        epoch += 1
    return out


def is_activation_column(name: str) -> bool:
    """`acts`, `acts_1`, ...: the columns int8 storage quantises (not `context_id`, `tokens`)."""
    return name == "acts" or re.fullmatch(r"acts_\d+", name) is not None


def _read_shard(batch: dict[str, np.ndarray]) -> pa.Table:
    import pyarrow.parquet as pq
    import ray.data.extensions  # noqa: F401  (Ray's tensor types: each column's row shape)

    fs, path = filesystem.resolve(str(batch["path"][0]))
    columns = list(batch["columns"][0]) or None
    if columns is not None and bool(batch["int8"][0]):  # the scales travel with their column
        columns += [f"{c}{SCALE_SUFFIX}" for c in columns if is_activation_column(c)]
    table = pq.read_table(path, columns=columns, filesystem=fs)
    return dequantise_table(table.slice(int(batch["skip"][0])))


def read_shards(
    directory: filesystem.Location,
    shards: list[dict[str, Any]],
    *,
    columns: list[str] | None = None,
    skip_rows: int = 0,
):
    """A Ray Dataset reading exactly these shards (manifest entries) in this order, one block each.

    The one way raysae reads a cache. A shard may appear more than once (several
    epochs in one stream) and the order is kept; without the first shard's first
    `skip_rows` rows, so a training stream can restart at any row.
    Verify the cache first (`verify_cache`).
    """
    import ray

    if not shards:
        raise CacheError(f"{directory}: no cache shards to read")
    int8 = (read_manifest(directory) or {}).get("dtype") == "int8"
    items = [
        {"path": p, "columns": columns or [], "skip": skip_rows if i == 0 else 0, "int8": int8}
        for i, p in enumerate(shard_paths(directory, shards))
    ]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds.context.execution_options.preserve_order = True
    # Ray types `fn` as taking any batch format; with batch_format="numpy" it gets a dict of arrays.
    return ds.map_batches(_read_shard, batch_size=1, batch_format="numpy")  # pyright: ignore[reportArgumentType]


def read_cache(
    directory: filesystem.Location,
    *,
    seed: int | None = 0,
    columns: list[str] | None = None,
    shards: slice = slice(None),
):
    """A streaming Ray Dataset over a verified cache (optionally a slice of its shards), once.

    With a `seed`, the shards are read in a seeded order (`shard_sequence`'s first
    epoch, the order training uses); `seed=None` keeps the written order.
    """
    entries = verify_cache(directory)["shards"][shards]
    if not entries:
        raise CacheError(f"{directory}: no shards in {shards} of the cache")
    if seed is not None:
        entries = shard_sequence(entries, seed, sum(s["rows"] for s in entries))
    return read_shards(directory, entries, columns=columns)
