"""Starting or joining Ray: the one place commands call `ray.init`."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading

from raysae import progress

log = logging.getLogger("raysae.ray")


def _quiet_options() -> dict:
    """`ray.init` options that keep Ray's output to warnings and errors (`raysae.progress`):
    the quiet environment in every worker of the job, their `ray` loggers at WARNING (the setup
    hook). Worker output is still forwarded to the driver, so a worker's warning or error shows,
    under its `(Name pid=N)` prefix: no job-level `logging_config`, which would make Ray drop
    that prefix (`_should_ignore_worker_log_prefix`) and leave a forwarded traceback unattributed.
    Nothing changes under RAYSAE_VERBOSE=1."""
    if progress.verbose():
        return {}

    env = progress.worker_env()
    # Under `ray job submit`, Ray refuses a driver's env var that the job's runtime_env sets too.
    job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    taken = ((job.get("runtime_env") or {}).get("env_vars")) or {}
    return {
        "runtime_env": {
            "env_vars": {k: v for k, v in env.items() if k not in taken},
            # Runs first in every worker process of the job, Ray's own actors included.
            "worker_process_setup_hook": "raysae.progress.quiet_ray_loggers",
        },
    }


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster in `RAY_ADDRESS` (e.g. under `ray job submit`), else start a local Ray.

    A local Ray on a small machine gets at least 4 logical CPUs: Ray Data
    needs CPU slots beside the model/training actors, or a pipeline on two
    cores waits forever (docs/architecture.md, "Platform facts").
    """
    import ray

    if ray.is_initialized():
        return
    # ray.init replaces the SIGTERM handler with sys.exit(15); keep the command's (raysae.cli:
    # SIGTERM unwinds like Ctrl-C and exits 130). A local Ray's processes end with this one.
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    options = _quiet_options()
    if not progress.verbose():  # `ray.init`'s own INFO lines (connecting, connected, started)
        options["logging_level"] = logging.WARNING
    try:
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=True, **options)
            log.info("joined the Ray cluster at %s", os.environ["RAY_ADDRESS"])
        else:
            cpus = num_cpus or max(4, os.cpu_count() or 1)
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=True, **options)
            log.info("started a local Ray with %d logical CPUs", cpus)
    finally:
        if main and sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
    quiet_ray()


def quiet_ray() -> None:
    """Ray's own INFO output off in this process, unless RAYSAE_VERBOSE=1: the `ray` loggers,
    Ray Data's console logging and its progress bars (also in a Ray worker, where the job's
    environment already turned the bars off; this covers a worker of another job's runtime)."""
    if progress.verbose():
        return
    progress.quiet_ray_loggers()


def disconnect() -> None:
    """Leave Ray (a local Ray this command started ends with it): its log forwarding stops, so
    no worker's late output follows the command's last lines."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def keep_working_directory() -> None:
    """Stop Ray Train and Ray Tune from moving their workers and trials into run folders.

    They then keep Ray's usual working directory, so relative paths in a config
    (output_dir, cache_dir, a local model or corpus) mean in every worker what
    they mean in the driver and in the Ray Data actors. Tune passes the setting
    on to its trial processes.
    """
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
