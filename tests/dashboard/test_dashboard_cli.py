"""`python -m raysae.dashboard` as users start it: on a finished run's embedded store, and bad input."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest


def start(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "raysae.dashboard", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.skipif(
    bool(os.environ.get("MONGODB_URI")), reason="the analysis wrote to MONGODB_URI, not a folder"
)
def test_serves_a_finished_runs_store_until_interrupted(browsed_run):
    cfg, run, _ = browsed_run
    proc = start("--store", str(run), "--port", "0", "--database", cfg.store.database)
    try:
        line = proc.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert found, line + proc.stdout.read() if proc.poll() is not None else line
        assert "2 SAEs" in line
        url = found.group(1)
        home = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "browse/t000" in home and "browse/t001" in home
        page = urllib.request.urlopen(f"{url}/sae/browse/t001/feature/3", timeout=10).read().decode()
        assert 'id="feature-index">3<' in page
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}/sae/browse/t001/feature/4096", timeout=10)
        assert missing.value.code == 404
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0


@pytest.mark.parametrize(
    "args,says",
    [
        (["--store", "/nonexistent/run"], "no embedded store here"),
        (["--uri", "mongodb://127.0.0.1:9/"], "cannot reach the store"),
        (["--uri", "mongodb://user:hunter2@[bad"], "malformed"),
    ],
)
def test_bad_store_exits_2_quickly_with_a_clear_message(args, says):
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "raysae.dashboard", *args, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr and "hunter2" not in proc.stderr
    assert time.monotonic() - started < 30
