"""The run directory `<output_dir>/<name>/` (docs/architecture.md, "Run directory"): its
layout (`RunDir`), the ids of the SAEs it holds, and its tables (`config.yaml`, `results.csv`)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from raysae import filesystem
from raysae.config import RaysaeConfig, dump_config, flatten_dotted


class RunDir:
    """Where a run's files are; every part that writes or reads one asks here for the name."""

    CONFIG = "config.yaml"
    """The fully resolved config, credentials redacted."""
    RESULTS = "results.csv"
    """One row per SAE: id, architecture, swept values, metrics, status."""
    PARETO = "pareto.png"
    """A sweep's L0 against FVU (or explained variance) plot."""
    SWEEP_RECORD = "sweep.json"
    """A sweep's trials and MLflow parent run, so a rerun resumes the same sweep."""
    SAES = "saes"
    """`saes/<sae_id>/`: the SAEs in the SAELens format (`raysae.checkpoint`)."""
    STORE = "store"
    """The embedded feature store's data, when no MongoDB is configured."""
    CHECKPOINTS = "checkpoints"
    """Ray Train's checkpoints, one folder per trial (plus our state in `<trial>/raysae/`)."""
    TUNE = "tune"
    """Ray Tune's experiment state (a sweep's)."""
    NEURONPEDIA = "neuronpedia"
    """Neuronpedia exports, one folder per SAE."""

    def __init__(self, root: filesystem.Location):
        self.root = str(root)

    @classmethod
    def of(cls, config: RaysaeConfig) -> RunDir:
        """`<output_dir>/<name>`: a path, or a URI when `output_dir` is one."""
        return cls(filesystem.join(config.output_dir, config.name))

    @classmethod
    def holding(cls, sae_dir: filesystem.Location, sae_id: str) -> RunDir:
        """The run directory of the SAE `sae_id` saved at `sae_dir` (`<run>/saes/<sae_id>`)."""
        return cls(filesystem.parent(sae_dir, len(sae_id.split("/")) + 1))

    def __str__(self) -> str:
        return self.root

    def path(self, *names: str) -> str:
        return filesystem.join(self.root, *names)

    def absolute(self) -> RunDir:
        return RunDir(filesystem.absolute(self.root))

    def sae(self, sae_id: str) -> str:
        return self.path(self.SAES, sae_id)

    @property
    def config(self) -> str:
        return self.path(self.CONFIG)

    @property
    def results(self) -> str:
        return self.path(self.RESULTS)

    @property
    def pareto(self) -> str:
        return self.path(self.PARETO)

    @property
    def sweep_record(self) -> str:
        return self.path(self.SWEEP_RECORD)

    @property
    def store(self) -> str:
        return self.path(self.STORE)

    @property
    def checkpoints(self) -> str:
        return self.path(self.CHECKPOINTS)

    def neuronpedia(self, sae_id: str) -> str:
        return self.path(self.NEURONPEDIA, sae_id.replace("/", "__"))


def sae_ids(name: str, trial: str, k: int) -> list[str]:
    """`<name>/<trial>` for one SAE, `<name>/<trial>/<member>` for a population of `k` (stable, unique)."""
    base = f"{name}/{trial}"
    return [base] if k == 1 else [f"{base}/{i}" for i in range(k)]


def sae_id_of(directory: filesystem.Location) -> str:
    """`<name>/<trial>[/<member>]`: the path below the run directory's `saes/` (else the folder name)."""
    parts = filesystem.parts(directory)
    if RunDir.SAES in parts:
        i = len(parts) - 1 - parts[::-1].index(RunDir.SAES)
        if i < len(parts) - 1:
            return "/".join(parts[i + 1 :])
    return parts[-1]


def resume_record(
    path: filesystem.Location, fresh: Any, *, compared: str | None = None
) -> tuple[Any, list[str]]:
    """What a resumable job recorded when it started, and what changed since.

    The first time, `fresh` (JSON) is written to `path` and returned. Later, the record
    found there is returned with the dotted paths where it differs from `fresh` (only
    under the key `compared`, when given), so the caller can refuse to resume a job
    whose settings changed.
    """
    fresh = json.loads(json.dumps(fresh))  # as it will read back
    if not filesystem.exists(path):
        filesystem.write_bytes(path, json.dumps(fresh, indent=1).encode())
        return fresh, []
    before = json.loads(filesystem.read_bytes(path))
    old, new = (before, fresh) if compared is None else (before.get(compared), fresh.get(compared))
    if old == new:
        return before, []
    a = flatten_dotted(old if isinstance(old, Mapping) else {compared or "record": old})
    b = flatten_dotted(new if isinstance(new, Mapping) else {compared or "record": new})
    return before, sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))


