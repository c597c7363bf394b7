"""Starting or joining Ray: the one place commands call `ray.init`."""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger("raysae.ray")


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
    try:
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=True)
            return
        cpus = num_cpus or max(4, os.cpu_count() or 1)
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=True)
        log.info("started a local Ray with %d logical CPUs", cpus)
    finally:
        if main and sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)


def keep_working_directory() -> None:
    """Stop Ray Train and Ray Tune from moving their workers and trials into run folders.

    They then keep Ray's usual working directory, so relative paths in a config
    (output_dir, cache_dir, a local model or corpus) mean in every worker what
    they mean in the driver and in the Ray Data actors. Tune passes the setting
    on to its trial processes.
    """
    os.environ["RAY_CHDIR_TO_TRIAL_DIR"] = "0"
