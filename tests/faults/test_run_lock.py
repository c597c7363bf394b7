"""One command per run directory (issue 17, case 8): a second sweep or train on a held run
directory refuses with exit 2 naming the holder's PID, before it writes anything (MLflow's
database included); a holder killed with SIGKILL leaves a lock the next command takes over."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from raysae.cli import run_main
from raysae.run_dir import LOCK, RunDir, RunDirBusy, hold_run_dir, write_config
from raysae.sweep.__main__ import main as sweep_main
from raysae.train import main as train_main
from tests.conftest import command_on_test_ray


def wait_for_holder(lock: Path, proc: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            holder = json.loads(lock.read_text() or "null")
        except (OSError, json.JSONDecodeError):
            holder = None
        if holder and holder["pid"] == proc.pid:
            return holder
        time.sleep(0.1)
    raise AssertionError(f"{proc.args} never held {lock} (exit code {proc.poll()})")


def test_a_second_sweep_on_a_held_run_directory_refuses_naming_the_holder(
    train_config, tmp_path, ray_local, capsys
):
    cfg = train_config(
        "locked", "sweep.search_space={sae.k: {grid: [2, 4]}}", "sweep.max_concurrent_trials=1"
    )
    config_file = write_config(cfg, tmp_path)
    run = Path(cfg.output_dir) / cfg.name
    first = command_on_test_ray(
        "raysae.sweep", config_file, ray_local, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        holder = wait_for_holder(run / LOCK, first)
        assert holder["command"] == f"python -m raysae.sweep {config_file}"
        written = sorted(p.name for p in run.iterdir())
        capsys.readouterr()
        started = time.perf_counter()
        with pytest.raises(SystemExit) as info:
            run_main(sweep_main, [str(config_file)])
        seconds = time.perf_counter() - started
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and not any("Traceback" in line for line in err)
        # raysae's own progress lines (`HH:MM:SS inputs checked …`) may come first; the refusal is last
        assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in err[:-1]), err
        assert err[-1] == (
            f"error: {run} is in use by PID {first.pid} on {holder['host']} "
            f"(python -m raysae.sweep {config_file}); wait for it to end, or stop it"
        )
        print(f"\nsecond sweep refused in {seconds:.2f} s")
        assert first.poll() is None  # the holder goes on
        assert {p.name for p in run.iterdir()} >= set(written)
        # a train command on the same run directory is refused the same way
        with pytest.raises(SystemExit) as info:
            run_main(train_main, [str(config_file)])
        assert info.value.code == 2 and f"in use by PID {first.pid}" in capsys.readouterr().err
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    # the holder died without a word: its lock is taken over at once, by this process now
    with hold_run_dir(RunDir(run), "the next command"):
        assert json.loads((run / LOCK).read_text())["pid"] == os.getpid()


def test_the_lock_is_released_when_the_command_ends(tmp_path):
    run = RunDir(tmp_path / "run")
    with hold_run_dir(run, "first"):
        with pytest.raises(RunDirBusy, match=f"in use by PID {os.getpid()} on .* \\(first\\)"):
            with hold_run_dir(run, "second"):  # another open file description: flock refuses it too
                pass
    with hold_run_dir(run, "third"):
        assert json.loads((tmp_path / "run" / LOCK).read_text())["command"] == "third"
