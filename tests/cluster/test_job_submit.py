"""The sweep as users run it on a cluster: `ray start --head` + `ray job submit --working-dir .`,
on this machine, loopback only, with token authentication set explicitly."""

import csv
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from raysae.run_dir import write_config
from raysae.store.embedded import free_port

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent


def ray_env(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # the job's `python` is this venv's
    if token is not None:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    return env


@pytest.fixture(scope="module")
def head():
    """A one-node Ray cluster of its own (not the tests' shared Ray), stopped by process
    group at the end — never `ray stop`, which would end every Ray on the machine."""
    token = secrets.token_hex(16)
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    gcs, dashboard = free_port(), free_port()
    # every port of its own: the tests' shared Ray already holds the default agent/metrics ports
    ports = [
        f"--{name}={free_port()}"
        for name in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "metrics-export-port",
            "runtime-env-agent-port",
            "ray-client-server-port",
        )
    ]
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            *ports,
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--num-cpus=4",
            "--num-gpus=0",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        env=ray_env(token),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        ready = urllib.request.Request(f"{address}/api/version", headers={"Authorization": f"Bearer {token}"})
        while True:
            try:
                urllib.request.urlopen(ready, timeout=2)
                break
            except Exception as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    os.killpg(proc.pid, signal.SIGKILL)
                    raise RuntimeError(
                        f"ray start: no dashboard at {address} ({exc}): "
                        f"{proc.communicate(timeout=30)[0][-3000:]}"
                    ) from None
                time.sleep(1)
        yield address, token
    finally:
        stop_group(proc)
        shutil.rmtree(temp, ignore_errors=True)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the cluster's process group, then SIGKILL whatever is left of it."""
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(2)  # children outlive `ray start` by a moment


def test_sweep_runs_as_a_submitted_job(head, train_config, tmp_path):
    address, token = head
    cfg = train_config(
        "jobsweep", "sweep.search_space={train.lr: {grid: [0.003, 0.001]}}", "analysis.which=best"
    )
    config_file = write_config(cfg, tmp_path)
    for _ in range(30):  # the head's job agent starts a little after its dashboard answers
        submit = subprocess.run(
            [
                str(BIN / "ray"),
                "job",
                "submit",
                "--address",
                address,
                "--working-dir",
                str(ROOT),
                "--",
                "python",
                "-m",
                "raysae.sweep",
                str(config_file),
            ],
            env=ray_env(token),
            capture_output=True,
            text=True,
            timeout=900,
        )
        if "No available agent to submit job" not in submit.stderr:
            break
        time.sleep(2)
    assert submit.returncode == 0, submit.stdout[-4000:] + submit.stderr[-2000:]
    assert "succeeded" in submit.stdout.lower()
    out = Path(cfg.output_dir) / "jobsweep"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(r["sae_id"] for r in rows) == ["jobsweep/t000", "jobsweep/t001"]
    assert all(r["status"] == "finished" for r in rows)
    assert (out / "pareto.png").exists() and (out / "store" / "db").is_dir()


def test_the_cluster_refuses_a_client_without_the_token(head):
    address, _ = head
    refused = subprocess.run(
        [str(BIN / "ray"), "job", "list", "--address", address],
        env=ray_env("not-the-token"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "token authentication is enabled" in refused.stderr.lower()
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(
                urllib.request.Request(f"{address}/api/jobs/", headers=headers), timeout=10
            )
        assert denied.value.code in (401, 403)
