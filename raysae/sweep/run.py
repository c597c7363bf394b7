"""`python -m raysae.sweep CONFIG [--set k=v ...]`: the main job.

1. expands `sweep.search_space` into trials (fixed up front, `raysae.sweep.space`);
2. checks the cluster can run a trial, then builds every activation cache the
   trials need, once (complete caches are reused by every trial);
3. runs the trials on Ray Tune: each trial is a small driver function that
   trains one SAE, or a population of `sweep.saes_per_trial`, with Ray Train
   (`run_training`), named after its trial number so that rerunning the same
   command resumes the sweep and does not retrain finished trials;
4. writes `results.csv` and `pareto.png` to the run directory, and one MLflow
   parent run with a child run per SAE;
5. analyses the SAEs `analysis.which` picks (best, frontier or all) into the
   store (`raysae.analysis`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from raysae import storage
from raysae.cli import config_parser, load_from_args
from raysae.config import ConfigError, RaysaeConfig
from raysae.sweep.space import point_config, trial_groups

log = logging.getLogger("raysae.sweep")
TRIAL_CPU = 0.1
"""CPU reserved by each trial's driver function (the Train workers reserve their own)."""


def trial_name(index: int) -> str:
    return f"t{index:03d}"


def sae_ids(cfg: RaysaeConfig, index: int, k: int) -> list[str]:
    """`<name>/<trial>` or, for a population trial, `<name>/<trial>/<member>` (DESIGN.md §4)."""
    base = f"{cfg.name}/{trial_name(index)}"
    return [base] if k == 1 else [f"{base}/{i}" for i in range(k)]


