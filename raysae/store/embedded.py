"""The embedded Mongo-wire server (SecantusDB's `secantusd-py`) as a child process.

Used when neither `store.uri` nor `MONGODB_URI` names a MongoDB (docs/architecture.md, "Store"):
the server listens on a free loopback port with its data under a run's
`store/` folder. It runs as a separate process, never imported here, so the
driver's GIL stays free and its GPL-2.0 code stays out of our process.

The server is tied to the process that started it (`children.start_child`), so
it never outlives it; a server that died is noticed (`revive`) and started again
on the same port and data, so clients reconnect; a folder another live server
still holds is refused naming that server's PID.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from raysae.errors import StoreError
from raysae.store.children import start_child

log = logging.getLogger("raysae.store")

EXECUTABLE = "secantusd-py"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def server_executable() -> str:
    """`secantusd-py` beside this Python (a venv's bin/) or on PATH."""
    beside = Path(sys.executable).parent / EXECUTABLE
    if beside.exists():
        return str(beside)
    found = shutil.which(EXECUTABLE)
    if found is None:
        raise StoreError(
            "no MongoDB is configured (store.uri or MONGODB_URI) and the embedded server is not "
            "installed: `pip install 'raysae[store]'` (scripts/install.sh does), or point store.uri "
            "at a MongoDB"
        )
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Holder:
    """A live process serving a store folder."""

    pid: int
    parent_pid: int
    parent_command: str

    def describe(self) -> str:
        if self.parent_pid <= 1:
            by = "its command is gone"
        else:
            by = f"started by PID {self.parent_pid}: {self.parent_command[:120]}"
        return f"PID {self.pid} ({by})"


def _proc_args(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _parent_pid(pid: int) -> int:
    try:  # the fields after the command name, which is in parentheses and may hold spaces
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def store_holders(storage: Path) -> list[Holder]:
    """The live processes (Linux: found in /proc) serving `storage` with `--storage-path`,
    launcher wrappers (`timeout …`) left out. A dead server holds nothing: its lock went with it."""
    target = os.path.realpath(storage)
    pids = []
    for entry in Path("/proc").glob("[0-9]*") if Path("/proc").is_dir() else ():
        args = _proc_args(int(entry.name))
        for flag, value in zip(args, args[1:], strict=False):
            if flag == "--storage-path":
                try:
                    cwd = os.readlink(f"/proc/{entry.name}/cwd")
                except OSError:
                    cwd = "/"
                if os.path.realpath(os.path.join(cwd, value)) == target:
                    pids.append(int(entry.name))
                break
    wrappers = {_parent_pid(p) for p in pids}
    return [
        Holder(p, _parent_pid(p), " ".join(_proc_args(_parent_pid(p))))
        for p in pids
        if p not in wrappers and p != os.getpid()
    ]


class EmbeddedServer:
    """One `secantusd-py` serving the data in `directory/db` on 127.0.0.1.

    `start()` waits until the port accepts connections; `stop()` shuts it down
    (SIGTERM, then SIGKILL); `revive()` starts a server that died again. Restarting
    keeps the port, so clients reconnect. Thread-safe: a browser's request threads share one.
    """

    def __init__(self, directory: str | Path, port: int | None = None):
        self.directory = Path(directory)
        self.port = port
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._lock = threading.RLock()
        self._log_start = 0

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    @property
    def storage(self) -> Path:
        return self.directory / "db"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> EmbeddedServer:
        with self._lock:
            if self.running():
                return self
            exe = server_executable()
            self.directory.mkdir(parents=True, exist_ok=True)
            holders = store_holders(self.storage)
            if holders:
                raise StoreError(self._held_message(holders))
            config = self.directory / "secantusd.toml"
            if not config.exists():
                config.write_text("# raysae starts this server with flags; see raysae/store/embedded.py\n")
            self.port = self.port or free_port()
            cmd = [
                exe,
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                str(self.storage.resolve()),
                "--standalone",
                "--log-level",
                "WARNING",
            ]
            with open(self.log_file, "ab") as server_log:
                self._log_start = server_log.tell()  # this start's lines begin here
                self.process = start_child(
                    cmd, stdout=server_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            self._wait_listening(self.process)
            return self

    def _wait_listening(self, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                holders = store_holders(self.storage)  # one that started between our check and now
                if holders:
                    raise StoreError(self._held_message(holders))
                raise StoreError(
                    f"the embedded store server over {self.directory} exited with code "
                    f"{process.returncode} at start: {self._this_start_said()} (full log: {self.log_file})"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise StoreError(
            f"the embedded store server over {self.directory} did not listen on port {self.port} within "
            f"{START_TIMEOUT_S:.0f} s: {self._this_start_said()} (full log: {self.log_file})"
        )

    def _held_message(self, holders: list[Holder]) -> str:
        pids = " ".join(str(h.pid) for h in holders)
        return (
            f"the store in {self.directory} is in use by another server, "
            f"{'; '.join(h.describe() for h in holders)}; one server at a time can open it: "
            f"close the browser, analysis or sweep that uses it, or end the server with `kill {pids}`"
        )

    def _this_start_said(self) -> str:
        """The last line this start wrote to the log (not a previous start's traceback)."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(self._log_start)
                lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        return lines[-1][:300] if lines else "no output"

    def revive(self, grace_s: float = 0.0) -> bool:
        """If the server died (waiting up to `grace_s` for one that is going down), start it
        again on the same port and data; True when it did. A failed restart raises a
        StoreError naming the exit code."""
        with self._lock:
            process = self.process
            if process is None:
                return False
            try:
                code = process.wait(timeout=grace_s) if grace_s > 0 else process.poll()
            except subprocess.TimeoutExpired:
                code = None
            if code is None:
                return False
            log.warning(
                "the embedded store server (PID %d) exited with code %s; restarting it on port %s",
                process.pid,
                code,
                self.port,
            )
            self.process = None
            try:
                self.start()
            except StoreError as exc:
                raise StoreError(
                    f"the embedded store server (PID {process.pid}) exited with code {code} and could "
                    f"not be restarted: {exc}"
                ) from None
            self.restarts += 1
            return True

    def stop(self, *, kill: bool = False) -> None:
        """Shut the server down (`kill`: SIGKILL at once, as a crash would)."""
        with self._lock:
            if self.process is None or self.process.poll() is not None:
                return
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
                try:
                    self.process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
