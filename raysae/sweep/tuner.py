"""The sweep on Ray Tune (`python -m raysae.sweep CONFIG`, `raysae.sweep.__main__`):

1. expands `sweep.search_space` into trials (fixed up front, `raysae.sweep.trials`);
2. checks the cluster can run a trial, then builds every activation cache the
   trials need, once (complete caches are reused by every trial);
3. runs the trials on Ray Tune: each trial is a small driver function that
   trains one SAE, or a population of `sweep.saes_per_trial`, with Ray Train
   (`run_training`), named after its trial number so that rerunning the same
   command resumes the sweep and does not retrain finished trials;
4. writes `results.csv` and `pareto.png` to the run directory, and one MLflow
   parent run with a child run per SAE;
5. puts the sweep's ranking and plot in the store, and analyzes the SAEs
   `analysis.which` picks (best, frontier or all) into it (`raysae.analysis`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
from typing import Any

from raysae import filesystem, progress
from raysae.activations import generate_caches
from raysae.activations.build import training_hooks
from raysae.activations.cache import key_inputs
from raysae.analysis import analyze
from raysae.cli import failure_reason
from raysae.config import RaysaeConfig, check_population
from raysae.config.resolve import check_run_storage, store_uri
from raysae.errors import ConfigError
from raysae.preflight import check_inputs
from raysae.ranking import best_row, frontier_axis, select_saes
from raysae.ray_runtime import ensure_ray, keep_working_directory
from raysae.run_dir import RunDir, hold_run_dir, resume_record, sae_ids, write_config, write_results
from raysae.store import open_store
from raysae.sweep.pareto_plot import pareto_png, pareto_title, sweep_document
from raysae.sweep.trials import point_config, point_label, trial_groups
from raysae.tracking import flat_params, log_batch, log_file, mlflow_experiment, search_space_params

log = logging.getLogger("raysae.sweep")
TRIAL_CPU = 0.1
"""CPU reserved by each trial's driver function (the Train workers reserve their own)."""


def trial_name(index: int) -> str:
    return f"t{index:03d}"


def trial_label(index: int, points: list[dict[str, Any]], members: list[RaysaeConfig]) -> str:
    """`t001 topk sae.k=64`: the trial and what its SAEs are (` | ` between a population's)."""
    what = " | ".join(point_label(p, m.sae.architecture) for p, m in zip(points, members, strict=True))
    return f"{trial_name(index)} {what}"


class _TrialNames:
    """Tune's name (and folder) of a trial: its label (`t001_topk_sae.k=64`), not `DEFAULT_…`."""

    def __init__(self, labels: list[str]):
        self.labels = labels

    def __call__(self, trial) -> str:
        return re.sub(r"[^\w.=-]+", "_", self.labels[trial.config["trial"]])[:100]


def _trial_progress(labels: list[str], totals: list[int]):
    """A Tune callback in the driver printing each trial's training progress (`raysae.progress`)
    from the results its Train run reports (tokens, last loss and L0)."""
    from ray.tune import Callback

    class TrialProgress(Callback):
        def __init__(self):
            self.meters: dict[int, progress.Progress] = {}

        def __getstate__(self) -> dict:  # Tune pickles its callbacks with the experiment
            return {}

        def __setstate__(self, state: dict) -> None:
            self.meters = {}

        def meter(self, trial) -> progress.Progress:
            i = trial.config["trial"]
            if i not in self.meters:
                self.meters[i] = progress.Progress(f"training {labels[i]}", totals[i])
            return self.meters[i]

        def on_trial_start(self, iteration, trials, trial, **info):
            self.meter(trial).update(0)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.meter(trial).update(int(result.get("tokens", 0)), result.get("progress_note", ""))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.meter(trial).close()

        def on_trial_error(self, iteration, trials, trial, **info):
            self.meter(trial).close("failed")

    return TrialProgress()


def trial_resources(cfg: RaysaeConfig) -> tuple[float, float]:
    """(CPUs, GPUs) one trial holds at once: its driver, the Train workers, its data readers."""
    w, pool = cfg.train.workers, cfg.activations.actors
    cpus = TRIAL_CPU + w.num * w.cpus
    gpus = float(w.num) if w.gpu else 0.0
    if cfg.activations.source == "live":
        cpus += pool.num * pool.cpus
        gpus += pool.num * pool.gpus
    else:
        cpus += 1  # Ray Data read tasks
    return cpus, gpus


