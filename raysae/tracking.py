"""MLflow tracking: one MLflow run per SAE (logged from Ray Train's rank 0), a sweep's parent run.

The store is `tracking.uri`, else `MLFLOW_TRACKING_URI`, else
`sqlite:///<output_dir>/mlflow.db`; a SQLite store keeps artifacts beside its file
(`<output_dir>/mlartifacts` by default; MLflow 3.13+ refuses the `./mlruns` file
store). An `output_dir` on an object store has no default (SQLite needs a local file).
MLflow run ids are kept in the run's state folder, so a restarted or rerun
training continues the same MLflow runs. Params come from the redacted config, and
a password in the tracking URI never reaches MLflow's URI (which MLflow prints in its
log lines): MLflow gets the URI without `user:password@` and the credentials through
`MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` in this process's environment
(`mlflow_client`, in the driver and in every Ray worker that logs).

What MLflow's UI shows: the experiment is tagged a training experiment (`mlflow.experimentKind`,
so MLflow 3's UI opens it on its runs, not on the GenAI traces page); each SAE's run carries the
tags `raysae.sae_id`, `raysae.architecture` and one tag per swept dotted path (`sae.k`), and the
SAE's resolved `config.yaml`; its curves are indexed by optimizer step, with the tokens seen as
their own metric `tokens`; the final metrics (`fvu`, `l0`, ...) are logged once, at the last step.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from raysae import filesystem
from raysae.config import RaysaeConfig, dump_config, flatten_dotted, redact
from raysae.config.resolve import tracking_credentials, tracking_uri

log = logging.getLogger("raysae.tracking")
RUNS_FILE = "mlflow_runs.json"
CONFIG_ARTIFACT = "config.yaml"
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
"""MLflow 3's experiment type for model training ("Machine learning" in its UI); without it the UI
infers the kind, and an experiment with no runs yet opens on the GenAI traces page."""
SEARCH_SPACE_PARAM = "sweep.search_space."
"""A sweep's parent run has one param per swept path (`sweep.search_space.sae.k`), which is where
the SAEs' runs learn which of their settings were swept (`swept_values`)."""


def log_file(client, run_id: str, location: filesystem.Location) -> None:
    """Log one file of the run directory (local or on an object store) as an artifact."""
    if not filesystem.is_remote(location):
        client.log_artifact(run_id, str(location))
        return
    with tempfile.TemporaryDirectory(prefix="raysae-artifact-") as folder:
        local = Path(folder) / filesystem.parts(location)[-1]
        local.write_bytes(filesystem.read_bytes(location))
        client.log_artifact(run_id, str(local))


def flat_params(cfg: RaysaeConfig) -> dict[str, str]:
    """The config as `section.field` -> string, credentials redacted, population left out."""
    data = redact(cfg.model_dump(mode="json"))
    data["train"].pop("population", None)
    return {
        k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in flatten_dotted(data).items()
    }


def log_batch(
    client,
    run_id: str,
    *,
    metrics: Mapping[str, float] | None = None,
    step: int = 0,
    params: Mapping[str, str] | None = None,
) -> None:
    """Metrics (at `step`) and params of one MLflow run, in batches MLflow accepts."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
    ps = [Param(k, v) for k, v in (params or {}).items()]
    for i in range(0, max(len(ms), len(ps)), 100):  # MLflow's batch limit is 100 params
        client.log_batch(run_id, metrics=ms[i : i + 100], params=ps[i : i + 100])


def search_space_params(cfg: RaysaeConfig) -> dict[str, str]:
    """The sweep's search space as params of its parent run: `sweep.search_space.<path>` -> dimension."""
    return {
        f"{SEARCH_SPACE_PARAM}{path}": json.dumps({dim.kind: dim.values})
        for path, dim in cfg.sweep.search_space.items()
    }


def _value_at(data: Mapping, path: str):
    node = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def swept_values(members: list[RaysaeConfig], swept: list[str]) -> list[dict[str, str]]:
    """Per member, its value (a string, as MLflow tags are) of every swept path: the `swept` paths
    (a sweep's search space) and those whose values differ between the members (a population)."""
    dumps = [redact(m.model_dump(mode="json")) for m in members]
    for d in dumps:
        d["train"].pop("population", None)
    paths = list(dict.fromkeys(swept))
    flats = [flatten_dotted(d) for d in dumps]
    paths += [p for p in flats[0] if p not in paths and any(f.get(p) != flats[0][p] for f in flats[1:])]
    return [
        {p: v if isinstance(v, str) else json.dumps(v) for p in paths for v in [_value_at(d, p)]}
        for d in dumps
    ]


