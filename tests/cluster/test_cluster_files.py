"""cluster/: the `ray up` config passes Ray's own validation; the RayJob and README hang together."""

import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
CLUSTER = ROOT / "cluster"


@pytest.fixture(scope="module")
def gpu_config():
    return yaml.safe_load((CLUSTER / "gpu.yaml").read_text())


def test_gpu_yaml_passes_rays_cluster_config_validation(gpu_config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(copy.deepcopy(gpu_config))  # the schema `ray up` checks, before and after defaults
    prepared = prepare_config(copy.deepcopy(gpu_config))
    validate_config(prepared)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head" and types["gpu_worker"]["max_workers"] == 8
    assert "g5" in types["gpu_worker"]["node_config"]["InstanceType"]
    assert (
        prepared["docker"]["image"].startswith("rayproject/ray:2.60.0-")
        and "gpu" in prepared["docker"]["image"]
    )


def test_a_misspelled_key_fails_the_same_validation(gpu_config):
    from ray.autoscaler._private.util import validate_config

    bad = copy.deepcopy(gpu_config)
    bad["available_node_types"]["gpu_worker"]["max_wrkers"] = 2
    with pytest.raises(Exception, match="max_wrkers"):
        validate_config(bad)


def test_nodes_share_the_storage_the_sweep_is_pointed_at(gpu_config):
    mounts = " ".join(gpu_config["initialization_commands"])
    assert "/mnt/raysae" in mounts and "-v /mnt/raysae:/mnt/raysae" in gpu_config["docker"]["run_options"]
    assert gpu_config["file_mounts"] == {"~/raysae": "."}
    assert any("constraints.txt" in c and "raysae[store]" in c for c in gpu_config["setup_commands"])
    readme = (CLUSTER / "README.md").read_text()
    assert "--set activations.cache_dir=/mnt/raysae/cache --set output_dir=/mnt/raysae/runs" in readme


def test_rayjob_runs_the_sweep_with_gpus_on_workers_only():
    job = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].startswith("raysae sweep topk")
    spec = job["spec"]["rayClusterSpec"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    workers = spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert (
        "nvidia.com/gpu" not in head["resources"]["limits"]
        and spec["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    )
    assert workers["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for c in (head, workers):
        assert {"name": "shared", "mountPath": "/mnt/raysae"} in c["volumeMounts"]
        assert any(
            e["name"] == "MONGODB_URI" and "secretKeyRef" in e["valueFrom"]
            for e in c["env"]
            if "valueFrom" in e
        )
    assert (
        "/mnt/raysae/cache" in job["spec"]["entrypoint"] and "/mnt/raysae/runs" in job["spec"]["entrypoint"]
    )


def test_every_file_the_cluster_commands_name_exists():
    text = "\n".join(
        (CLUSTER / f).read_text() for f in ("README.md", "gpu.yaml", "rayjob.yaml", "Dockerfile")
    )
    named = set(re.findall(r"\b((?:cluster|raysae/configs)/[\w.-]+\.(?:yaml|md)|cluster/Dockerfile)\b", text))
    assert {
        "cluster/gpu.yaml",
        "cluster/rayjob.yaml",
        "raysae/configs/topk.yaml",
        "cluster/Dockerfile",
    } <= named
    for path in named:
        assert (ROOT / path).is_file(), path
    for line in (CLUSTER / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY"):
            for src in line.split()[2:-1]:
                assert (ROOT / src).exists(), src
