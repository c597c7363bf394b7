"""The Ray Train worker loop: one population of SAEs, data parallel over the workers.

Every worker reads its share of the training stream, splits the global batch
(`train.batch_size / train.workers.num` rows each) and steps every SAE through the
shared `SAETrainer`; `DistributedDataParallel` averages the gradients. Rank 0
logs to MLflow, writes checkpoints (all SAE and optimiser state, schedules,
dead-latent counters, tokens seen, RNG) through `ray.train.report`, and at the end
evaluates and saves each SAE in the SAELens format.

The stream is built here, after the checkpoint is restored, from its token count:
the position travels in the same checkpoint as the weights, so a resumed run reads
exactly the rows an uninterrupted one would have read next.
"""

from __future__ import annotations

import itertools
import logging
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from raysae import filesystem, progress
from raysae.activations import iter_activation_batches, load_model
from raysae.activations.layers import expand_hooks, training_columns
from raysae.activations.streams import evaluation_contexts, training_rows, write_position
from raysae.config import RaysaeConfig
from raysae.errors import ConfigError
from raysae.metrics import ce_loss_recovered, evaluate, evaluate_layers, replacement_ce
from raysae.models import build_sae
from raysae.ray_runtime import quiet_ray
from raysae.run_dir import RunDir
from raysae.tracking import Tracker
from raysae.training import Member, Population, StepMetrics, finish_sae, train_population
from raysae.training.batch import Batch, batch_rows, first_rows, split_batch
from raysae.training.loop import step_note

log = logging.getLogger("raysae.train")
STATE_FILE = "state.pt"
CONFIG_ERROR_FILE = "config_error.pickle"


@dataclass
class TrainJob:
    """Everything a worker needs; travels to the workers as `train_loop_config["job"]`."""

    members: list[RaysaeConfig]
    sae_ids: list[str]
    state_dir: str
    """Our files beside Ray's checkpoints: stream position, MLflow run ids."""
    d_in: int | None
    """Width of the activations when known up front (a cache); else read from the first batch."""
    on_step: Callable[[int, int], None] | None = None
    """Called on every worker after each step with (rank, tokens); for monitoring and fault drills."""
    parent_run_id: str | None = None
    """MLflow run the SAEs' runs are children of (a sweep's)."""
    ranked: bool = False
    """Evaluate at every report and put the best member's `sweep.metric` at the top level (for Tune)."""
    progress_lines: bool = True
    """Rank 0 logs its progress (forwarded to the driver); a sweep's driver prints it from Tune's
    results instead (`sweep.tuner`)."""
    label: str = ""
    """What the progress lines call this run (`train topk`)."""


def _ddp(sae: torch.nn.Module, device: torch.device, world: int):
    if world == 1:
        return None
    from torch.nn.parallel import DistributedDataParallel

    # Buffers (dead-latent counters, BatchTopK threshold) are kept equal by the trainer, which
    # sums every worker's batch statistics, so DDP must not overwrite them with rank 0's.
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(sae, device_ids=ids, broadcast_buffers=False)


def _gather_rows(rows: Batch) -> Batch:
    """Every worker's initialisation rows (inputs, or inputs and targets), in rank order."""
    if isinstance(rows, tuple):
        x, y = rows
        return _gather_tensor(x), _gather_tensor(y)
    return _gather_tensor(rows)


def _gather_tensor(rows: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, rows.contiguous())
    return torch.cat(parts)


def paired_columns(cfg: RaysaeConfig) -> tuple[str, ...] | None:
    """The columns a paired cache's (or live source's) rows are read as, (input, target), or
    None where the training stream holds the input alone (a multi-layer cache's inputs are one
    stacked column, so a crosscoder's rows are one column too)."""
    columns = training_columns(cfg)
    return columns if len(columns) > 1 else None


def _training_stream(cfg: RaysaeConfig, tokens: int, rank: int, world: int, device: torch.device):
    """This worker's share of the training stream from training token `tokens` on.

    Rank 0 builds the stream and, under data parallelism, splits it (`streaming_split`,
    equal shares, as Ray Train would) and hands every worker its split; rank 0's own
    split keeps the splits' coordinator actor alive, as rank 0 reads until the end.
    """
    if world == 1:
        return training_rows(cfg, tokens)
    splits = [training_rows(cfg, tokens).streaming_split(world, equal=True)] if rank == 0 else [None]
    # NCCL carries objects on the GPU; gloo on the CPU.
    dist.broadcast_object_list(splits, src=0, device=device if device.type == "cuda" else None)
    assert splits[0] is not None
    return splits[0][rank]