LEADING_COLUMNS = ["sae_id", "architecture"]
METRIC_COLUMNS = [
    "mse",
    "fvu",
    "explained_variance",
    "l0",
    "dead_fraction",
    "ce_loss_recovered",
    "tokens",
    "seconds",
]
MORE_METRIC_COLUMNS = [
    "mse_per_token",
    "explained_variance_saelens",
    "cossim",
    "l2_norm_in",
    "l2_norm_out",
    "l2_ratio",
    "relative_reconstruction_bias",
    "l1",
    "dense_fraction",
    "frac_alive",
    "freq_over_1_percent",
    "freq_over_10_percent",
    "normalized_freq_over_1_percent",
    "normalized_freq_over_10_percent",
    "average_max_encoder_cosine_sim",
    "average_max_decoder_cosine_sim",
    "kl_sae",
]
"""More metrics `evaluate` gives (SAEBench's core set among them): in `results.csv` they come after
`METRIC_COLUMNS` in the order the rows have them, and read back as floats, so a sweep may rank
by any of them."""


def format_results(rows: Iterable[Mapping[str, Any]], columns: Mapping[str, str]) -> str:
    """A fixed-width table of `rows`: `columns` maps a row key to its format spec."""
    header = f"{'sae_id':<24}" + "".join(f"{key:>{max(len(key), 9) + 1}}" for key in columns)
    lines = [header]
    for row in rows:
        cells = "".join(f"{format(row[k], spec):>{max(len(k), 9) + 1}}" for k, spec in columns.items())
        lines.append(f"{row['sae_id']:<24}{cells}")
    return "\n".join(lines)


def summary_table(
    rows: Iterable[Mapping[str, Any]], leading: Mapping[str, str], *, swept: Sequence[str] = ()
) -> str:
    """The terminal summary of finished SAEs: what each is (architecture, the `swept` dotted
    paths' values), the `leading` columns, then L0, dead fraction, CE-loss recovered (when every
    row has it) and seconds."""
    rows = [{**r, **{p: _cell(r.get(p, "")) for p in swept}} for r in rows]
    what = {"architecture": ""} if all("architecture" in r for r in rows) else {}
    columns = {**what, **{p: "" for p in swept}, **leading, "l0": ".1f", "dead_fraction": ".3f"}
    if all("ce_loss_recovered" in r for r in rows):
        columns["ce_loss_recovered"] = ".3f"
    return format_results(rows, {**columns, "seconds": ".1f"})


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_config(config: RaysaeConfig, directory: filesystem.Location) -> str:
    """The fully resolved config, credentials redacted."""
    path = RunDir(directory).config
    filesystem.write_bytes(path, dump_config(config).encode())
    return path


def write_results(rows: Iterable[Mapping[str, Any]], directory: filesystem.Location) -> str:
    """One row per SAE: id and architecture, swept hyperparameters, then the metrics.

    Swept hyperparameters are the dotted config paths (`sae.k`); they go between
    the leading columns and the metrics. Any other column (more metrics, an
    `error`) goes last. Columns keep first-seen order; a value a row lacks is
    left empty.
    """
    rows = list(rows)
    seen: list[str] = []
    for row in rows:
        seen += [k for k in row if k not in LEADING_COLUMNS + METRIC_COLUMNS + seen]
    swept = [k for k in seen if "." in k]
    columns = LEADING_COLUMNS + swept + METRIC_COLUMNS + [k for k in seen if k not in swept]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    path = RunDir(directory).results
    filesystem.write_bytes(path, text.getvalue().encode())
    return path


def read_results(path: filesystem.Location) -> list[dict[str, Any]]:
    """The rows of a `results.csv`, metrics as floats, empty cells left out."""
    text = filesystem.read_bytes(path).decode()
    return [
        {
            k: float(v) if k in METRIC_COLUMNS + MORE_METRIC_COLUMNS else v
            for k, v in row.items()
            if v not in ("", None)
        }
        for row in csv.DictReader(io.StringIO(text, newline=""))
    ]


LOCK = ".lock"
"""`<run>/.lock`: who holds the run directory (PID, host, command), flock-ed while it runs."""


class RunDirBusy(ValueError):
    """Another live process holds the run directory."""


@contextlib.contextmanager
def hold_run_dir(run: RunDir, command: str) -> Iterator[None]:
    """Hold `run` for this process while the block runs: an exclusive `flock` on `<run>/.lock`,
    which the kernel drops when the holder ends however it ends, so a killed holder's lock is
    simply taken over. A second holder is refused with `RunDirBusy` naming the first one's PID.

    An object-store run directory has no locks: it is not held (one command at a time there
    is the user's to keep), which is logged.
    """
    if filesystem.is_remote(run.root):
        logging.getLogger("raysae.run").warning(
            "%s is on an object store, which has no locks: run one command at a time on it", run
        )
        yield
        return
    import fcntl

    path = Path(run.root) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirBusy(f"{run} is in use by {_holder(path)}; wait for it to end, or stop it") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


def _holder(path: Path) -> str:
    """'PID 123 on host (python -m raysae.sweep …)' from the lock file (the holder writes it just
    after taking the lock, so a second reader may find it empty for an instant)."""
    for _ in range(20):
        try:
            holder = json.loads(path.read_text() or "null")
        except (OSError, json.JSONDecodeError):
            holder = None
        if holder:
            return f"PID {holder['pid']} on {holder['host']} ({holder['command']})"
        time.sleep(0.05)
    return "another process"
