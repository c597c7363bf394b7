"""Run by tests/cluster/test_multinode.py in its own process (the tests' shared Ray stays
out of it): a sweep on a simulated 3-node cluster (`ray.cluster_utils.Cluster`) where a
custom resource stands in for GPUs, a worker node removed mid-training and replaced,
and the same sweep command rerun if a trial did not survive. Prints a JSON summary.

    python tests/cluster/multinode_sweep.py CONFIG RUN_DIR   # RUN_DIR: a path or an s3:// URI
"""

import json
import os
import re
import subprocess
import sys
import time

import pyarrow.fs as pafs
import ray
from ray.cluster_utils import Cluster

from raysae import filesystem

STANDIN = "sae_gpu"  # what real clusters would call GPU


def train_worker_nodes() -> dict[str, str]:
    """{actor id: node IP} of the live Ray Train workers, from the GCS actor table
    (each simulated node has an IP of its own)."""
    table = ray._private.state.state.actor_table(None)
    return {
        a: info["Address"]["IPAddress"]
        for a, info in table.items()
        if info.get("State") == "ALIVE" and "RayTrainWorker" in info.get("ActorClassName", "")
    }


def checkpointed_trials(out: str) -> set[str]:
    """Trials (`t000`, …) with a committed checkpoint: rank 0 writes `raysae/position.json` only
    once Ray Train reports the checkpoint committed (a `checkpoint_*` folder appears in the
    bucket while it is still uploading, before Ray Train would resume from it)."""
    fs, path = filesystem.resolve(filesystem.join(out, "checkpoints"))
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    return {m.group(1) for i in infos if (m := re.search(r"/(t\d{3})/raysae/position\.json$", i.path))}


def sweep(config: str, address: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": address}
    return subprocess.Popen([sys.executable, "-m", "raysae.sweep", config], env=env)


def main() -> None:
    config, out = sys.argv[1], sys.argv[2]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4})
    # Worker nodes get loopback addresses of their own: a driver attaches to a raylet on
    # its own IP, and must attach to the head's, not to a node this script removes.
    addresses = iter(f"127.0.0.{i}" for i in range(2, 10))

    def add_worker():
        return cluster.add_node(num_cpus=2, resources={STANDIN: 1}, node_ip_address=next(addresses))

    workers = [add_worker() for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    summary = {
        "worker_nodes": [w.node_ip_address for w in workers],
        "train_nodes": set(),
        "removed": None,
        "runs": 0,
    }

    proc = sweep(config, cluster.address)
    summary["runs"] += 1
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        placed = train_worker_nodes()
        summary["train_nodes"] |= set(placed.values())
        checkpointed = checkpointed_trials(out) if summary["removed"] is None else set()
        if summary["removed"] is None and len(checkpointed) == 2 and len(set(placed.values())) == 2:
            # both trials are training, one on each worker node, and both have checkpointed:
            # whichever trial loses its node has a checkpoint to resume from
            time.sleep(1.0)  # let Ray Train register the checkpoint it is writing
            victim = next(w for w in workers if w.node_ip_address in placed.values())
            summary["removed"] = victim.node_ip_address
            cluster.remove_node(victim, allow_graceful=False)
            workers.remove(victim)
            workers.append(add_worker())  # the autoscaler's part
            summary["worker_nodes"].append(workers[-1].node_ip_address)
        time.sleep(0.2)
    proc.wait(timeout=max(1, deadline - time.monotonic()))
    summary["first_exit"] = proc.returncode
    if proc.returncode != 0:  # a trial did not survive: resume with the same command
        proc = sweep(config, cluster.address)
        summary["runs"] += 1
        proc.wait(timeout=600)
    summary["exit"] = proc.returncode
    summary["train_nodes"] = sorted(summary["train_nodes"])
    ray.shutdown()
    cluster.shutdown()
    print("SUMMARY " + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