def _restore() -> dict | None:
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)


class HeldOut:
    """Rank 0's held-out rows, read once and kept in memory for every evaluation."""

    def __init__(self, cfg: RaysaeConfig):
        self.cfg = cfg
        self._batches: list[Batch] | None = None

    def batches(self) -> list[Batch]:
        if self._batches is None:
            shard, n, out = ray.train.get_dataset_shard("eval"), 0, []
            reader = iter_activation_batches(
                shard, 4096, dtype=self.cfg.activations.dtype, columns=paired_columns(self.cfg)
            )
            for batch in reader:
                out.append(first_rows(batch, self.cfg.train.eval_tokens - n))
                n += batch_rows(out[-1])
                if n >= self.cfg.train.eval_tokens:
                    break
            # Stop the read now: an iterator left open keeps its executor (and, verbose, its
            # progress bar) running until the worker exits, long after the trial's summary.
            reader.close()
            if not out:
                raise ValueError("no held-out activations to evaluate on")
            self._batches = out
        return self._batches


def _step_metrics(m: StepMetrics) -> dict[str, float]:
    d = m.as_dict()
    return {f"train/{k}": v for k, v in d.items() if k not in ("step", "tokens")}


def train_loop_per_worker(config: dict) -> None:
    job: TrainJob = config["job"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    base = job.members[0]
    t = base.train
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, round(t.workers.cpus)))
    progress.setup_logging()
    quiet_ray()
    if not progress.verbose():
        # Ray Train logs every report's whole TrainingReport(...) at INFO, on a logger named
        # after its file (so neither the `ray` logger's level nor Train's logging_config holds it).
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    torch.manual_seed(t.seed)

    restored = _restore()
    # Tokens seen = rows of the stream consumed: a batch read ahead (for initialisation) but not
    # yet stepped when the checkpoint was taken is read again, as the uninterrupted run steps it.
    start = restored["stream_tokens"] if restored else 0
    stream = _training_stream(base, start, rank, world, device)
    reader = iter_activation_batches(
        stream,
        t.batch_size // world,
        dtype=base.activations.dtype,
        drop_last=True,
        # On CUDA: pinned, non-blocking copies of blocks read ahead (the CPU path is unchanged).
        device=device,
        columns=paired_columns(base),
    )
    batches: Iterator[Batch] = reader
    d_in = restored["d_in"] if restored else job.d_in
    d_out = restored.get("d_out") if restored else None
    if d_in is None or (paired_columns(base) and d_out is None):
        first = next(reader)
        x, y = split_batch(first)
        d_in, d_out = x.shape[-1], None if y is None else y.shape[-1]  # [rows, (L,) d]
        batches = itertools.chain([first], reader)
    try:
        n_layers = None if base.model.layers is None else len(base.model.layers)
        saes = [build_sae(m.sae, d_in, d_out, n_layers=n_layers).to(device) for m in job.members]
    except ConfigError as exc:
        # Bad input, the same on every worker: hand it to the driver rather than raise,
        # which Ray Train would retry (FailureConfig) to the same end.
        if rank == 0:
            filesystem.write_bytes(filesystem.join(job.state_dir, CONFIG_ERROR_FILE), pickle.dumps(exc))
        reader.close()  # stops the stream's reads (a live stream's model forwards) now
        return
    population = Population(
        [
            Member(sae, m.train, module=_ddp(sae, device, world))
            for sae, m in zip(saes, job.members, strict=True)
        ]
    )
    seconds_before = 0.0
    if restored:
        population.load_state_dict(restored["members"])
        assert population.tokens_seen == start, (population.tokens_seen, start)
        torch.set_rng_state(restored["rng"])
        seconds_before = restored["seconds"]
        if rank == 0:
            log.info("resumed from the checkpoint at %d tokens", population.tokens_seen)

    tracker = (
        Tracker(job.members, job.sae_ids, job.state_dir, parent_run_id=job.parent_run_id)
        if rank == 0
        else None
    )
    held_out = HeldOut(base)
    started, tokens_at_start = time.perf_counter(), population.tokens_seen
    last: list[StepMetrics | None] = [None] * len(job.members)
    meter = None
    if rank == 0 and job.progress_lines:
        meter = progress.Progress(f"training {job.label or ', '.join(job.sae_ids)}", t.total_tokens)
        meter.update(population.tokens_seen)

    def note() -> str:
        """The members' last loss and L0, for the progress line."""
        return " | ".join(step_note(m) for m in last if m is not None)

    intervals = {"checkpoint": t.checkpoint_every_tokens or max(t.total_tokens // 10, t.batch_size)}
    if t.eval_every_tokens:
        intervals["eval"] = t.eval_every_tokens
    next_report = {k: (population.tokens_seen // every + 1) * every for k, every in intervals.items()}

    def seconds() -> float:
        return seconds_before + time.perf_counter() - started

    def state() -> dict:
        return {
            "d_in": d_in,
            "d_out": d_out,
            "members": population.state_dict(),
            "stream_tokens": population.tokens_seen,
            "rng": torch.get_rng_state(),
            "seconds": seconds(),
        }

    def record_position() -> None:
        # For people and tools watching the run (the stream starts from the restored checkpoint
        # itself): the latest *registered* checkpoint, as Ray Train registers reports asynchronously.
        reported = ray.train.get_all_reported_checkpoints(
            consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED
        )
        if reported:
            write_position(job.state_dir, max(int(r.metrics["tokens"]) for r in reported))

    def report(metrics: dict, final_state: dict | None = None) -> None:
        metrics = {"tokens": population.tokens_seen, "progress_note": note(), **metrics}
        if rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        record_position()  # the previous report's: registered long ago, so this does not wait
        with tempfile.TemporaryDirectory() as d:
            torch.save(final_state or state(), Path(d) / STATE_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    def evaluate_members() -> dict:
        rows = []
        for i, (m, sae_id) in enumerate(zip(population.members, job.sae_ids, strict=True)):
            row = {"sae_id": sae_id, "error": m.error}
            if m.error is None:
                assert tracker is not None  # rank 0 evaluates
                # Periodic evaluations skip the latents' pairwise cosines (2 d_sae^2 d_in multiply-adds):
                # the final one (training.finish) computes them once.
                if base.model.layers is not None:
                    metrics = evaluate_layers(
                        m.sae, held_out.batches(), layers=base.model.layers, dense_threshold=t.dense_threshold
                    )
                else:
                    metrics = evaluate(
                        m.sae, held_out.batches(), dense_threshold=t.dense_threshold, latent_similarity=False
                    )
                row.update(metrics)
                tracker.log_metrics(
                    i,
                    {f"eval/{k}": v for k, v in row.items() if k not in ("sae_id", "error")},
                    m.trainer.steps,
                    m.trainer.tokens_seen,
                )
            rows.append(row)
        return {"final": False, "saes": rows, **_ranking(rows, base)}

    def on_step(metrics: list[StepMetrics | None]) -> None:
        tokens = population.tokens_seen
        if tracker is not None:  # rank 0
            for i, m in enumerate(metrics):
                if m is not None:
                    last[i] = m
                if m is not None and m.step % t.log_every_steps == 0:
                    tracker.log_metrics(i, _step_metrics(m), m.step, m.tokens)
            if meter is not None:  # the note reads the device: only on the steps that log
                logged = any(m is not None and m.step % t.log_every_steps == 0 for m in metrics)
                meter.update(tokens, note() if logged else "")
        if job.on_step is not None:
            job.on_step(rank, tokens)
        due = [k for k, at in next_report.items() if tokens >= at]
        if due:  # read the members' on-device finite flags before evaluating or saving them
            population.check_finite()
        if due and not population.done:
            for k in due:
                next_report[k] = (tokens // intervals[k] + 1) * intervals[k]
            evaluate_now = ("eval" in due or job.ranked) and rank == 0
            report(evaluate_members() if evaluate_now else {"final": False})

    if not population.done:
        train_population(
            population,
            batches,
            init_tokens=t.init_tokens,
            device=device,
            share_init_rows=_gather_rows if world > 1 else None,
            on_step=on_step,
        )
    reader.close()  # the stream may hold rows beyond total_tokens: stop its reads now
    if meter is not None:
        meter.close()
    final_state = state()  # unfolded, so a rerun can still evaluate (it trains no further)
    rows = (
        _finish(job, population, held_out, tracker, seconds(), tokens_at_start) if tracker is not None else []
    )
    report({"final": True, "saes": rows, **_ranking(rows, base)}, final_state)
    if rank == 0:
        record_position()


def _ranking(rows: list[dict], cfg: RaysaeConfig) -> dict:
    """`{sweep.metric: the best member's value}`, for Ray Tune to rank and stop trials by."""
    values = [r[cfg.sweep.metric] for r in rows if isinstance(r.get(cfg.sweep.metric), (int, float))]
    if not values:
        return {}
    return {cfg.sweep.metric: min(values) if cfg.sweep.mode == "min" else max(values)}


def _finish(
    job: TrainJob,
    population: Population,
    held_out: HeldOut,
    tracker: Tracker,
    seconds: float,
    resumed_from: int,
) -> list[dict]:
    """Fold, evaluate (with CE loss when configured) and save every SAE; their results rows."""
    ce_model = _ce_setup(job.members[0])
    rows = []
    for i, (m, cfg, sae_id) in enumerate(zip(population.members, job.members, job.sae_ids, strict=True)):
        tokens = m.trainer.tokens_seen
        if m.error is not None:
            tracker.finish(i, {}, m.trainer.steps, sae_dir=None, error=m.error)
            rows.append(
                {"sae_id": sae_id, "architecture": m.sae.architecture, "error": m.error, "tokens": tokens}
            )
            continue
        m.sae.fold_input_scale()
        m.sae.eval()
        extra = {}
        record = {"sae_id": sae_id, "mlflow_run_id": tracker.run_ids[i], "resumed_from_tokens": resumed_from}
        if ce_model is not None:
            model, tokens_ce, mask = ce_model
            if cfg.model.layers is not None:
                inputs, targets = expand_hooks(cfg)
                try:
                    ce = replacement_ce(
                        model,
                        tokens_ce,
                        m.sae,
                        inputs,
                        targets or inputs,
                        layers=cfg.model.layers,
                        splice_mask=mask,
                    )
                except ValueError as exc:  # e.g. a whole-model top-k CLT has no one-forward replacement
                    log.warning("%s: no replacement-model CE: %s", sae_id, exc)
                    ce = None
            else:
                out_hook = cfg.model.hook_point_out if m.sae.is_transcoder else None
                ce = ce_loss_recovered(
                    model, tokens_ce, m.sae, cfg.model.hook_point, splice_mask=mask, hook_point_out=out_hook
                )
            if ce is not None:
                extra = {"ce_loss_recovered": ce["ce_loss_recovered"], "kl_sae": ce["kl_sae"]}
                record["ce"] = ce
        row = finish_sae(
            m.sae,
            held_out.batches(),
            cfg,
            sae_id,
            seconds=seconds,
            tokens=tokens,
            extra_metrics=extra,
            record=record,
        )
        error = row.get("error")  # a non-finite metric (training.finish): the SAE was not saved
        tracker.finish(
            i,
            {k: v for k, v in row.items() if isinstance(v, (int, float))},
            m.trainer.steps,
            sae_dir=None if error else RunDir.of(cfg).sae(sae_id),
            error=error,
        )
        rows.append(row)
    return rows


def _ce_setup(cfg: RaysaeConfig):
    """(model, tokens, splice mask) for CE-loss recovered, or None when it is off or impossible."""
    if cfg.train.ce_contexts == 0:
        return None
    try:
        tokens, mask = evaluation_contexts(cfg, cfg.train.ce_contexts)
        with progress.quiet_stdout():  # TransformerLens prints as it loads
            model = load_model(cfg.model)
    except (ValueError, OSError) as exc:  # e.g. a corpus too short, a model not available here
        log.warning("CE-loss recovered skipped: %s", exc)
        return None
    device = next(model.parameters()).device
    return model, tokens.to(device), mask.to(device)
