"""MLflow as its UI expects, against a real SQLite store: the experiment's kind, each SAE's tags
and `config.yaml`, curves indexed by optimizer step with `tokens` beside them, final metrics once."""

from pathlib import Path

import pytest
import yaml

from raysae.config import load_config
from raysae.run_dir import RunDir, sae_ids, write_config
from raysae.sweep.trials import point_config, trial_groups
from raysae.sweep.tuner import _parent_run
from raysae.tracking import EXPERIMENT_KIND, Tracker, mlflow_experiment, swept_values

BATCH, LOG_EVERY, STEPS = 256, 4, 10
FINAL = {
    "fvu": 0.25,
    "mse": 0.5,
    "l0": 8.0,
    "ce_loss_recovered": 0.9,
    "tokens": STEPS * BATCH,
    "seconds": 3.0,
}


def config(tmp_path: Path, *overrides: str):
    return load_config(
        None,
        [
            "name=tracked",
            f"output_dir={tmp_path / 'runs'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"train.batch_size={BATCH}",
            "sweep.search_space={sae.k: {grid: [8, 16]}, sae.architecture: {grid: [topk, batchtopk]}}",
            *overrides,
        ],
    )


def train_one(tracker: Tracker, *, steps: int = STEPS) -> None:
    """What the Ray Train worker logs for one SAE: train curves every LOG_EVERY steps, an
    evaluation halfway, the final metrics at the last step."""
    for step in range(1, steps + 1):
        if step % LOG_EVERY == 0:
            tracker.log_metrics(0, {"train/loss": 1.0 / step}, step, step * BATCH)
        if step == steps // 2:
            tracker.log_metrics(0, {"eval/fvu": 0.5}, step, step * BATCH)
    tracker.finish(0, FINAL, steps, sae_dir=None)


@pytest.fixture
def sweep_runs(tmp_path):
    """A sweep's parent run (as the tuner makes it) and one tracked SAE per point, each trained
    then rerun: a rerun of a finished training trains no further but evaluates and finishes again."""
    from mlflow import MlflowClient

    cfg = config(tmp_path)
    run = RunDir.of(cfg).absolute()
    write_config(cfg, run.root)
    client, parent_id = _parent_run(cfg, run, {}, n_trials=4)
    children = {}
    for index, group in enumerate(trial_groups(cfg)):
        members = [point_config(cfg, p) for p in group]
        ids = sae_ids(cfg.name, f"t{index:03d}", len(members))
        state = run.path(f"checkpoints/t{index:03d}/raysae")
        train_one(Tracker(members, ids, state, parent_run_id=parent_id))
        tracker = Tracker(members, ids, state, parent_run_id=parent_id)  # the rerun: the same runs
        tracker.finish(0, FINAL, STEPS, sae_dir=None)
        children[ids[0]] = (group[0], tracker.run_ids[0])
    return cfg, MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), parent_id, children


def test_the_experiment_is_a_training_experiment(sweep_runs, tmp_path):
    cfg, client, _, _ = sweep_runs
    assert EXPERIMENT_KIND == ("mlflow.experimentKind", "custom_model_development")
    experiment = client.get_experiment_by_name("tracked")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # An experiment made before raysae tagged its kind gets the tag when next used.
    client.create_experiment("older", artifact_location=(tmp_path / "older").as_uri())
    _, older = mlflow_experiment(
        cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"experiment": "older"})})
    )
    assert client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"


def test_each_sae_run_is_tagged_with_its_swept_values_and_holds_its_config(sweep_runs, tmp_path):
    _, client, parent_id, children = sweep_runs
    assert len(children) == 4
    for sae_id, (point, run_id) in children.items():
        run = client.get_run(run_id)
        tags = run.data.tags
        assert tags["raysae.sae_id"] == sae_id and tags["mlflow.parentRunId"] == parent_id
        assert tags["raysae.architecture"] == point["sae.architecture"]
        assert tags["sae.architecture"] == point["sae.architecture"] and tags["sae.k"] == str(point["sae.k"])
        assert run.info.status == "FINISHED"
        saved = yaml.safe_load(
            Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path))).read_text()
        )
        assert (
            saved["sae"]["k"] == point["sae.k"] and saved["sae"]["architecture"] == point["sae.architecture"]
        )
        assert saved["sweep"]["search_space"] == {}  # the SAE's own config, with its point's values
    sweep_config = {a.path for a in client.list_artifacts(parent_id)}
    assert "config.yaml" in sweep_config


def test_curves_are_indexed_by_optimizer_step_with_tokens_beside_them(sweep_runs):
    _, client, _, children = sweep_runs
    for _, run_id in children.values():
        assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [4, 8]
        tokens = {(m.step, m.value) for m in client.get_metric_history(run_id, "tokens")}
        assert tokens == {(4, 4 * BATCH), (5, 5 * BATCH), (8, 8 * BATCH), (STEPS, STEPS * BATCH)}
        assert [m.step for m in client.get_metric_history(run_id, "eval/fvu")] == [5]


def test_final_metrics_are_logged_once_at_the_last_step(sweep_runs):
    _, client, _, children = sweep_runs
    for _, run_id in children.values():
        for key in ("fvu", "mse", "l0", "ce_loss_recovered", "seconds"):
            history = client.get_metric_history(run_id, key)
            assert [(m.step, m.value) for m in history] == [(STEPS, FINAL[key])], key
        tokens_at_end = [m for m in client.get_metric_history(run_id, "tokens") if m.step == STEPS]
        assert len(tokens_at_end) == 1


def test_a_population_tags_what_differs_between_its_members(tmp_path):
    cfg = config(tmp_path, "sweep.search_space={}")
    members = [
        cfg.model_copy(update={"sae": cfg.sae.model_copy(update={"k": k, "l1_coefficient": 1.0})})
        for k in (4, 8)
    ]
    assert swept_values(members, []) == [{"sae.k": "4"}, {"sae.k": "8"}]
    assert swept_values(members, ["train.lr"]) == [
        {"train.lr": str(cfg.train.lr), "sae.k": "4"},
        {"train.lr": str(cfg.train.lr), "sae.k": "8"},
    ]