def concurrency(cfg: RaysaeConfig, trials: list[list[RaysaeConfig]], cluster: dict[str, float]) -> int:
    """Trials at once: `sweep.max_concurrent_trials`, or as many as the cluster holds.

    Raises ConfigError, before any work, when not even one trial fits.
    """
    need = [trial_resources(m) for members in trials for m in members[:1]]
    cpus, gpus = max(n[0] for n in need), max(n[1] for n in need)
    have_cpu, have_gpu = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    problems = []
    if cpus > have_cpu:
        problems.append(
            (
                "train.workers.num",
                f"a trial needs {cpus:g} CPUs (workers x train.workers.cpus, "
                f"data, driver) but the Ray cluster has {have_cpu:g}",
            )
        )
    if gpus > have_gpu:
        problems.append(
            ("train.workers.gpu", f"a trial needs {gpus:g} GPUs but the Ray cluster has {have_gpu:g}")
        )
    custom = {
        k: v * m.train.workers.num
        for members in trials
        for m in members[:1]
        for k, v in m.train.workers.resources.items()
    }
    for name, amount in custom.items():
        if amount > cluster.get(name, 0.0):
            problems.append(
                (
                    "train.workers.resources",
                    f"a trial needs {amount:g} of resource {name!r} but the "
                    f"Ray cluster has {cluster.get(name, 0.0):g}",
                )
            )
    if problems:
        raise ConfigError(problems)
    fit = int(have_cpu // cpus)
    if gpus:
        fit = min(fit, int(have_gpu // gpus))
    for name, amount in custom.items():
        if amount:
            fit = min(fit, int(cluster[name] // amount))
    return min(cfg.sweep.max_concurrent_trials or fit, len(trials))


def _check_same_sweep(run: RunDir, groups: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """The sweep's record (`sweep.json`); refuses to resume a sweep whose trials changed."""
    record, changed = resume_record(run.sweep_record, {"trials": groups}, compared="trials")
    if changed:
        raise ConfigError(
            [
                (
                    "sweep.search_space",
                    f"{run} holds a sweep with other trials; rerun with another `name` to start a new "
                    "sweep, or delete that folder to start this one over",
                )
            ]
        )
    return record


def _scheduler(cfg: RaysaeConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = cfg.sweep.scheduler
    if s.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="tokens",
        max_t=cfg.train.total_tokens,
        grace_period=s.grace_period_tokens,
        reduction_factor=s.reduction_factor,
    )


class Trial:
    """The Tune trainable: trial `config["trial"]` trains its SAEs with Ray Train."""

    __name__ = "raysae_trial"  # Tune names trials after it, and warns when there is none

    def __init__(
        self, trials: list[list[RaysaeConfig]], run: RunDir, parent_run_id: str | None, labels: list[str]
    ):
        self.trials, self.run, self.parent_run_id, self.labels = trials, run, parent_run_id, labels

    def __call__(self, config: dict) -> None:
        from ray.tune.integration.ray_train import TuneReportCallback

        from raysae.raytrain import run_training

        index = config["trial"]
        members = self.trials[index]
        run_training(
            members,
            sae_ids(members[0].name, trial_name(index), len(members)),
            storage=self.run.checkpoints,
            trial=trial_name(index),
            callbacks=[TuneReportCallback()],
            parent_run_id=self.parent_run_id,
            ranked=True,
            progress_lines=False,  # the sweep's driver prints them (_trial_progress)
            label=self.labels[index],
        )


def _rows(
    grid, groups: list[list[dict[str, Any]]], trials: list[list[RaysaeConfig]], *, interrupted: bool = False
) -> list[dict]:
    """One results row per SAE: its swept values, its final metrics or why it has none."""
    rows = []
    for result in grid:
        index = result.config["trial"]
        metrics = result.metrics or {}
        reported = {r["sae_id"]: r for r in metrics.get("saes", [])}
        members = trials[index]
        ids = sae_ids(members[0].name, trial_name(index), len(members))
        for sae_id, point, member in zip(ids, groups[index], members, strict=True):
            row = {"sae_id": sae_id, "architecture": member.sae.architecture, **point}
            row.update({k: v for k, v in reported.get(sae_id, {}).items() if k != "sae_id"})
            if result.error is not None:
                row["status"] = f"failed: {failure_reason(result.error)}"
            elif not metrics.get("final"):  # Tune keeps its own "done"
                # Only ASHA stops trials early; anything else unfinished was cut short by Ctrl-C.
                how = "interrupted" if interrupted else "stopped by the scheduler"
                row["status"] = f"{how} at {metrics.get('tokens', 0)} tokens"
            else:
                row["status"] = "failed" if row.get("error") else "finished"
            rows.append(row)
    return sorted(rows, key=lambda r: r["sae_id"])


def _build_caches(trials: list[list[RaysaeConfig]]) -> None:
    """Every distinct training cache of the trials, once, before any trial starts."""
    seen = set()
    for members in trials:
        key = json.dumps(key_inputs(members[0], training_hooks(members[0]), "tokens"), sort_keys=True)
        if members[0].activations.source == "cache" and key not in seen:
            seen.add(key)
            generate_caches(members[0])


def _parent_run(cfg: RaysaeConfig, run: RunDir, record: dict[str, Any], n_trials: int):
    """(MlflowClient, the sweep's MLflow parent run id), created on the first run of the sweep."""
    client, experiment_id = mlflow_experiment(cfg)
    if "mlflow_parent_run_id" not in record:
        parent = client.create_run(
            experiment_id, run_name=f"{cfg.name} (sweep)", tags={"raysae.sweep": cfg.name}
        )
        record["mlflow_parent_run_id"] = parent.info.run_id
        filesystem.write_bytes(run.sweep_record, json.dumps(record, indent=1).encode())
        params = {**flat_params(cfg), "sweep.trials": str(n_trials), **search_space_params(cfg)}
        log_batch(client, parent.info.run_id, params=params)
        log_file(client, parent.info.run_id, run.config)  # written just before, by _run_held
    return client, record["mlflow_parent_run_id"]


class _TuneStopsOnSignals:
    """Ctrl-C, SIGTERM and SIGHUP during `Tuner.fit()` end the Tune run gracefully (Tune saves its
    state, stops the trials and returns) and are remembered, so the sweep stops after it.

    Tune's own SIGINT handler ends the run the same way but leaves no trace of having done so;
    it is turned off (`TUNE_DISABLE_SIGINT_HANDLER`) and ours asks Tune to stop through the
    signal it always listens to, SIGUSR1. A second signal interrupts at once.
    """

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self):
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(signal.Signals(signum).name)
        self.received = signal.Signals(signum).name
        log.warning("%s: stopping the sweep once Ray Tune has saved its state", self.received)
        signal.raise_signal(signal.SIGUSR1)

    def _before_tune_listens(self, signum: int, _frame) -> None:
        raise KeyboardInterrupt(self.received or signal.Signals(signum).name)

    def __enter__(self) -> _TuneStopsOnSignals:
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for name in (*self.SIGNALS, "SIGUSR1"):
            sig = signal.Signals[name]
            handler = self._before_tune_listens if name == "SIGUSR1" else self._handle
            self._previous[sig] = signal.signal(sig, handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _check_inputs(cfg: RaysaeConfig, trials: list[list[RaysaeConfig]]) -> None:
    """Everything the driver can check, once, before Ray: caches, model, hooks, every trial's
    widths, MLflow and the store (`raysae.preflight`); the run directory's storage."""
    for members in trials:
        check_population(members)
    with progress.quiet_stdout():  # loading the model on the driver: TransformerLens prints
        check_inputs(cfg, [m for members in trials for m in members], store=True)


def run_sweep(cfg: RaysaeConfig, *, command: str = "python -m raysae.sweep") -> tuple[list[dict], RunDir]:
    """Run (or resume) the sweep; returns the results rows and the run directory.

    Bad input is refused before Ray starts and before anything is written. The run directory
    is held (`hold_run_dir`) from before its first file until the end. A sweep stopped by
    Ctrl-C, SIGTERM or SIGHUP writes `results.csv` (rows `interrupted at N tokens`) and raises
    KeyboardInterrupt: no plot, no analysis."""
    import ray

    groups = trial_groups(cfg)
    trials = [[point_config(cfg, p) for p in group] for group in groups]
    run = RunDir.of(cfg).absolute()
    check_run_storage(cfg, run.store)
    _check_inputs(cfg, trials)
    ensure_ray()
    n_parallel = concurrency(cfg, trials, {k: float(v) for k, v in ray.cluster_resources().items()})
    with hold_run_dir(run, command):
        return _run_held(cfg, run, groups, trials, n_parallel), run


def _run_held(
    cfg: RaysaeConfig,
    run: RunDir,
    groups: list[list[dict[str, Any]]],
    trials: list[list[RaysaeConfig]],
    n_parallel: int,
) -> list[dict]:
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    record = _check_same_sweep(run, groups)
    write_config(cfg, run.root)
    log.info(
        "sweep %s: %d trials of %d SAE(s), %d at a time", cfg.name, len(trials), len(trials[0]), n_parallel
    )
    _build_caches(trials)
    client, parent_id = _parent_run(cfg, run, record, len(trials))

    keep_working_directory()
    labels = [
        trial_label(i, points, members)
        for i, (points, members) in enumerate(zip(groups, trials, strict=True))
    ]
    totals = [members[0].train.total_tokens for members in trials]
    trainable = tune.with_resources(Trial(trials, run, parent_id, labels), {"cpu": TRIAL_CPU})
    tune_dir = run.path(RunDir.TUNE)
    if tune.Tuner.can_restore(tune_dir):
        log.info("resuming the sweep from %s", tune_dir)
        tuner = tune.Tuner.restore(tune_dir, trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(list(range(len(trials))))},
            tune_config=tune.TuneConfig(
                metric=cfg.sweep.metric,
                mode=cfg.sweep.mode,
                scheduler=_scheduler(cfg),
                max_concurrent_trials=n_parallel,
                trial_name_creator=_TrialNames(labels),
                trial_dirname_creator=_TrialNames(labels),
            ),
            # verbose=0: no table (raysae prints each trial's progress); Tune's logger callbacks
            # are off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS, raysae.progress): MLflow has the metrics.
            run_config=tune.RunConfig(
                name=RunDir.TUNE,
                storage_path=run.root,
                verbose=1 if progress.verbose() else 0,
                # result.json, which Tune's results read back (the other loggers are off)
                callbacks=[JsonLoggerCallback(), _trial_progress(labels, totals)],
            ),
        )
    with _TuneStopsOnSignals() as stop:
        grid = tuner.fit()
    rows = _rows(grid, groups, trials, interrupted=stop.received is not None)
    log_file(client, parent_id, write_results(rows, run.root))
    if stop.received is not None:  # cli.run_main says "interrupted (Ctrl-C)" for a bare one
        raise KeyboardInterrupt("" if stop.received == "SIGINT" else stop.received)
    finished = [r for r in rows if r["status"] == "finished"]
    png = pareto_png(finished, y=frontier_axis(cfg.sweep.metric), title=pareto_title(cfg, finished))
    if png is not None:
        filesystem.write_bytes(run.pareto, png)
        log_file(client, parent_id, run.pareto)
    best = best_row(finished, cfg.sweep.metric, cfg.sweep.mode)
    if best is not None:
        log_batch(client, parent_id, metrics={f"best_{cfg.sweep.metric}": best[cfg.sweep.metric]})
        client.set_tag(parent_id, "raysae.best_sae", best["sae_id"])
    client.set_terminated(parent_id, status="FINISHED")
    with open_store(store_uri(cfg), run.store, cfg.store, create=True) as store:
        store.put_sweep(
            sweep_document(cfg.name, finished, metric=cfg.sweep.metric, mode=cfg.sweep.mode, png=png)
        )
        picked = select_saes(rows, cfg.analysis.which, cfg.sweep.metric, cfg.sweep.mode)
        if cfg.model.layers is not None:
            # The per-feature analysis reads one hook per SAE; multi-layer dictionaries are not
            # analysed yet (their checkpoints, metrics and replacement CE are written).
            log.warning("analysis skipped: multi-layer dictionaries (model.layers) are not analysed yet")
            picked = []
        analyzed = analyze(cfg, [run.sae(sae_id) for sae_id in picked], store=store)
    for row in rows:
        row["analyzed"] = any(a["sae_id"] == row["sae_id"] for a in analyzed)
    return rows
