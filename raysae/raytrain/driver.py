"""Driver side of a training run: one Ray Train `TorchTrainer` for one population of SAEs.

`run_training` is what `python -m raysae.train` and each sweep trial call. Ray
Train keeps its checkpoints under `<storage>/<trial>/`; our own small files
(the latest committed checkpoint's tokens, MLflow run ids, the fingerprint of the
config) sit in `<storage>/<trial>/raysae/`. Calling it again with the same storage
and trial resumes from the latest checkpoint, after checking the config still
matches; the workers build the training stream from that checkpoint's token count.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any

from raysae import filesystem
from raysae.activations.build import training_hooks
from raysae.activations.cache import key_inputs
from raysae.activations.streams import held_out_dataset, split_cache
from raysae.config import OPERATIONAL, RaysaeConfig, TrainConfig, check_population
from raysae.errors import ConfigError
from raysae.models import width_problems
from raysae.ray_runtime import keep_working_directory
from raysae.raytrain.worker import CONFIG_ERROR_FILE, TrainJob, train_loop_per_worker
from raysae.run_dir import resume_record
from raysae.tracking import RUNS_FILE

STATE_DIR = "raysae"
"""Our files beside Ray Train's checkpoints of a trial: `<storage>/<trial>/raysae/`."""
FINGERPRINT_FILE = "fingerprint.json"


def fingerprint(members: Sequence[RaysaeConfig]) -> dict[str, dict[str, Any]]:
    """What a checkpoint's training depends on: SAE and schedule settings (all but the
    OPERATIONAL `train.*` fields), and the activations."""
    out = {}
    for i, m in enumerate(members):
        train = {
            k: v
            for k, v in m.train.model_dump(mode="json").items()
            if TrainConfig.scope(k) is not OPERATIONAL
        }
        out[f"sae {i}"] = {
            "sae": m.sae.model_dump(mode="json"),
            "train": train,
            "activations": key_inputs(m, training_hooks(m), "tokens"),
            "source": m.activations.source,
        }
    return out


def has_checkpoint(trial_dir: filesystem.Location) -> bool:
    """Whether Ray Train wrote a checkpoint of this trial (a `checkpoint_*` folder): one it
    has not registered yet counts too, so a rerun never resumes one made with other settings."""
    import pyarrow.fs as pafs

    fs, path = filesystem.resolve(trial_dir)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return any(i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_") for i in infos)


def _check_resume(state_dir: str, members: Sequence[RaysaeConfig]) -> None:
    """Record what the training depends on, or refuse a rerun that changed it (called once the
    inputs are valid). A record with no checkpoint beside it (a run stopped, or refused in the
    workers, before its first checkpoint) never blocks: there is nothing to resume, so this
    run starts afresh, with new MLflow runs that log its own settings."""
    record, fresh = filesystem.join(state_dir, FINGERPRINT_FILE), fingerprint(members)
    _, changed = resume_record(record, fresh)
    if changed and not has_checkpoint(filesystem.parent(state_dir)):
        filesystem.delete_file(filesystem.join(state_dir, RUNS_FILE))
        filesystem.delete_file(record)
        resume_record(record, fresh)
        return
    if changed:
        raise ConfigError(
            [
                (
                    "",
                    f"{filesystem.parent(state_dir)} holds checkpoints of a run with other settings "
                    f"({', '.join(changed[:5])}); rerun with another `name` to start a new "
                    "run, or delete that folder to start this one over",
                )
            ]
        )


def run_training(
    members: Sequence[RaysaeConfig],
    sae_ids: Sequence[str],
    *,
    storage: filesystem.Location,
    trial: str,
    on_step: Callable[[int, int], None] | None = None,
    callbacks: Sequence[Any] = (),
    parent_run_id: str | None = None,
    ranked: bool = False,
    progress_lines: bool = True,
    label: str = "",
) -> list[dict[str, Any]]:
    """Train a population (K >= 1) with Ray Train; returns one results row per SAE.

    SAEs are written to `saes/<sae_id>/` of the run directory. A row with an
    `error` is an SAE whose loss turned non-finite: it was not saved.
    `callbacks` are Ray Train callbacks (a sweep passes Tune's `TuneReportCallback`),
    `ranked` evaluates at every report for them, `parent_run_id` nests the MLflow runs.
    `progress_lines`: rank 0 logs the training's progress as `training <label>: ...` (a sweep
    prints it in its driver from Tune's results instead).
    """
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2.api.config import LoggingConfig

    from raysae import progress

    members = list(members)
    if len(sae_ids) != len(members):
        raise ValueError(f"{len(members)} SAEs but {len(sae_ids)} ids")
    check_population(members)
    base = members[0]
    t = base.train
    w = t.workers
    if t.batch_size % w.num:
        raise ConfigError(
            [("train.batch_size", f"{t.batch_size} rows do not split evenly over train.workers.num={w.num}")]
        )
    storage_path = filesystem.absolute(storage)
    state_dir = filesystem.join(storage_path, trial, STATE_DIR)
    d_in = None
    if base.activations.source == "cache":
        d_in = split_cache(base).d_model  # verifies the cache
        problems = [p for m in members for p in width_problems(m.sae, d_in)]
        if problems:
            raise ConfigError(problems)
    _check_resume(state_dir, members)
    keep_working_directory()
    resources = {"CPU": w.cpus, **({"GPU": 1} if w.gpu else {}), **w.resources}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "job": TrainJob(
                members,
                list(sae_ids),
                state_dir,
                d_in,
                on_step,
                parent_run_id,
                ranked,
                progress_lines=progress_lines,
                label=label,
            )
        },
        scaling_config=ScalingConfig(num_workers=w.num, use_gpu=w.gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=trial,
            storage_path=storage_path,
            callbacks=list(callbacks),
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=t.checkpoints_to_keep),
            # Ray Train's INFO lines (worker group started, every report's TrainingReport(...))
            # off: raysae prints the progress; warnings and errors still show.
            logging_config=LoggingConfig(log_level="INFO" if progress.verbose() else "WARNING"),
        ),
        # The training stream is not here: the workers build it from the checkpoint they restore.
        datasets={"eval": held_out_dataset(base)},
        dataset_config=DataConfig(
            datasets_to_split=[], execution_options=ExecutionOptions(preserve_order=True)
        ),
    )
    config_error = filesystem.join(state_dir, CONFIG_ERROR_FILE)
    filesystem.delete_file(config_error)
    result = trainer.fit()
    if filesystem.exists(config_error):
        raise pickle.loads(filesystem.read_bytes(config_error))
    assert result.metrics is not None, "the training run reported no final metrics"
    return result.metrics["saes"]