def trial_resources(cfg: RaysaeConfig) -> tuple[float, float]:
    """(CPUs, GPUs) one trial holds at once: its driver, the Train workers, its data readers."""
    t, a = cfg.train, cfg.activations
    cpus = TRIAL_CPU + t.num_workers * t.cpus_per_worker
    gpus = t.num_workers if t.use_gpu else 0.0
    if a.source == "live":
        cpus += a.num_actors * a.cpus_per_actor
        gpus += a.num_actors * a.num_gpus_per_actor
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
                "train.num_workers",
                f"a trial needs {cpus:g} CPUs (workers x train.cpus_per_worker, "
                f"data, driver) but the Ray cluster has {have_cpu:g}",
            )
        )
    if gpus > have_gpu:
        problems.append(
            ("train.use_gpu", f"a trial needs {gpus:g} GPUs but the Ray cluster has {have_gpu:g}")
        )
    custom = {
        k: v * m.train.num_workers
        for members in trials
        for m in members[:1]
        for k, v in m.train.worker_resources.items()
    }
    for name, amount in custom.items():
        if amount > cluster.get(name, 0.0):
            problems.append(
                (
                    "train.worker_resources",
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


def _check_same_sweep(out: str, groups: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """The sweep's record (`sweep.json`); refuses to resume a sweep whose trials changed."""
    path = storage.join(out, "sweep.json")
    points = json.loads(json.dumps(groups))
    if storage.exists(path):
        record = json.loads(storage.read_bytes(path))
        if record["trials"] != points:
            raise ConfigError(
                [
                    (
                        "sweep.search_space",
                        (
                            f"{out} holds a sweep with other trials; rerun with another `name` to start a new "
                            "sweep, or delete that folder to start this one over"
                        ),
                    )
                ]
            )
        return record
    record = {"trials": points}
    storage.write_bytes(path, json.dumps(record, indent=1).encode())
    return record


def _scheduler(cfg: RaysaeConfig):
    from ray import tune

    s = cfg.sweep.scheduler
    if s.type == "fifo":
        return tune.schedulers.FIFOScheduler()
    return tune.schedulers.ASHAScheduler(
        time_attr="tokens",
        max_t=cfg.train.total_tokens,
        grace_period=s.grace_period_tokens,
        reduction_factor=s.reduction_factor,
    )


class Trial:
    """The Tune trainable: trial `config["trial"]` trains its SAEs with Ray Train."""

    def __init__(self, trials: list[list[RaysaeConfig]], out: str, parent_run_id: str | None):
        self.trials, self.out, self.parent_run_id = trials, out, parent_run_id

    def __call__(self, config: dict) -> None:
        from ray.tune.integration.ray_train import TuneReportCallback

        from raysae.distributed import run_training

        index = config["trial"]
        members = self.trials[index]
        run_training(
            members,
            sae_ids(members[0], index, len(members)),
            storage=storage.join(self.out, "checkpoints"),
            trial=trial_name(index),
            callbacks=[TuneReportCallback()],
            parent_run_id=self.parent_run_id,
            ranked=True,
        )


def _rows(grid, groups: list[list[dict[str, Any]]], trials: list[list[RaysaeConfig]]) -> list[dict]:
    """One results row per SAE: its swept values, its final metrics or why it has none."""
    rows = []
    for result in grid:
        index = result.config["trial"]
        metrics = result.metrics or {}
        reported = {r["sae_id"]: r for r in metrics.get("saes", [])}
        members = trials[index]
        for sae_id, point, member in zip(
            sae_ids(members[0], index, len(members)), groups[index], members, strict=True
        ):
            row = {"sae_id": sae_id, "architecture": member.sae.architecture, **point}
            row.update({k: v for k, v in reported.get(sae_id, {}).items() if k != "sae_id"})
            if result.error is not None:
                row["status"] = f"failed: {str(result.error).splitlines()[0][:300]}"
            elif not metrics.get("final"):  # Tune keeps its own "done"
                row["status"] = f"stopped by the scheduler at {metrics.get('tokens', 0)} tokens"
            else:
                row["status"] = "failed" if row.get("error") else "finished"
            rows.append(row)
    return sorted(rows, key=lambda r: r["sae_id"])


def run_sweep(cfg: RaysaeConfig) -> tuple[list[dict], str]:
    """Run (or resume) the sweep; returns the results rows and the run directory."""
    import ray
    from ray import tune

    from raysae.activations import generate_caches
    from raysae.activations.cache import key_inputs
    from raysae.analysis import analyse, select_saes
    from raysae.distributed import check_population
    from raysae.distributed.tracking import flat_params, log_batch, log_file, mlflow_experiment
    from raysae.ray_runtime import ensure_ray, keep_working_directory
    from raysae.results import check_run_storage, run_dir, write_config, write_results
    from raysae.sweep.summary import best_row, frontier_axis, write_pareto

    groups = trial_groups(cfg)
    trials = [[point_config(cfg, p) for p in group] for group in groups]
    for members in trials:
        check_population(members)
    ensure_ray()
    n_parallel = concurrency(cfg, trials, ray.cluster_resources())
    out = storage.absolute(run_dir(cfg))
    check_run_storage(cfg)
    record = _check_same_sweep(out, groups)
    write_config(cfg, out)
    log.info(
        "sweep %s: %d trials of %d SAE(s), %d at a time", cfg.name, len(trials), len(trials[0]), n_parallel
    )

    seen = set()
    for members in trials:  # every distinct cache once, before any trial starts
        key = json.dumps(key_inputs(members[0], members[0].model.hook_point, "tokens"), sort_keys=True)
        if members[0].activations.source == "cache" and key not in seen:
            seen.add(key)
            generate_caches(members[0])

    client, experiment_id = mlflow_experiment(cfg)
    if "mlflow_parent_run_id" not in record:
        parent = client.create_run(
            experiment_id, run_name=f"{cfg.name} (sweep)", tags={"raysae.sweep": cfg.name}
        )
        record["mlflow_parent_run_id"] = parent.info.run_id
        storage.write_bytes(storage.join(out, "sweep.json"), json.dumps(record, indent=1).encode())
        params = {**flat_params(cfg), "sweep.trials": str(len(trials))}
        for path, dim in cfg.sweep.search_space.items():
            params[f"sweep.search_space.{path}"] = json.dumps({dim.kind: dim.values})
        log_batch(client, parent.info.run_id, params=params)
    parent_id = record["mlflow_parent_run_id"]

    keep_working_directory()
    trainable = tune.with_resources(Trial(trials, out, parent_id), {"cpu": TRIAL_CPU})
    tune_dir = storage.join(out, "tune")
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
            ),
            run_config=tune.RunConfig(name="tune", storage_path=out, verbose=1),
        )
    grid = tuner.fit()
    rows = _rows(grid, groups, trials)
    results = write_results(rows, out)
    finished = [r for r in rows if r["status"] == "finished"]
    pareto = write_pareto(finished, storage.join(out, "pareto.png"), y=frontier_axis(cfg.sweep.metric))
    log_file(client, parent_id, results)
    if pareto is not None:
        log_file(client, parent_id, pareto)
    best = best_row(finished, cfg.sweep.metric, cfg.sweep.mode)
    if best is not None:
        log_batch(client, parent_id, metrics={f"best_{cfg.sweep.metric}": best[cfg.sweep.metric]})
        client.set_tag(parent_id, "raysae.best_sae", best["sae_id"])
    client.set_terminated(parent_id, status="FINISHED")
    analysed = analyse(
        cfg,
        [storage.join(out, "saes", sae_id) for sae_id in select_saes(rows, cfg)],
        store_dir=storage.join(out, "store"),
    )
    for row in rows:
        row["analysed"] = any(a["sae_id"] == row["sae_id"] for a in analysed)
    return rows, out


def main(argv: Sequence[str] | None = None) -> int:
    from raysae.config import redact
    from raysae.distributed.tracking import tracking_uri
    from raysae.results import summary_table
    from raysae.store import store_uri

    args = config_parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = load_from_args(args)
    rows, out = run_sweep(cfg)
    done = [r for r in rows if r["status"] == "finished"]
    metric = cfg.sweep.metric
    if done:
        done.sort(key=lambda r: r.get(metric, float("inf")), reverse=cfg.sweep.mode == "max")
        print("\n" + summary_table(done, {metric: ".4f"}))
    others = [r for r in rows if r["status"] != "finished"]
    for r in others:
        print(f"{r['sae_id']}: {r['status']}{': ' + r['error'] if r.get('error') else ''}")
    print(
        f"\n{len(done)} of {len(rows)} SAEs finished"
        + (f"; best by {metric}: {done[0]['sae_id']} ({done[0][metric]:.4f})" if done else "")
    )
    analysed = [r["sae_id"] for r in rows if r.get("analysed")]
    store = redact(store_uri(cfg)) if store_uri(cfg) else f"embedded, data in {storage.join(out, 'store')}"
    print(
        f"run directory: {out}\nresults: {storage.join(out, 'results.csv')}\n"
        f"pareto: {storage.join(out, 'pareto.png')}\n"
        f"SAEs (SAELens format): {storage.join(out, 'saes')}\nMLflow: {redact(tracking_uri(cfg))}\n"
        f"features of {len(analysed)} SAE(s) (analysis.which={cfg.analysis.which}): {', '.join(analysed) or '-'}; "
        f"store: {store}"
    )
    return 0 if done else 1
