"""Child processes that end with their parent, however the parent ends.

A clean exit, Ctrl-C, SIGTERM and SIGHUP unwind through `with` blocks that stop
the child (`raysae.cli.run_main`); SIGKILL runs no code in the parent, so the
child is tied to it in the kernel instead: Linux's `PR_SET_PDEATHSIG` sends the
child SIGTERM when its parent dies (the child then shuts down cleanly).

The kernel counts the *thread* that forked as the parent: a child started from a
short-lived thread (a browser request, a test's helper thread) would be
signalled when that thread ends. So every child is forked from one spawner
thread that lives as long as the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

PR_SET_PDEATHSIG = 1
PARENT_DEATH_SIGNAL = signal.SIGTERM


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()  # resolved here: the forked child must only call it, not load a library


def _tie_to_parent(parent_pid: int) -> Callable[[], None] | None:
    """The `preexec_fn` that makes the child get PARENT_DEATH_SIGNAL when its parent dies."""
    prctl = _PRCTL
    if prctl is None:
        return None

    def tie() -> None:
        prctl(PR_SET_PDEATHSIG, int(PARENT_DEATH_SIGNAL), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before the tie was made
            os._exit(1)

    return tie


_requests: queue.SimpleQueue[tuple[Sequence[str], dict[str, Any], Future]] = queue.SimpleQueue()
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()


def _serve_requests() -> None:
    while True:
        cmd, kwargs, result = _requests.get()
        try:
            result.set_result(
                subprocess.Popen(cmd, preexec_fn=_tie_to_parent(os.getpid()), **kwargs)  # noqa: PLW1509
            )
        except BaseException as exc:  # handed to the caller, which raises it
            result.set_exception(exc)


def start_child(cmd: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
    """`subprocess.Popen(cmd, **popen_kwargs)`, tied to this process: it gets SIGTERM
    when this process ends, even by SIGKILL (Linux; elsewhere only the `with` blocks)."""
    global _spawner
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = threading.Thread(target=_serve_requests, name="raysae-child-spawner", daemon=True)
            _spawner.start()
    result: Future = Future()
    _requests.put((list(cmd), popen_kwargs, result))
    return result.result()


def tied_to_parent() -> bool:
    """Whether children started here get a signal when this process dies (Linux)."""
    return _PRCTL is not None
