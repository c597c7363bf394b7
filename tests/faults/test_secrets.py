"""Planted passwords in `store.uri` and `tracking.uri` appear nowhere a run writes.

A real sweep (one trial, trained on Ray Train under Tune, analysed into the store) runs
as a command against a real MLflow tracking server and a real password-protected
Mongo-wire server (the embedded one, with a user created on it). Then every byte of
the run directory, the cache, the MLflow server's database and artifacts, the store's
documents, the command's output and the Ray session's logs is searched for the
passwords. The passwords hold an `@`, so redaction up to the first `@` would leak their tail.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from raysae.config import dump_config
from raysae.store.embedded import EmbeddedServer, free_port

STORE_PASSWORD = "st@rePW7x"  # in the URI percent-encoded, as MongoDB requires: st%40rePW7x
TRACKING_PASSWORD = "tr@ckPW9x"  # in the URI as it is: the userinfo runs to the last `@`
NEEDLES = [b"rePW7x", b"ckPW9x", b"st%40re", b"st@re", b"tr@ck"]
"""Any trace of either password: its tail after the `@`, and its head in both spellings."""


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on a free loopback port: (url, the folder of its data)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=(root / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers are killed with it, as a group
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (root / "server.log").read_text()
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).close()
                # Its first API call sets up the database; made here, so that the command's
                # bounded up-front check (raysae.preflight) meets a warm server.
                search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
                urllib.request.urlopen(search, timeout=60).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the MLflow server did not start within 90 s"
                time.sleep(0.5)
        yield url, root
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture(scope="module")
def password_store(tmp_path_factory):
    """A Mongo-wire server that refuses a wrong password: the URI (with the password) of its user."""
    import pymongo

    with EmbeddedServer(tmp_path_factory.mktemp("password-store")) as server:
        admin = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=10_000)
        admin.admin.command("createUser", "storeuser", pwd=STORE_PASSWORD, roles=["root"])
        admin.close()
        yield f"mongodb://storeuser:st%40rePW7x@127.0.0.1:{server.port}/?directConnection=true&authSource=admin"


def leaks_in(folder: Path) -> list[str]:
    """`file: needle` for every file under `folder` holding a trace of a password."""
    found = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        try:
            data = file.read_bytes()
        except OSError:  # a socket or a file removed meanwhile
            continue
        found += [f"{file}: {needle.decode()}" for needle in NEEDLES if needle in data]
    return found


def ray_session_dir(ray) -> Path:
    return Path(ray._private.worker._global_node.get_session_dir_path())


@pytest.mark.slow
def test_planted_passwords_appear_nowhere(train_config, ray_local, mlflow_server, password_store, tmp_path):
    import pymongo
    from bson import json_util
    from mlflow import MlflowClient

    tracking_url, mlflow_root = mlflow_server
    tracking_uri = tracking_url.replace("http://", f"http://mluser:{TRACKING_PASSWORD}@")
    cfg = train_config(
        "secrets",
        f"store.uri={password_store}",
        f"tracking.uri={tracking_uri}",
        "store.database=raysae_secrets",
        "train.ce_contexts=0",
        "train.total_tokens=4096",
        "train.checkpoint_every_tokens=2048",
        "analysis.n_tokens=96",
    )
    config_file = tmp_path / "secrets.yaml"  # the user's own file holds the passwords, as given
    config_file.write_text(dump_config(cfg, redacted=False))
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MONGODB_URI",
    ):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "raysae.sweep", str(config_file)],
        env=env,
        capture_output=True,
        timeout=400,
        start_new_session=True,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output.decode(errors="replace")[-4000:]

    # The run really went through both servers: an MLflow run with params and the SAE as an
    # artifact, and the SAE's analysis in the password-protected store.
    client = MlflowClient(tracking_url)
    experiment = client.get_experiment_by_name("secrets")
    assert experiment is not None
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert runs["secrets/t000"].data.params["store.uri"].startswith("mongodb://***@127.0.0.1:")
    assert runs["secrets/t000"].data.params["tracking.uri"] == tracking_url.replace("http://", "http://***@")
    # Its config.yaml is among the files scanned for leaks below (the MLflow server's artifacts).
    assert [a.path for a in client.list_artifacts(runs["secrets/t000"].info.run_id)] == ["config.yaml", "sae"]
    store = pymongo.MongoClient(password_store, serverSelectionTimeoutMS=10_000)["raysae_secrets"]
    assert store.saes.find_one({"_id": "secrets/t000"})["analysis"]["finished_at"] is not None
    assert store.features.count_documents({"sae_id": "secrets/t000"}) == 32 * cfg.sae.expansion_factor
    documents = json_util.dumps([list(store[c].find()) for c in store.list_collection_names()]).encode()

    leaks = [f"output: {n.decode()}" for n in NEEDLES if n in output]
    leaks += [f"store documents: {n.decode()}" for n in NEEDLES if n in documents]
    for folder in (
        Path(cfg.output_dir),
        Path(cfg.activations.cache_dir),
        mlflow_root,
        ray_session_dir(ray_local),
    ):
        leaks += leaks_in(folder)
    assert leaks == []
    record = json.loads(
        (Path(cfg.output_dir) / "secrets" / "saes" / "secrets" / "t000" / "raysae.json").read_text()
    )
    assert record["config"]["store"]["uri"].startswith("mongodb://***@127.0.0.1:")


def test_an_unreachable_tracking_server_is_retried_without_its_password(tmp_path):
    """MLflow names the URL of every request it retries: the URL it is given holds no password,
    which travels in MLFLOW_TRACKING_USERNAME/PASSWORD (read back here from MLflow's own creds)."""
    script = f"""
import logging
from raysae.config import load_config
from raysae.tracking import mlflow_client
logging.basicConfig(level=logging.DEBUG)
cfg = load_config(None, ["tracking.uri=http://mluser:{TRACKING_PASSWORD}@127.0.0.1:1", "output_dir={tmp_path}"])
client = mlflow_client(cfg)
creds = client._tracking_client.store.get_host_creds()
print("creds", creds.host, creds.username, creds.password == "{TRACKING_PASSWORD}")
try:
    client.search_experiments()
except Exception as exc:
    print("failed:", exc)
"""
    env = {
        **os.environ,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
    }
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert "creds http://127.0.0.1:1 mluser True" in output  # the credentials still reach MLflow
    assert "failed:" in output and "127.0.0.1:1" in output.split("failed:")[1]
    assert [n.decode() for n in NEEDLES if n in output.encode()] == []
