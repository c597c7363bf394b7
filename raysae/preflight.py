"""What a command checks in the driver, once, before Ray Train or Ray Tune starts (and before it
writes anything): the model and its tokenizer, the hook points, every cache it will reuse, every
SAE's width against the activations, the tracking server and the store.

Each check raises `ConfigError` or `CacheError` naming the config path, file or shard, so the
command stops with one line and exit 2 (`raysae.cli.run_main`) instead of a failure in every
worker. Servers get a bounded timeout (`SERVER_TIMEOUT_S`). Relative paths in a config are taken
from the working folder, as everywhere in raysae (`ray_runtime.keep_working_directory`).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from raysae.activations.build import (
    cache_hook_sets,
    complete_cache,
    hook_points,
    planned_caches,
    training_hooks,
)
from raysae.activations.cache import cache_dir, key_inputs
from raysae.activations.disk_budget import check_disk, config_widths, measured_widths
from raysae.activations.language_model import check_hook_points, load_model, tokenizer_for
from raysae.activations.layers import expand_hooks
from raysae.activations.streams import split_cache
from raysae.config import RaysaeConfig, redact
from raysae.config.resolve import store_uri, tracking_credentials, tracking_uri
from raysae.errors import ConfigError
from raysae.models import MULTILAYER_KINDS, width_problems

log = logging.getLogger("raysae.preflight")

SERVER_TIMEOUT_S = 5.0
"""How long the tracking server and the store get to answer before a run is refused."""
MODEL_CHECK_BYTES = 2 << 30
"""A local model up to this size is loaded on the driver's CPU once to check its hook points;
a larger one (or a hub model) is checked against its `config.json` (block index in range)."""


def _looks_local(name: str) -> bool:
    return Path(name).is_absolute() or name.startswith((".", "~")) or Path(name).exists()


def check_model(cfg: RaysaeConfig) -> None:
    """`model.name` and `model.tokenizer`: a local path that is a folder (relative to the working
    folder), else a hub name whose tokenizer loads."""
    m = cfg.model
    for path, value in (("model.name", m.name), ("model.tokenizer", m.tokenizer)):
        if value is None or value == "random" and path == "model.name":
            continue
        where = Path(value).expanduser()
        if _looks_local(value) and not where.is_dir():
            relative = "" if where.is_absolute() else f" (relative to the working folder {Path.cwd()})"
            raise ConfigError([(path, f"{value}: no such local folder{relative}")])
    try:
        tokenizer_for(cfg)
    except ConfigError:
        raise
    except Exception as exc:  # transformers raises OSError, ValueError, HFValidationError, ...
        path = "model.tokenizer" if m.tokenizer else "model.name"
        value = m.tokenizer or m.name
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            [
                (
                    path,
                    f"cannot load a tokenizer from {value!r}: not a local folder (relative paths are "
                    f"taken from the working folder {Path.cwd()}) nor a model on the Hugging Face hub "
                    f"({reason})",
                )
            ]
        ) from None


def _weights_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) + sum(
        f.stat().st_size for f in folder.glob("*.bin")
    )


def hook_paths(cfg: RaysaeConfig) -> dict[str, str]:
    """Each hook the config reads (every layer's, with `model.layers`) -> the dotted path that
    names it, for errors."""
    m = cfg.model
    inputs, targets = expand_hooks(cfg)
    paths = {h: "model.extra_hook_points" for h in m.extra_hook_points}
    if m.hook_point_out is not None:
        paths |= dict.fromkeys(targets or [m.hook_point_out], "model.hook_point_out")
    return paths | dict.fromkeys(inputs, "model.hook_point")


def check_layers(cfg: RaysaeConfig, n_layers: int) -> None:
    """`model.layers` within the model's `n_layers` blocks (0 to n_layers - 1)."""
    layers = cfg.model.layers or []
    beyond = [layer for layer in layers if layer >= n_layers]
    if n_layers and beyond:
        raise ConfigError(
            [("model.layers", f"{beyond} beyond the model's {n_layers} blocks (0 to {n_layers - 1})")]
        )


def check_hooks(cfg: RaysaeConfig) -> int:
    """`model.layers` and every hook point the config reads exist in the model, and the disk
    holds the caches still to build (`disk_budget`); returns the model's `d_model`."""
    hooks = hook_points(cfg)
    m = cfg.model
    paths = hook_paths(cfg)
    if m.name == "random" or (Path(m.name).is_dir() and _weights_bytes(Path(m.name)) <= MODEL_CHECK_BYTES):
        model = load_model(m, device="cpu")
        check_layers(cfg, int(model.cfg.n_layers))
        check_hook_points(model, hooks, paths)
        check_cache_space(cfg, lambda: measured_widths(model, hooks))
        return int(model.cfg.d_model)
    from transformers import AutoConfig

    from raysae.activations.language_model import block_index

    hf = AutoConfig.from_pretrained(m.name)
    n_layers = int(getattr(hf, "num_hidden_layers", getattr(hf, "n_layer", 0)) or 0)
    check_layers(cfg, n_layers)
    for hook in hooks:
        block = block_index(hook)
        if n_layers and block is not None and block >= n_layers:
            raise ConfigError(
                [
                    (
                        paths.get(hook, "model.hook_point"),
                        f"{hook!r}: the model has {n_layers} blocks (0 to {n_layers - 1})",
                    )
                ]
            )
    d_model = int(getattr(hf, "hidden_size", getattr(hf, "n_embd", 0)) or 0)
    check_cache_space(cfg, lambda: config_widths(hf, hooks, d_model))
    return d_model


def check_cache_space(cfg: RaysaeConfig, widths) -> None:
    """The disk of `activations.cache_dir` holds every cache still to build (`disk_budget`);
    `widths` is called (a forward pass) only when one must be built."""
    if cfg.activations.source != "cache":
        return
    plans = planned_caches(cfg)
    if plans:
        check_disk(cfg, plans, widths())


def check_caches(cfg: RaysaeConfig) -> tuple[int | None, bool]:
    """(the training cache's width when it is complete, whether any cache must still be built)."""
    width, build = None, False
    if cfg.activations.source != "cache":
        return None, False
    for layout in cfg.activations.layouts:
        for hooks in cache_hook_sets(cfg, layout):
            manifest = complete_cache(cache_dir(cfg, hooks if len(hooks) > 1 else hooks[0], layout))
            if manifest is None:
                build = True
            elif layout == "tokens" and hooks == training_hooks(cfg):
                width = int(manifest["d_model"])
                split_cache(cfg)  # the held-out shards are finite (activations.finite), or one is named
    return width, build


def check_widths(configs: Sequence[RaysaeConfig], d_in: int) -> None:
    """Every SAE's settings against activations of width `d_in` (e.g. `sae.k` > `d_sae`)."""
    problems = []
    for i, c in enumerate(configs):
        swept = f" (SAE {i} of the sweep)" if len(configs) > 1 else ""
        kind = c.sae.kind
        problems += [(path, f"{msg}{swept}") for path, msg in multilayer_problems(c)]
        if kind not in MULTILAYER_KINDS and kind != "sae" and len(training_hooks(c)) < 2:
            problems.append(
                (
                    "model.hook_point_out",
                    f"sae.kind={kind} needs an output hook different from model.hook_point{swept}",
                )
            )
        problems += [(path, f"{msg}{swept}") for path, msg in width_problems(c.sae, d_in)]
        if c.sae.d_in is not None and c.sae.d_in != d_in:
            problems.append(("sae.d_in", f"is {c.sae.d_in} but the activations have width {d_in}{swept}"))
    if problems:
        raise ConfigError(problems[:1] if len({p for p, _ in problems}) == 1 else problems)


def multilayer_problems(cfg: RaysaeConfig) -> Iterator[tuple[str, str]]:
    """How `sae.kind`, `model.layers`, the output hook and `train.feature_shards` disagree."""
    kind, layers = cfg.sae.kind, cfg.model.layers
    if kind in MULTILAYER_KINDS and layers is None:
        yield "model.layers", f"sae.kind={kind} reads several layers: list them, e.g. [0, 1, 2]"
    if kind not in MULTILAYER_KINDS and layers is not None:
        yield (
            "model.layers",
            f"only multi-layer dictionaries (sae.kind clt or crosscoder) read several layers, not sae.kind={kind}",
        )
    if kind == "clt" and cfg.model.hook_point_out is None:
        yield (
            "model.hook_point_out",
            "a CLT writes every later layer's output hook, e.g. 'blocks.{layer}.hook_mlp_out'",
        )
    if kind == "crosscoder" and cfg.model.hook_point_out is not None:
        yield "model.hook_point_out", "a crosscoder reconstructs the layers it reads: leave it empty"
    if cfg.train.feature_shards > 1:
        # The sharded step (raytrain.feature_shards, SAETrainer) is tested under torch.distributed;
        # the Ray Train worker does not yet build shards, so a run would silently not be sharded.
        yield (
            "train.feature_shards",
            "feature sharding is not yet wired into `raysae train` / `raysae sweep` (every worker would "
            "hold every feature): use 1",
        )


def check_tracking(cfg: RaysaeConfig, timeout: float = SERVER_TIMEOUT_S) -> None:
    """An http(s) MLflow tracking server answers within `timeout` and accepts the credentials."""
    uri = tracking_uri(cfg)
    if urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        return
    name = cfg.tracking.experiment or cfg.name
    url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?" + urllib.parse.urlencode(
        {"experiment_name": name}
    )
    request = urllib.request.Request(url)
    credentials = tracking_credentials(cfg)
    user, password = credentials or (os.environ.get("MLFLOW_TRACKING_USERNAME"), None)
    password = password or os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
        request.add_header("Authorization", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
    path = "tracking.uri" if cfg.tracking.uri else "MLFLOW_TRACKING_URI"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise ConfigError(
                [(path, f"the MLflow server at {redact(uri)} refused the credentials")]
            ) from None
        if exc.code != 404:  # 404: no such experiment yet, which is fine
            raise ConfigError(
                [(path, f"the MLflow server at {redact(uri)} answered HTTP {exc.code} ({exc.reason})")]
            ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            [(path, f"no MLflow tracking server answers at {redact(uri)} within {timeout:g} s ({reason})")]
        ) from None


def check_store(cfg: RaysaeConfig, timeout: float = SERVER_TIMEOUT_S) -> None:
    """A configured MongoDB (`store.uri`, `MONGODB_URI`) answers a ping within `timeout` and accepts
    the credentials; the embedded server needs no check."""
    uri = store_uri(cfg)
    if uri is None:
        return
    import pymongo
    import pymongo.errors

    path = "store.uri" if cfg.store.uri else "MONGODB_URI"
    ms = int(timeout * 1000)
    try:
        with pymongo.MongoClient(
            uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms
        ) as client:
            client.admin.command("ping")
    except pymongo.errors.OperationFailure as exc:
        raise ConfigError(
            [
                (
                    path,
                    f"the MongoDB at {redact(uri)} refused the command ({redact(str(exc.details or exc))[:200]})",
                )
            ]
        ) from None
    except (pymongo.errors.PyMongoError, ValueError) as exc:
        reason = redact(str(exc)).split(", Timeout:")[0].split(" (configured timeouts")[0][:200]
        raise ConfigError(
            [(path, f"no MongoDB answers at {redact(uri)} within {timeout:g} s ({reason})")]
        ) from None


def check_inputs(
    cfg: RaysaeConfig,
    configs: Sequence[RaysaeConfig] = (),
    *,
    tracking: bool = True,
    store: bool = False,
) -> None:
    """All the up-front checks of a command that trains `configs` (default: `cfg` alone), per
    distinct set of activations: caches, model, tokenizer and hook points (loaded only when
    something must be generated or activations are live), widths; then the servers the command
    talks to. Writes nothing."""
    started = time.perf_counter()
    groups: dict[str, list[RaysaeConfig]] = {}
    for c in list(configs) or [cfg]:
        groups.setdefault(json.dumps(key_inputs(c, training_hooks(c), "tokens"), sort_keys=True), []).append(
            c
        )
    for members in groups.values():
        first = members[0]
        width, build = check_caches(first)
        if build or width is None:
            check_model(first)
            width = check_hooks(first)
        else:  # the caches hold every activation; CE-loss evaluation may still load the model
            for path, value in (("model.name", first.model.name), ("model.tokenizer", first.model.tokenizer)):
                if (
                    value
                    and value != "random"
                    and _looks_local(value)
                    and not Path(value).expanduser().is_dir()
                ):
                    raise ConfigError([(path, f"{value}: no such local folder (relative to {Path.cwd()})")])
        check_widths(members, width)
    if tracking:
        check_tracking(cfg)
    if store:
        check_store(cfg)
    log.info("inputs checked in %.1f s", time.perf_counter() - started)


def check_generation(cfg: RaysaeConfig) -> None:
    """`python -m raysae.generate`'s checks: damaged caches, and the model, tokenizer and hook
    points when a cache must be built."""
    _, build = check_caches(cfg)
    if build:
        check_model(cfg)
        check_hooks(cfg)
