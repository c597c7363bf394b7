"""Driver side of a training run: one Ray Train `TorchTrainer` for one population of SAEs.

`run_training` is what `python -m raysae.train` and each sweep trial call. Ray
Train keeps its checkpoints under `<storage>/<trial>/`; our own small files
(stream position, MLflow run ids, the fingerprint of the config) sit in
`<storage>/<trial>/raysae/`. Calling it again with the same storage and trial
resumes from the latest checkpoint, after checking the config still matches.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Sequence
from typing import Any

from raysae import storage as storage_lib
from raysae.activations.cache import key_inputs, read_manifest
from raysae.config import (
    ConfigError,
    RaysaeConfig,
    flatten_dotted,
    member_path_problem,
    sae_problems,
)
from raysae.distributed.data import TrainingStream, held_out_dataset, split_cache
from raysae.distributed.worker import CONFIG_ERROR_FILE, TrainJob, train_loop_per_worker
from raysae.ray_runtime import keep_working_directory

OPERATIONAL_TRAIN_FIELDS = frozenset(
    {
        "num_workers",
        "use_gpu",
        "cpus_per_worker",
        "max_failures",
        "device",
        "log_every_steps",
        "checkpoint_every_tokens",
        "checkpoints_to_keep",
        "eval_every_tokens",
        "ce_contexts",
        "population",
    }
)
"""`train.*` fields a resumed run may change: they do not change what is learned."""


def check_population(members: Sequence[RaysaeConfig]) -> None:
    """Members may differ only in what each SAE owns; everything deciding the batches is shared."""
    base = flatten_dotted(members[0].model_dump(mode="json"))
    problems = []
    for i, member in enumerate(members[1:], start=1):
        flat = flatten_dotted(member.model_dump(mode="json"))
        for path in sorted(set(base) | set(flat)):
            if path != "train.population" and base.get(path) != flat.get(path) and member_path_problem(path):
                problems.append(
                    (
                        path,
                        f"SAE {i} of the population has {flat.get(path)!r}, SAE 0 has "
                        f"{base.get(path)!r}; only per-SAE settings may differ",
                    )
                )
    if problems:
        raise ConfigError(problems)


def fingerprint(members: Sequence[RaysaeConfig]) -> list[dict[str, Any]]:
    """What a checkpoint's training depends on: SAE and schedule settings, and the activations."""
    out = []
    for m in members:
        train = {
            k: v for k, v in m.train.model_dump(mode="json").items() if k not in OPERATIONAL_TRAIN_FIELDS
        }
        out.append(
            {
                "sae": m.sae.model_dump(mode="json"),
                "train": train,
                "activations": key_inputs(m, m.model.hook_point, "tokens"),
                "source": m.activations.source,
            }
        )
    return out


def _check_resume(state_dir: str, members: Sequence[RaysaeConfig]) -> None:
    path = storage_lib.join(state_dir, "fingerprint.json")
    current = json.loads(json.dumps(fingerprint(members)))
    if storage_lib.exists(path):
        before = json.loads(storage_lib.read_bytes(path))
        if before != current:
            a = flatten_dotted({f"sae {i}": m for i, m in enumerate(before)})
            b = flatten_dotted({f"sae {i}": m for i, m in enumerate(current)})
            changed = sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))
            raise ConfigError(
                [
                    (
                        "",
                        (
                            f"{storage_lib.parent(state_dir)} holds checkpoints of a run with other settings "
                            f"({', '.join(changed[:5])}); rerun with another `name` to start a new "
                            "run, or delete that folder to start this one over"
                        ),
                    )
                ]
            )
        return
    storage_lib.write_bytes(path, json.dumps(current, indent=1).encode())


def run_training(
    members: Sequence[RaysaeConfig],
    sae_ids: Sequence[str],
    *,
    storage: storage_lib.Location,
    trial: str,
    on_step: Callable[[int, int], None] | None = None,
    callbacks: Sequence[Any] = (),
    parent_run_id: str | None = None,
    ranked: bool = False,
) -> list[dict[str, Any]]:
    """Train a population (K >= 1) with Ray Train; returns one results row per SAE.

    SAEs are written to `saes/<sae_id>/` of the run directory. A row with an
    `error` is an SAE whose loss turned non-finite: it was not saved.
    `callbacks` are Ray Train callbacks (a sweep passes Tune's `TuneReportCallback`),
    `ranked` evaluates at every report for them, `parent_run_id` nests the MLflow runs.
    """
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    members = list(members)
    if len(sae_ids) != len(members):
        raise ValueError(f"{len(members)} SAEs but {len(sae_ids)} ids")
    check_population(members)
    base = members[0]
    t = base.train
    if t.batch_size % t.num_workers:
        raise ConfigError(
            [
                (
                    "train.batch_size",
                    f"{t.batch_size} rows do not split evenly over train.num_workers={t.num_workers}",
                )
            ]
        )
    storage_path = storage_lib.absolute(storage)
    state_dir = storage_lib.join(storage_path, trial, "raysae")
    _check_resume(state_dir, members)
    d_in = None
    if base.activations.source == "cache":
        d_in = read_manifest(split_cache(base).directory)["d_model"]  # verifies the cache
        problems = [p for m in members for p in sae_problems(m.sae, d_in)]
        if problems:
            raise ConfigError(problems)
    keep_working_directory()
    resources = {"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {}), **t.worker_resources}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "job": TrainJob(members, list(sae_ids), state_dir, d_in, on_step, parent_run_id, ranked)
        },
        scaling_config=ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=trial,
            storage_path=storage_path,
            callbacks=list(callbacks),
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=t.checkpoints_to_keep),
        ),
        datasets={"train": TrainingStream(base, state_dir), "eval": held_out_dataset(base)},
        dataset_config=DataConfig(
            datasets_to_split=["train"], execution_options=ExecutionOptions(preserve_order=True)
        ),
    )
    config_error = storage_lib.join(state_dir, CONFIG_ERROR_FILE)
    storage_lib.delete_file(config_error)
    result = trainer.fit()
    if storage_lib.exists(config_error):
        raise pickle.loads(storage_lib.read_bytes(config_error))
    return result.metrics["saes"]
