"""Text corpora -> fixed-length token contexts, deterministically.

Documents are read through Hugging Face `datasets` (local text/json/jsonl/parquet
files or folders, or a hub dataset name streamed), shuffled with `data.seed`,
tokenised without special tokens, joined with the EOS token between documents,
and cut into contexts of `context_size` tokens, each starting with BOS when
`prepend_bos` is set. Contexts are packed, so there is no padding.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from raysae.config import DataConfig
from raysae.errors import ConfigError

log = logging.getLogger("raysae.tokens")
BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def _local_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(f for f in path.rglob("*") if f.is_file() and f.suffix in BUILDERS)


def iter_documents(cfg: DataConfig) -> Iterator[str]:
    """The corpus's documents in a seeded random order."""
    import datasets

    path = cfg.path
    if path is None:
        raise ConfigError([("data.path", "no corpus given: set a local file or folder, or a hub dataset")])
    ds: Any  # a Dataset or, streamed from the hub, an IterableDataset: rows are mappings either way
    local = Path(path)
    if local.exists():
        files = _local_files(local)
        builders = {BUILDERS.get(f.suffix) for f in files}
        if not files or None in builders or len(builders) != 1:
            raise ConfigError(
                [("data.path", f"{cfg.path}: expected .txt, .json(l) or .parquet files of one kind")]
            )
        builder = BUILDERS[files[0].suffix]  # the one kind they all are
        files_arg = [str(f) for f in files]
        if builder == "text":  # one document per file, not one per line
            ds = datasets.load_dataset(builder, data_files=files_arg, split="train", sample_by="document")
        else:
            ds = datasets.load_dataset(builder, data_files=files_arg, split="train")
        ds = ds.shuffle(seed=cfg.seed)
    else:
        try:
            ds = datasets.load_dataset(path, split=cfg.split, streaming=True)
        except Exception as exc:  # the hub client raises many types; all mean "cannot open"
            raise ConfigError([("data.path", f"cannot open dataset {cfg.path!r}: {exc}")]) from None
        ds = ds.shuffle(seed=cfg.seed, buffer_size=10_000)
    column = "text" if local.exists() and local.suffix == ".txt" else cfg.text_column
    names = ds.column_names or []
    if names and column not in names:
        raise ConfigError(
            [("data.text_column", f"{column!r} is not a column of {cfg.path} (columns: {names})")]
        )
    for row in ds:
        yield row[column]


def rows_per_context(cfg: DataConfig) -> int:
    """Training rows one context gives (its BOS position is left out when excluded)."""
    return cfg.context_size - (1 if cfg.prepend_bos and cfg.exclude_bos else 0)


def contexts_for_tokens(cfg: DataConfig, n_tokens: int) -> int:
    return math.ceil(n_tokens / rows_per_context(cfg))


def pack_contexts(cfg: DataConfig, tokenizer, n_contexts: int) -> np.ndarray:
    """[n_contexts, context_size] int32 token ids, the same for the same config and corpus."""
    bos = tokenizer.bos_token_id
    if cfg.prepend_bos and bos is None:
        raise ConfigError([("data.prepend_bos", "the tokenizer has no BOS token")])
    sep = tokenizer.eos_token_id
    body = cfg.context_size - (1 if cfg.prepend_bos else 0)
    out = np.empty((n_contexts, cfg.context_size), dtype=np.int32)
    filled = 0
    pending = np.empty(0, dtype=np.int32)
    docs = iter_documents(cfg)
    while filled < n_contexts:
        batch = [d for _, d in zip(range(16), docs, strict=False) if d]
        if not batch:
            raise ValueError(
                f"data.path {cfg.path}: the corpus gives only {filled} contexts of "
                f"{cfg.context_size} tokens; {n_contexts} are needed"
            )
        ids = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        parts = [pending] + [np.asarray(d + ([sep] if sep is not None else []), dtype=np.int32) for d in ids]
        pending = np.concatenate(parts)
        n = min(len(pending) // body, n_contexts - filled)
        chunk = pending[: n * body].reshape(n, body)
        if cfg.prepend_bos:
            out[filled : filled + n, 0] = bos
            out[filled : filled + n, 1:] = chunk
        else:
            out[filled : filled + n] = chunk
        pending = pending[n * body :]
        filled += n
    log.info("packed %d contexts of %d tokens from %s", n_contexts, cfg.context_size, cfg.path)
    return out
