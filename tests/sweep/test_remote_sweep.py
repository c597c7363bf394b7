"""A sweep whose run directory and activation cache are on S3 (a local moto S3): Tune, Train
checkpoints, SAEs, tables and plot all land in the bucket, nothing in a local run folder, and
rerunning the command resumes from the bucket instead of training again."""

import pytest

from raysae import filesystem
from raysae.checkpoint import load_sae, read_json
from raysae.config import ConfigError
from raysae.config.resolve import check_run_storage
from raysae.run_dir import RunDir, read_results, write_config
from raysae.store import EmbeddedServer, Store
from raysae.sweep.__main__ import main as sweep_main


@pytest.fixture(scope="module")
def remote_sweep(train_config, new_bucket, tmp_path_factory):
    bucket, local = new_bucket("sweep"), tmp_path_factory.mktemp("remote-sweep")
    with EmbeddedServer(local / "store") as server:
        cfg = train_config(
            "s3sweep",
            f"output_dir={bucket}/runs",
            f"activations.cache_dir={bucket}/cache",
            f"tracking.uri=sqlite:///{local / 'mlflow.db'}",
            f"store.uri={server.uri}",
            "sweep.search_space={sae.k: {grid: [2, 4]}}",
            "analysis.which=all",
            "train.total_tokens=4096",
            "train.ce_contexts=0",
        )
        config_file = write_config(cfg, local)
        code = sweep_main([config_file])
        yield cfg, code, f"{bucket}/runs/s3sweep", config_file, server.uri


def test_every_run_file_is_in_the_bucket(remote_sweep, train_config):
    cfg, code, out, _, _ = remote_sweep
    assert code == 0
    assert {"config.yaml", "results.csv", "pareto.png", "sweep.json"} <= set(filesystem.list_names(out))
    rows = read_results(filesystem.join(out, "results.csv"))
    assert [r["sae_id"] for r in rows] == ["s3sweep/t000", "s3sweep/t001"]
    for row in rows:
        sae_dir = filesystem.join(out, "saes", row["sae_id"])
        assert row["status"] == "finished"
        assert read_json(filesystem.join(sae_dir, "raysae.json"))["metrics"]["fvu"] == pytest.approx(
            row["fvu"]
        )
        assert load_sae(sae_dir).d_sae == 128
        position = filesystem.join(out, "checkpoints", row["sae_id"].split("/")[1], "raysae", "position.json")
        assert read_json(position)["tokens"] == 4096
    assert filesystem.exists(filesystem.join(out, "tune"))
    local_runs = train_config("s3sweep").output_dir  # where the run would be without the URI
    assert not filesystem.exists(filesystem.join(local_runs, "s3sweep"))


def test_mlflow_artifacts_sit_beside_the_local_database(remote_sweep, tmp_path):
    import json

    from mlflow import MlflowClient

    cfg, _, out, _, _ = remote_sweep
    client = MlflowClient(cfg.tracking.uri)
    parent = json.loads(filesystem.read_bytes(filesystem.join(out, "sweep.json")))["mlflow_parent_run_id"]
    local = cfg.tracking.uri.removeprefix("sqlite:///").rsplit("/", 1)[0]
    assert client.get_run(parent).info.artifact_uri.startswith(f"file://{local}/mlartifacts/")
    assert {a.path for a in client.list_artifacts(parent)} >= {"results.csv", "pareto.png"}
    assert client.download_artifacts(parent, "results.csv", str(tmp_path)) and (
        tmp_path / "results.csv"
    ).read_bytes() == filesystem.read_bytes(filesystem.join(out, "results.csv"))


def test_the_store_points_at_the_bucket(remote_sweep):
    from raysae.dashboard import queries

    cfg, _, out, _, uri = remote_sweep
    with Store(uri, cfg.store.database) as store:
        docs = {d["_id"]: d for d in store.saes.find({"name": "s3sweep"})}
        assert sorted(docs) == ["s3sweep/t000", "s3sweep/t001"]
        for sae_id, doc in docs.items():
            assert doc["checkpoint"] == filesystem.join(out, "saes", sae_id) and doc["run_dir"] == out
            assert doc["sweep"] == "s3sweep"
            assert store.features.count_documents({"sae_id": sae_id}) == 128
        assert queries.pareto_png(store, "s3sweep") == filesystem.read_bytes(
            filesystem.join(out, "pareto.png")
        )


def test_rerunning_resumes_from_the_bucket(remote_sweep):
    _, _, out, config_file, _ = remote_sweep
    records = {i: filesystem.join(out, "saes", "s3sweep", f"t00{i}", "raysae.json") for i in range(2)}
    before = {i: filesystem.read_bytes(f) for i, f in records.items()}
    assert sweep_main([config_file]) == 0
    assert {i: filesystem.read_bytes(f) for i, f in records.items()} == before  # restored, not trained again


def test_a_run_in_a_bucket_needs_servers_for_mlflow_and_the_store(train_config, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MONGODB_URI", raising=False)
    cfg = train_config("nowhere", "output_dir=s3://some-bucket/runs")
    with pytest.raises(ConfigError) as err:
        check_run_storage(cfg, RunDir.of(cfg).store)
    assert [p for p, _ in err.value.problems] == ["tracking.uri", "store.uri"]
    check_run_storage(
        train_config("nowhere", "output_dir=s3://some-bucket/runs", "tracking.uri=http://mlflow:5000")
    )
