"""A threaded HTTP server for the browser that can run in the foreground (the CLI)
or in a background thread (tests), on a fixed or a free port."""

from __future__ import annotations

import threading

from flask import Flask
from werkzeug.serving import make_server


class Server:
    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0):
        self.httpd = make_server(host, port, app, threaded=True)
        self.host, self.port = host, self.httpd.server_port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def start(self) -> Server:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="raysae-dashboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
