"""What every `python -m raysae.<command>` shares: arguments, logging, clean errors."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from raysae.config import RaysaeConfig, StoreConfig, load_config
from raysae.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from raysae.store import Store


def first_line(doc: str | None) -> str:
    """A module docstring's first line, as a command's description."""
    return (doc or "").strip().split("\n", 1)[0]


def config_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the positional CONFIG and repeatable `--set dotted.key=value`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("config", nargs="?", help="YAML config file (omit for the defaults)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set sae.k=64 (repeatable)",
    )
    return parser


def load_from_args(args: argparse.Namespace) -> RaysaeConfig:
    return load_config(args.config, args.overrides)


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """`--uri URI | --store DIR` and `--database`: the store a reading command opens."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--uri", help="a MongoDB URI (default: $MONGODB_URI); keep passwords in the environment"
    )
    where.add_argument("--store", metavar="DIR", help="a run's embedded store folder, or the run directory")
    parser.add_argument("--database", default="raysae", help="database name (store.database of the analysis)")


@contextlib.contextmanager
def store_from_args(args: argparse.Namespace) -> Iterator[Store]:
    """The store `add_store_arguments` named: `--uri`, else `--store`, else `$MONGODB_URI`."""
    from raysae.store import open_store

    uri = args.uri or (None if args.store else os.environ.get("MONGODB_URI"))
    with open_store(uri, args.store, StoreConfig(database=args.database)) as store:
        yield store


USER_ERRORS = (ConfigError, FileNotFoundError, ValueError, StoreError)
"""Exceptions that mean bad input (or an unusable store): reported in one paragraph, exit code 2."""


_RAISED_IN_ACTOR = re.compile(r"^raysae\.[\w.]+Error: (.+)$", re.M)


def user_error(error: BaseException) -> BaseException | str | None:
    """The bad-input error behind `error`, also when a Ray worker raised it and Ray wrapped it."""
    seen = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__name__ == "ActorDiedError":
            # An actor whose constructor raised (e.g. an unknown hook point) reaches the
            # driver only as text inside ActorDiedError; recover our message from it.
            found = _RAISED_IN_ACTOR.findall(str(exc))
            if found:
                return found[-1]
        cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError
        if isinstance(cause, BaseException):
            exc = cause
            continue
        if isinstance(exc, USER_ERRORS) and type(exc).__module__.split(".")[0] in ("raysae", "builtins"):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def failure_reason(error: BaseException) -> str:
    """Why a trial or run failed, in one line: the bad-input message when there is one, else the
    innermost exception that is not Ray's wrapper (`RayTaskError`, `TrainingFailedError`, ...)
    as `Type: message`, without the terminal colour codes Ray puts in its text."""
    found = user_error(error)
    if found is None:
        root, seen = error, set()
        exc: BaseException | None = error
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            if not type(exc).__module__.startswith("ray."):
                root = exc
            nested = getattr(exc, "cause", None)
            if not isinstance(nested, BaseException):
                failures = getattr(exc, "worker_failures", None)  # Ray Train's WorkerGroupError
                nested = next(iter(failures.values()), None) if isinstance(failures, dict) else None
            exc = nested if isinstance(nested, BaseException) else exc.__cause__ or exc.__context__
        text = f"{type(root).__name__}: {root}"
    else:
        text = str(found)
    lines = [line.strip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]


INTERRUPTED_EXIT_CODE = 130
"""A command stopped by Ctrl-C, SIGTERM or SIGHUP exits 130, as a shell reports SIGINT."""


def _interrupt(signum: int, _frame) -> None:
    # SIGTERM (a job scheduler, `kill`) and SIGHUP (the terminal closed) unwind like Ctrl-C,
    # so every `with` block runs: child servers stop, locks are released, nothing is orphaned.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def handle_termination_signals() -> None:
    """Make SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, as SIGINT does."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)


def _say(line: str) -> None:
    # One write with its newline: print() writes the text and the newline separately, and Ray's
    # log thread (workers' output forwarded to this stderr) can land between the two.
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def run_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run a command; bad input exits 2 with a one-paragraph message, not a traceback;
    Ctrl-C, SIGTERM and SIGHUP stop it cleanly with exit 130."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    handle_termination_signals()
    try:
        code = main(argv)
    except KeyboardInterrupt as exc:
        how = str(exc) or "Ctrl-C"
        _say(f"interrupted ({how}); rerunning the same command resumes")
        sys.exit(INTERRUPTED_EXIT_CODE)
    except Exception as exc:
        bad_input = user_error(exc)
        if bad_input is None:
            raise
        _say(f"error: {bad_input}")
        sys.exit(2)
    sys.exit(code or 0)
