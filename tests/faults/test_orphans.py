"""No process outlives its command: the browser, `analyze` and a sweep, ended by real signals,
leave none of their processes (embedded store server, Ray's) behind, and the next start works.

Other Ray clusters may run on the machine: a command's processes are told apart by the PID tree
recorded before the signal and by a folder unique to the test in their command lines
(the store's data folder; the command's own RAY_TMPDIR), never by a process name alone.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import torch

from raysae import build_sae
from raysae.checkpoint import save_sae
from raysae.run_dir import RunDir, write_config
from raysae.store import EmbeddedServer, Store
from tests.conftest import start_browser

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("MONGODB_URI")), reason="the embedded store server is one of the processes checked"
)


def processes_mentioning(marker: str) -> list[psutil.Process]:
    """Live processes with `marker` (a folder unique to the test) in their command line."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and any(marker in a for a in p.info["cmdline"] or []):
            found.append(p)
    return found


def tree(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def left_behind(recorded: list[psutil.Process], marker: str, timeout_s: float = 30.0) -> list[str]:
    """What of `recorded` (and anything mentioning `marker`) is still alive after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in recorded if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        alive += [p for p in processes_mentioning(marker) if p not in alive]
        if not alive or time.monotonic() > deadline:
            return [f"{p.pid} {' '.join(p.cmdline())[:160]}" for p in alive if p.is_running()]
        time.sleep(0.25)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_the_browser_leaves_nothing_behind(browsed_run, sig):
    cfg, _, folder = browsed_run
    marker = str(folder.resolve() / "db")
    proc, url = start_browser(folder, cfg.store.database)
    try:
        assert "browse/t001" in urllib.request.urlopen(url, timeout=20).read().decode()
        recorded = tree(proc.pid)
        assert [p for p in recorded if marker in p.cmdline()], "no embedded store server under the browser"
        started = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
        left = left_behind(recorded, marker)
        print(f"\nbrowser {sig.name}: exit {code}, all processes gone in {time.monotonic() - started:.2f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 0)
    assert not left, f"left behind by the browser after {sig.name}: {left}"
    again, url = start_browser(folder, cfg.store.database)  # the store is free again
    try:
        assert "browse/t001" in urllib.request.urlopen(url, timeout=20).read().decode()
    finally:
        again.send_signal(signal.SIGINT)
        again.wait(timeout=30)
    assert again.returncode == 0 and not processes_mentioning(marker)


@pytest.fixture
def own_ray_tmpdir():
    """A short RAY_TMPDIR of its own (Ray's socket paths must stay under 107 characters)."""
    folder = tempfile.mkdtemp(prefix="rsorph-", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def command_env(ray_tmpdir: str) -> dict[str, str]:
    """The environment of a command that starts its own local Ray, in `ray_tmpdir`."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_TMPDIR": ray_tmpdir, "PYTHONUNBUFFERED": "1"}


def wait_for(what: str, condition, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{what} did not happen (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


RAY_AGENTS_LINGER_S = 90.0
"""After its raylet dies, Ray's DashboardAgent and RuntimeEnvAgent exit only once their report
to the (dead) GCS times out: 60 s, fixed in ray._private.utils.publish_error_to_driver."""


@pytest.mark.slow
# SIGTERM and SIGHUP unwind through raysae.cli.run_main as in the browser's test; SIGKILL is the
# case only the kernel tie (and Ray's own fate-sharing) covers. SIGTERM passes too (exit 130).
@pytest.mark.parametrize("sig", [signal.SIGKILL], ids=lambda s: s.name)
def test_analyze_killed_mid_write_leaves_nothing_behind_and_the_previous_analysis(
    train_config, tmp_path, own_ray_tmpdir, sig
):
    """`python -m raysae.analyze` ended while it writes a re-analysis: its store server, its
    Ray and its actors end with it, and the store still shows the previous analysis, whole."""
    name = f"orphans-{sig.name.lower()}"
    cfg = train_config(name, "sae.expansion_factor=32", "store.batch_size=8", "analysis.actors.num=1")
    sae_id = f"{name}/t000"
    torch.manual_seed(0)
    sae = build_sae(cfg.sae, 32)
    run = RunDir.of(cfg)
    sae_dir = save_sae(sae, run.sae(sae_id), config=cfg, record={"metrics": {"fvu": 0.5, "l0": 4.0}})
    folder = Path(run.store)
    previous = {"_id": sae_id, "d_sae": sae.d_sae, "analysis": {"generation": "previous", "finished_at": 1}}
    with EmbeddedServer(folder) as srv, Store(srv.uri, cfg.store.database) as store:
        store.ensure_indexes()  # a complete earlier analysis of this SAE
        store.features.insert_many(
            [{"sae_id": sae_id, "generation": "previous", "index": i} for i in range(sae.d_sae)]
        )
        store.put_sae(previous)
    config_file = write_config(cfg, tmp_path)
    log = tmp_path / "analyze.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raysae.analyze", str(config_file), "--sae", str(sae_dir)],
            env=command_env(own_ray_tmpdir),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for("the store line", lambda: "store: embedded" in log.read_text(), proc, 120, log)
        port = int(re.search(r"127\.0\.0\.1:(\d+)", log.read_text()).group(1))
        with Store(f"mongodb://127.0.0.1:{port}/?directConnection=true", cfg.store.database) as watcher:
            new = {"sae_id": sae_id, "generation": {"$ne": "previous"}}
            wait_for(
                "the re-analysis writing", lambda: watcher.features.count_documents(new) > 0, proc, 240, log
            )
            recorded = tree(proc.pid)
            commands = [" ".join(p.cmdline()) for p in recorded]
            started = time.monotonic()
            proc.send_signal(sig)
        code = proc.wait(timeout=60)
        server_left = left_behind([], str(folder.resolve() / "db"), 15)
        server_s = time.monotonic() - started
        left = left_behind(recorded, own_ray_tmpdir, RAY_AGENTS_LINGER_S) + server_left
        print(
            f"\nanalyze {sig.name}: exit {code}, store server gone in {server_s:.2f} s, all "
            f"{len(recorded)} processes in {time.monotonic() - started:.2f} s"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert any("raylet" in c and own_ray_tmpdir in c for c in commands), f"no Ray of its own: {commands}"
    assert any(str(folder.resolve()) in c for c in commands), "no embedded store server under analyze"
    assert not left, f"left behind by analyze after {sig.name}: {left}"
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 130 and "interrupted (SIGTERM); rerunning the same command resumes" in output
        assert "Traceback" not in output
    with EmbeddedServer(folder) as srv, Store(srv.uri, cfg.store.database) as store:  # the next start works
        assert store.saes.find_one({"_id": sae_id}) == previous
        shown = store.features.find({"sae_id": sae_id, "generation": "previous"}, {"index": 1})
        assert sorted(d["index"] for d in shown) == list(range(sae.d_sae))


@pytest.mark.slow
def test_a_sweep_killed_mid_training_leaves_nothing_behind(train_config, tmp_path, own_ray_tmpdir):
    cfg = train_config(
        "orphansweep",
        "sweep.search_space={sae.k: {grid: [2, 4]}}",
        "sweep.max_concurrent_trials=1",
        "train.ce_contexts=0",
    )
    run = Path(RunDir.of(cfg).root)
    checkpointed = run / "checkpoints" / "t000" / "raysae" / "position.json"
    log = tmp_path / "sweep.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raysae.sweep", str(write_config(cfg, tmp_path))],
            env=command_env(own_ray_tmpdir),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for("the first trial's first checkpoint", checkpointed.exists, proc, 300, log)
        recorded = tree(proc.pid)
        commands = [" ".join(p.cmdline()) for p in recorded]
        started = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=60)
        left = left_behind(recorded, own_ray_tmpdir, RAY_AGENTS_LINGER_S)
        left += left_behind([], str(run.resolve()), 0)
        print(f"\nsweep SIGKILL: all {len(recorded)} processes gone in {time.monotonic() - started:.2f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == -signal.SIGKILL
    assert any("raylet" in c and own_ray_tmpdir in c for c in commands), f"no Ray of its own: {commands}"
    assert any("ray::" in c for c in commands), f"no Ray worker seen: {commands}"
    assert not left, f"left behind by the sweep after SIGKILL: {left}"
