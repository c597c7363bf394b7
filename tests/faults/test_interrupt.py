"""Ctrl-C stops the whole command (issue 17, case 7): a real SIGINT to a running
`python -m raysae.sweep` or `python -m raysae.train` ends it with exit 130 and the one line that
says rerunning resumes; a sweep goes on to no further stage (no Pareto plot, no analysis) and
labels the trials it cut short `interrupted at N tokens`."""

import csv
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from raysae.run_dir import write_config
from tests.conftest import command_on_test_ray

RESUMES = "rerunning the same command resumes"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def driver_lines(err: str) -> list[str]:
    """The driver's stderr lines, colour codes gone; Ray's progress bars share the stream, so a
    line may start with a bar that ended in a carriage return, and a bar's redraw leaves lines
    that hold only cursor movements (empty once the codes are gone)."""
    cleaned = (ANSI.sub("", line).split("\r")[-1].strip() for line in err.splitlines())
    return [line for line in cleaned if line]


def assert_interrupted(err: str) -> None:
    lines = driver_lines(err)
    ours = [i for i, line in enumerate(lines) if line.endswith(f"interrupted (Ctrl-C); {RESUMES}")]
    assert len(ours) == 1, lines[-5:]
    # after it only Ray's forwarded worker output (`(Name pid=N) …`, flushed as Ray shuts down)
    assert all(line.startswith("(") for line in lines[ours[0] + 1 :]), lines[ours[0] :][:5]
    # Ray's worker processes log under a `(Name pid=N)` prefix; raysae's driver printed no traceback
    assert not any(line.startswith("Traceback") for line in lines)


def start(module: str, config_file: Path, ray_local) -> subprocess.Popen:
    """The command on the test run's Ray, its output going to files beside the config (a pipe
    nobody reads while it runs would fill up and block it)."""
    logs = Path(config_file).parent
    return command_on_test_ray(
        module,
        config_file,
        ray_local,
        stdout=(logs / "stdout.txt").open("w"),
        stderr=(logs / "stderr.txt").open("w"),
    )


def has_text(pattern: Path, glob: str) -> Callable[[], bool]:
    """Whether a file matching `glob` under `pattern` exists and is not empty."""
    return lambda: any(p.stat().st_size > 0 for p in pattern.glob(glob))


def interrupt_when(
    driver: subprocess.Popen, ready: Path | Callable[[], bool], timeout: float = 300
) -> tuple[str, str, float]:
    """SIGINT (only) the driver once `ready` (a file appears, or the predicate holds); (stdout,
    stderr, seconds it took to end)."""
    check = ready.exists if isinstance(ready, Path) else ready
    deadline = time.time() + timeout
    logs = Path(driver.args[-1]).parent
    try:
        while not check() and time.time() < deadline and driver.poll() is None:
            time.sleep(0.2)
        assert check(), f"{ready} never held (exit code {driver.poll()})"
        sent = time.perf_counter()
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=120)
        ended = time.perf_counter() - sent
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    return (logs / "stdout.txt").read_text(), (logs / "stderr.txt").read_text(), ended


@pytest.mark.slow
def test_ctrl_c_of_a_sweep_exits_130_with_no_analysis(train_config, tmp_path, ray_local):
    cfg = train_config(
        "ctrlc",
        "sweep.search_space={train.total_tokens: {grid: [4096, 16384]}}",  # t000 short, t001 long
        "sweep.max_concurrent_trials=1",
        "train.ce_contexts=0",
    )
    config_file = write_config(cfg, tmp_path)
    run = Path(cfg.output_dir) / cfg.name
    # t000 has finished and the driver holds a result of t001 (Tune's JSON logger writes it there
    # as the result arrives): the worker's own files (position.json) run ahead of what the driver
    # knows, and a row's `interrupted at N tokens` is what the driver knows.
    second_reported = has_text(run / "tune", "t001_*/result.json")
    driver = start("raysae.sweep", config_file, ray_local)
    out, err, seconds = interrupt_when(driver, second_reported)
    print(f"\nsweep ended {seconds:.1f} s after SIGINT")
    assert driver.returncode == 130, err[-3000:]
    assert_interrupted(err)
    with (run / "results.csv").open() as f:
        rows = {r["sae_id"]: r for r in csv.DictReader(f)}
    assert rows["ctrlc/t000"]["status"] == "finished"
    status = rows["ctrlc/t001"]["status"]
    assert status.startswith("interrupted at ") and status.endswith(" tokens"), status
    assert 0 < int(status.split()[2]) < 16384
    assert not (run / "pareto.png").exists()  # no further stage ran
    assert not (run / "store").exists()  # no analysis
    assert "SAEs finished" not in out


@pytest.mark.slow
def test_ctrl_c_of_train_ends_with_the_raysae_line(train_config, tmp_path, ray_local):
    cfg = train_config("ctrlctrain", "train.ce_contexts=0", "train.total_tokens=16384")
    config_file = write_config(cfg, tmp_path)
    position = Path(cfg.output_dir) / cfg.name / "checkpoints" / "train" / "raysae" / "position.json"
    driver = start("raysae.train", config_file, ray_local)
    out, err, seconds = interrupt_when(driver, position)
    print(f"\ntrain ended {seconds:.1f} s after SIGINT")
    assert driver.returncode == 130, err[-3000:]
    assert_interrupted(err)
    assert not (Path(cfg.output_dir) / cfg.name / "results.csv").exists()
