"""The embedded Mongo-wire server (SecantusDB's `secantusd-py`) as a child process.

Used when neither `store.uri` nor `MONGODB_URI` names a MongoDB (docs/architecture.md, "Store"):
the server listens on a free loopback port with its data under a run's
`store/` folder. It runs as a separate process, never imported here, so the
driver's GIL stays free and its GPL-2.0 code stays out of our process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from raysae.errors import StoreError

EXECUTABLE = "secantusd-py"
START_TIMEOUT_S = 60.0


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


class EmbeddedServer:
    """One `secantusd-py` serving the data in `directory/db` on 127.0.0.1.

    `start()` waits until the port accepts connections; `stop()` shuts it down
    (SIGTERM, then SIGKILL). Restarting keeps the port, so clients reconnect.
    """

    def __init__(self, directory: str | Path, port: int | None = None):
        self.directory = Path(directory)
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def log_file(self) -> Path:
        return self.directory / "server.log"

    def start(self) -> EmbeddedServer:
        if self.process is not None and self.process.poll() is None:
            return self
        exe = server_executable()
        self.directory.mkdir(parents=True, exist_ok=True)
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
            str(self.directory / "db"),
            "--standalone",
            "--log-level",
            "WARNING",
        ]
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StoreError(
                    f"the embedded store server exited with code {self.process.returncode} "
                    f"(is another server using {self.directory}?):\n{self._log_tail()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise StoreError(
            f"the embedded store server did not listen on port {self.port} within "
            f"{START_TIMEOUT_S:.0f} s:\n{self._log_tail()}"
        )

    def stop(self, *, kill: bool = False) -> None:
        """Shut the server down (`kill`: SIGKILL at once, as a crash would)."""
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
