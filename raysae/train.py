"""`python -m raysae.train CONFIG [--set k=v ...]`: one SAE (or one population) trained on Ray Train.

Builds the activation cache if needed, trains data-parallel over
`train.workers.num` workers, evaluates on held-out activations and writes
`<output_dir>/<name>/`: `config.yaml`, `saes/<sae_id>/` (SAELens format),
`results.csv`. Rerunning the same command resumes from the latest checkpoint.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from raysae.cli import config_parser, load_from_args, run_main

T = TypeVar("T")

TRIAL = "train"
"""The trial name of a run of this command: its SAEs are `<name>/train[/<member>]`."""


def main(argv: Sequence[str] | None = None) -> int:
    args = config_parser("train").parse_args(argv)
    cfg = load_from_args(args)
    from raysae.activations import generate_caches
    from raysae.config import check_population, member_configs
    from raysae.config.resolve import check_run_storage
    from raysae.preflight import check_inputs
    from raysae.ray_runtime import disconnect, ensure_ray
    from raysae.raytrain import run_training
    from raysae.run_dir import RunDir, hold_run_dir, sae_ids, summary_table, write_config, write_results

    members = member_configs(cfg)
    run = RunDir.of(cfg)
    check_run_storage(cfg)
    check_population(members)
    check_inputs(cfg, members)  # before Ray starts and before anything is written
    ensure_ray()
    command = " ".join(["python -m raysae.train", *(sys.argv[1:] if argv is None else argv)])
    with hold_run_dir(run, command):
        if cfg.activations.source == "cache":
            generate_caches(cfg)
        write_config(cfg, run.root)
        rows = outside_main_thread(
            run_training,
            members,
            sae_ids(cfg.name, TRIAL, len(members)),
            storage=run.checkpoints,
            trial=TRIAL,
            label=f"{TRIAL} " + " | ".join(m.sae.architecture for m in members),
        )
        for row, overrides in zip(rows, cfg.train.population or [{}] * len(rows), strict=True):
            row.update({k: v for k, v in overrides.items() if k not in row})
        results = write_results(rows, run.root)
    disconnect()  # nothing Ray forwards from its workers lands after the summary
    good = [r for r in rows if not r.get("error")]
    if good:
        print("\n" + summary_table(good, {"fvu": ".4f", "explained_variance": ".4f"}))
    print(f"\nrun directory: {run}\nresults: {results}")
    failed = [r for r in rows if r.get("error")]
    for r in failed:
        print(f"error: {r['sae_id']} stopped early and was not saved: {r['error']}")
    return 1 if failed else 0


def outside_main_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """`fn(*args, **kwargs)` in a helper thread while the main thread waits.

    Ray Train's `fit()` in the main thread replaces the SIGINT handler with its own, which
    aborts the run and exits 0 (or 1) without a word from raysae; off the main thread it leaves
    the handlers alone, so Ctrl-C, SIGTERM and SIGHUP reach `cli.run_main` as KeyboardInterrupt
    (exit 130, "rerunning the same command resumes"). The checkpoints already committed stay;
    the Train controller and workers end with this driver's Ray session, shut down here.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the main thread as it is
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="raysae-train", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(timeout=0.2)  # short waits, so signal handlers run in the main thread
    except KeyboardInterrupt:
        import ray

        ray.shutdown()  # ends this driver's Train controller and workers before the lock goes
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


if __name__ == "__main__":
    run_main(main)