def mlflow_client(cfg: RaysaeConfig):
    """An MlflowClient of the config's tracking store: the URI without userinfo, its credentials
    (if any) in MLflow's environment variables, which MLflow reads at each request."""
    from mlflow import MlflowClient

    credentials = tracking_credentials(cfg)
    if credentials is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = credentials
    return MlflowClient(tracking_uri(cfg))


def mlflow_experiment(cfg: RaysaeConfig):
    """(MlflowClient, experiment id) of the config's experiment, created on first use."""
    uri = tracking_uri(cfg)
    client = mlflow_client(cfg)
    name = cfg.tracking.experiment or cfg.name
    found = client.get_experiment_by_name(name)
    if found is not None:
        if EXPERIMENT_KIND[0] not in found.tags:  # made by an earlier raysae, or by hand: kind unset
            client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
        return client, found.experiment_id
    location = None  # a tracking server keeps artifacts where it is set up to
    if uri.startswith("sqlite:///"):  # beside the database file (by default <output_dir>), not ./mlruns
        location = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    try:
        return client, client.create_experiment(
            name, artifact_location=location, tags=dict([EXPERIMENT_KIND])
        )
    except Exception:  # created meanwhile by a concurrent trial
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return client, found.experiment_id


class Tracker:
    """The MLflow runs of one training job's SAEs (`sae_ids`, in member order)."""

    def __init__(
        self,
        members: list[RaysaeConfig],
        sae_ids: list[str],
        state_dir: filesystem.Location,
        *,
        parent_run_id: str | None = None,
    ):
        base = members[0]
        self.client, experiment_id = mlflow_experiment(base)
        runs_file = filesystem.join(state_dir, RUNS_FILE)
        known = json.loads(filesystem.read_bytes(runs_file)) if filesystem.exists(runs_file) else {}
        swept: list[str] = []
        if parent_run_id and any(sae_id not in known for sae_id in sae_ids):
            params = self.client.get_run(parent_run_id).data.params
            swept = [k.removeprefix(SEARCH_SPACE_PARAM) for k in params if k.startswith(SEARCH_SPACE_PARAM)]
        values = swept_values(members, swept)
        self.run_ids: list[str] = []
        self._tokens_step: dict[int, int] = {}  # the step each member's `tokens` was last logged at
        for cfg, sae_id, mine in zip(members, sae_ids, values, strict=True):
            if sae_id not in known:
                tags = {"raysae.sae_id": sae_id, "raysae.architecture": cfg.sae.architecture, **mine}
                if parent_run_id:
                    tags["mlflow.parentRunId"] = parent_run_id  # shown as a child of the sweep's run
                run = self.client.create_run(experiment_id, run_name=sae_id, tags=tags)
                known[sae_id] = run.info.run_id
                log_batch(self.client, known[sae_id], params=flat_params(cfg))
                self.client.log_text(known[sae_id], dump_config(cfg), CONFIG_ARTIFACT)
            self.run_ids.append(known[sae_id])
        filesystem.write_bytes(runs_file, json.dumps(known, indent=1).encode())
        # debug: each trial's worker would repeat it; the command's summary names the store
        log.debug(
            "MLflow: %s, experiment %r", redact(tracking_uri(base)), base.tracking.experiment or base.name
        )

    def log_metrics(self, member: int, metrics: Mapping[str, float], step: int, tokens: int) -> None:
        """`metrics` at optimizer step `step`, with the tokens seen by then as the metric `tokens`."""
        log_batch(self.client, self.run_ids[member], metrics={**metrics, "tokens": tokens}, step=step)
        self._tokens_step[member] = step

    def finish(
        self,
        member: int,
        metrics: Mapping[str, float],
        step: int,
        *,
        sae_dir: filesystem.Location | None,
        error: str | None = None,
    ) -> None:
        """Final metrics (once, at the last optimizer step `step`), the saved SAE as the `sae`
        artifact, and the run's end status."""
        run_id = self.run_ids[member]
        final = dict(metrics)
        if self._tokens_step.get(member) == step:  # already logged with this step's curves
            final.pop("tokens", None)
        logged = self.client.get_run(run_id).data.metrics
        for key in [k for k in final if k in logged]:
            # A rerun of a finished training evaluates again: its final points are there already.
            if any(m.step == step for m in self.client.get_metric_history(run_id, key)):
                del final[key]
        log_batch(self.client, run_id, metrics=final, step=step)
        if sae_dir is not None:
            with filesystem.local_copy(sae_dir) as local:
                self.client.log_artifacts(run_id, str(local), artifact_path="sae")
        if error:
            self.client.set_tag(run_id, "raysae.error", redact(error)[:5000])
        self.client.set_terminated(run_id, status="FAILED" if error else "FINISHED")
