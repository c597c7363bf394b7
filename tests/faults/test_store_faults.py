"""The store's faults, with the real embedded server: killed under an analysis, killed under the
browser, a re-analysis that fails half-way, a folder another server holds, a start that fails."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import torch

from raysae import build_sae
from raysae.analysis import analyze
from raysae.checkpoint import save_sae
from raysae.dashboard import queries
from raysae.run_dir import RunDir
from raysae.store import EmbeddedServer, Store, StoreError
from raysae.store.embedded import free_port, server_executable
from tests.conftest import start_browser

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("MONGODB_URI")), reason="these faults are the embedded server's"
)

SAE_ID = "storefaults/t000"
D_SAE = 128  # sae.expansion_factor=4 of d_model 32; store.batch_size=16: 8 batches


def store_servers(folder: Path) -> list[psutil.Process]:
    """The live secantusd-py processes serving `folder` (found by the folder in their command line)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if p.info["status"] != psutil.STATUS_ZOMBIE and str(folder.resolve() / "db") in cmd:
            found.append(p)
    return found


def wait_gone(pids, timeout_s: float = 20.0) -> list[int]:
    """The pids still alive (zombies count as gone) after waiting up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.fixture(scope="module")
def sae_run(train_config):
    """A config with an embedded store under its run directory, and one saved SAE to analyze."""
    cfg = train_config(
        "storefaults", "store.batch_size=16", "store.retry_seconds=30", "analysis.actors.num=1"
    )
    torch.manual_seed(0)
    sae = build_sae(cfg.sae, 32)
    with torch.no_grad():
        sae.W_enc.normal_(0, 0.3)
    run = RunDir.of(cfg)
    sae_dir = save_sae(sae, run.sae(SAE_ID), config=cfg, record={"metrics": {"fvu": 0.5, "l0": 4.0}})
    return cfg, sae_dir, Path(run.store)


def read_back(cfg, folder: Path):
    """(the SAE document, its features read the way the browser reads them, all feature documents)."""
    with EmbeddedServer(folder) as srv, Store(srv.uri, cfg.store.database) as s:
        sae = s.saes.find_one({"_id": SAE_ID})
        shown = [queries.get_feature(s, sae, i) for i in range(D_SAE)] if sae else []
        return sae, shown, list(s.features.find({"sae_id": SAE_ID}, {"_id": 0, "index": 1, "generation": 1}))


@pytest.fixture(scope="module")
def killed_under_analyze(sae_run):
    """The analysis of the SAE, with its store server SIGKILLed after 3 of 8 batches."""
    cfg, sae_dir, folder = sae_run
    killed: dict = {}

    def kill_the_server(written):
        if written == 48 and not killed:
            (server,) = store_servers(folder)
            server.send_signal(signal.SIGKILL)
            killed.update(pid=server.pid, at=time.monotonic())
        elif killed and "next_batch_s" not in killed:
            killed["next_batch_s"] = time.monotonic() - killed["at"]

    (summary,) = analyze(cfg, [sae_dir], on_batch=kill_the_server)
    return summary, killed


def test_store_killed_under_analyze_is_restarted_and_the_sae_ends_whole(sae_run, killed_under_analyze):
    cfg, _, folder = sae_run
    summary, killed = killed_under_analyze
    assert summary["features"] == D_SAE and killed
    print(f"\nstore SIGKILLed under analyze: next batch written {killed['next_batch_s']:.2f} s later")
    assert killed["next_batch_s"] < 15, "the dead server was not restarted at once"
    assert not wait_gone([killed["pid"]], 0) and not store_servers(folder)  # the restarted one stopped too
    sae, shown, docs = read_back(cfg, folder)
    assert sae["analysis"]["finished_at"] is not None
    assert [d["index"] for d in shown] == list(range(D_SAE))
    assert sorted(d["index"] for d in docs) == list(range(D_SAE))  # none lost, none twice
    assert {d["generation"] for d in docs} == {sae["analysis"]["generation"]}


def test_a_failed_reanalysis_leaves_the_previous_one_readable(sae_run, killed_under_analyze):
    cfg, sae_dir, folder = sae_run
    before, shown_before, _ = read_back(cfg, folder)

    def interrupt(written):
        if written == 64:  # half of the new documents are in: Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the KeyboardInterrupt is raised here

    # Ctrl-C as a command sees it: Python's own SIGINT handler (an earlier test in this process
    # may have run Ray Train's fit() in the main thread, which leaves its SIGINT handler installed).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            analyze(cfg, [sae_dir], on_batch=interrupt)
    finally:
        signal.signal(signal.SIGINT, previous)
    after, shown_after, docs = read_back(cfg, folder)
    assert after == before  # the SAE document still names the complete analysis, finished
    assert shown_after == shown_before and len(shown_after) == D_SAE
    assert len(docs) == D_SAE + 64  # the half-written generation is there, but not shown

    analyze(cfg, [sae_dir])  # the rerun replaces both, exactly once
    final, shown, docs = read_back(cfg, folder)
    assert final["analysis"]["generation"] not in (None, before["analysis"]["generation"])
    assert sorted(d["index"] for d in docs) == list(range(D_SAE))
    assert [d["index"] for d in shown] == list(range(D_SAE))


def test_the_browser_recovers_when_its_store_dies(browsed_run):
    cfg, _, folder = browsed_run
    proc, url = start_browser(folder, cfg.store.database)
    try:
        (first,) = store_servers(folder)
        assert first.ppid() == proc.pid
        first.send_signal(signal.SIGKILL)
        assert not wait_gone([first.pid], 10)  # a zombie until the browser reaps it
        started = time.monotonic()
        try:
            page = urllib.request.urlopen(f"{url}/sae/browse/t001/feature/3", timeout=30).read().decode()
        except urllib.error.HTTPError as exc:
            pytest.fail(f"the page after the store died: {exc.code} {exc.read().decode()[-1500:]}")
        print(f"\nbrowser's store SIGKILLed: the next page answered in {time.monotonic() - started:.2f} s")
        assert 'id="feature-index">3<' in page
        (second,) = store_servers(folder)
        assert second.pid != first.pid and second.ppid() == proc.pid
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0 and not store_servers(folder)


def test_a_folder_another_server_holds_is_refused_naming_its_pid(browsed_run, tmp_path):
    _, _, folder = browsed_run
    # An orphaned server (as a browser killed before this fix left behind), not a child of ours.
    holder = subprocess.Popen(
        [
            server_executable(),
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--storage-path",
            str(folder / "db"),
            "--standalone",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(3)  # it has opened the data folder
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "raysae.dashboard", "--store", str(folder), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        seconds = time.monotonic() - started
    finally:
        holder.terminate()
        holder.wait(timeout=30)
    print(f"\nstore held by PID {holder.pid}: refused in {seconds:.1f} s")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "WiredTiger" not in proc.stderr
    assert (
        f"in use by another server, PID {holder.pid} " in proc.stderr and f"kill {holder.pid}" in proc.stderr
    )
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_failed_start_reports_this_start_not_an_old_traceback(tmp_path):
    (tmp_path / "server.log").write_text(
        "Traceback (most recent call last):\n  OldError: from a previous start\n"
    )
    (tmp_path / "db").write_text("")  # a file where the data folder goes: this start fails
    with pytest.raises(StoreError) as err:
        EmbeddedServer(tmp_path).start()
    message = str(err.value)
    assert "exited with code 1 at start: FileExistsError" in message and str(tmp_path / "db") in message
    assert "OldError" not in message and "Traceback" not in message and "\n" not in message
