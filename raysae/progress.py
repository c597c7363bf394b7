"""What a command prints: raysae's own lines and per-phase progress, Ray's output kept quiet.

By default Ray's own output is off: Ray Data's progress bars, Ray's and Ray Data's INFO
logging in the driver and every worker of the job, Hugging Face datasets' bars, Tune's
logger callbacks and table (`raysae.ray_runtime`, `raysae.sweep.tuner`); warnings and
errors still get through. `RAYSAE_VERBOSE=1` brings everything back.

`Progress` is one phase's progress (generation, training, analysis, store writes): a live
tqdm bar when stderr is a terminal, else plain timestamped lines without control characters,
at most one per `every_s` seconds besides the first and the last. No Ray here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator

VERBOSE_ENV = "RAYSAE_VERBOSE"
"""`RAYSAE_VERBOSE=1` (or `--verbose`): Ray's own output as Ray prints it, for debugging."""

QUIET_ENV = {
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",  # ray.data.context: DataContext.enable_progress_bars
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # the corpus loader's "Generating train split" bars
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # Tune's CSV/JSON/TensorBoard loggers: MLflow logs
    "TRANSFORMERS_VERBOSITY": "error",
    # Ray Train turns print() in its workers into log records that bypass redirect_stdout
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_AIR_NEW_OUTPUT": "0",  # Tune's new reporter prints its box even at verbose=0; the old is silent
    "RAY_COLOR_PREFIX": "0",  # no colour codes around forwarded lines' `(raylet)` prefixes
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # MLflow sets its logger's level as it is imported
}
"""Environment that keeps Ray and the libraries under it quiet, in the driver and (through the
job's runtime_env) in every Ray worker."""

_FORMAT = "%(asctime)s %(message)s"
_DATEFMT = "%H:%M:%S"
_INTERACTIVE: bool | None = None


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def interactive() -> bool:
    """Whether progress is drawn as live bars: stderr (where raysae writes) is a terminal."""
    if _INTERACTIVE is None:
        return sys.stderr.isatty()
    return _INTERACTIVE


def worker_env() -> dict[str, str]:
    """The environment variables Ray's workers of this job get (`ray.init(runtime_env=...)`)."""
    return {VERBOSE_ENV: "1"} if verbose() else dict(QUIET_ENV)


class _Handler(logging.Handler):
    """Writes a record to the process's stderr *as it is now* (a test's capture, or a command run
    in-process after another, may have replaced the one there was at set-up) in one write with
    its newline (Ray's log thread shares the stream), and above a live bar when there is one, so
    the bar is redrawn below the line, not through it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if interactive():
                from tqdm import tqdm

                tqdm.write(line, file=sys.stderr)
            else:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
        except Exception:  # logging must never raise into the command
            self.handleError(record)


def setup_logging() -> None:
    """raysae's loggers to stderr at INFO, through their own handler (Ray's logging config, which
    sets the root logger to WARNING when quiet, does not touch them); the libraries quiet."""
    if not verbose():
        os.environ.update(QUIET_ENV)
    logger = logging.getLogger("raysae")
    if not any(isinstance(h, _Handler) for h in logger.handlers):
        handler = _Handler()
        handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not verbose():  # MLflow's INFO lines (creating its database tables, ...) as Ray's
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
    if verbose():
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt=_DATEFMT)


class _NoStateApiWarning(logging.Filter):
    """Ray Train's placement-group cleaner warns every few seconds, per trial, that the State API
    is unavailable, which it is on any Ray started without its dashboard (ours); it goes on
    working. The warning says nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "State API may be temporarily unavailable" not in record.getMessage()


def quiet_ray_loggers() -> None:
    """Ray's INFO logging off once Ray is imported (ray and ray.data configure their loggers on
    import): the `ray` logger and Ray Data's console handler at WARNING (Ray Data's log file
    keeps everything), and one warning that is not. Also Ray's `worker_process_setup_hook`."""
    if verbose():
        return
    import ray.data  # configures its loggers on import: set them after that
    from ray.util import log_once

    logging.getLogger("ray").setLevel(logging.WARNING)
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)
    cleaner = logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner")
    if not any(isinstance(f, _NoStateApiWarning) for f in cleaner.filters):
        cleaner.addFilter(_NoStateApiWarning())
    if threading.excepthook is not _cleaner_excepthook:
        global _previous_excepthook
        _previous_excepthook = threading.excepthook
        threading.excepthook = _cleaner_excepthook
    # Progress bars are off on purpose: Ray Data need not say so in every process.
    log_once("ray_data_progress_manager_disabled")
    ray.data.DataContext.get_current().enable_progress_bars = False


_previous_excepthook = threading.excepthook


def _cleaner_excepthook(args: threading.ExceptHookArgs) -> None:
    """Ray Train's placement-group cleaner (a safety net that removes a trial's placement group
    if its controller dies) asks the State API for "the" Ray cluster every few seconds; with two
    Rays on one host (two local sweeps on a workstation, a test Ray beside a command's own) that
    raises `ConnectionError: Found multiple active Ray instances` and its thread dies with a
    traceback in the command's output. Training is unaffected: one warning line instead."""
    thread = args.thread.name if args.thread is not None else ""
    if thread == "PlacementGroupCleanerMonitor" and isinstance(args.exc_value, ConnectionError):
        logging.getLogger("raysae.ray").warning(
            "Ray Train's placement-group cleaner stopped (%s); training goes on",
            str(args.exc_value).split(".")[0],
        )
        return
    _previous_excepthook(args)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Swallow what a library prints (TransformerLens says "Moving model to device: cpu" on every
    load) unless verbose; logging and errors are untouched."""
    if verbose():
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _unsized_terminal() -> tuple[int | None, int | None]:
    """tqdm's width and height, (None, None) to let it read the terminal's, or 100 x 40 where the
    terminal states no size (a pty nobody sized, `script` without a terminal): tqdm reads 0 x 0
    there and draws nothing at all."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except OSError:
        return 100, 40
    return (None, None) if size.columns > 0 and size.lines > 0 else (100, 40)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _count(n: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:.0f}"


class Progress:
    """Progress of one phase: `update(done, note)` as work gets done, `close()` at the end.

    `what` names the work (`training t000 topk`), `total` counts `unit`s. Tokens (or other
    units) per second count from the first update, so a resumed phase reports its own rate.
    """

    log = logging.getLogger("raysae.progress")

    def __init__(self, what: str, total: int, unit: str = "tokens", *, every_s: float = 10.0):
        self.what, self.total, self.unit, self.every_s = what, max(int(total), 1), unit, every_s
        self.done, self.note = 0, ""
        self._first: tuple[float, int] | None = None
        self._last_line = -float("inf")
        self._closed = False
        self._bar = None
        if interactive():
            from tqdm import tqdm

            ncols, nrows = _unsized_terminal()
            self._bar = tqdm(
                total=self.total,
                desc=what,
                unit=unit,
                unit_scale=True,
                file=sys.stderr,
                ncols=ncols,
                nrows=nrows,
            )

    def rate(self) -> float:
        if self._first is None:
            return 0.0
        t0, done0 = self._first
        return (self.done - done0) / max(time.perf_counter() - t0, 1e-9)

    def line(self) -> str:
        pct = 100 * self.done / self.total
        text = f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0f}%)"
        rate = self.rate()
        if rate > 0:
            text += f", {_count(rate)} {self.unit}/s"
        if self.done >= self.total:
            text += f", done in {_duration(time.perf_counter() - self._started_at())}"
        elif rate > 0:
            text += f", ETA {_duration((self.total - self.done) / rate)}"
        else:
            text += ", ETA -"
        return text + (f"; {self.note}" if self.note else "")

    def _started_at(self) -> float:
        return self._first[0] if self._first else time.perf_counter()

    def update(self, done: int, note: str = "") -> None:
        if self._closed:
            return
        now = time.perf_counter()
        if self._first is None:
            self._first = (now, int(done))
        previous, self.done, self.note = self.done, min(int(done), self.total), note or self.note
        if self._bar is not None:
            self._bar.update(self.done - previous)
            if self.note:
                self._bar.set_postfix_str(self.note, refresh=False)
            return
        # The first line once there is a rate (so it has an ETA), then one per `every_s`, the last.
        due = self.rate() > 0 and now - self._last_line >= self.every_s
        if due or self.done >= self.total:
            self._last_line = now
            self.log.info(self.line())
            if self.done >= self.total:
                self._closed = True

    def close(self, note: str = "") -> None:
        """The last line (once): where the phase ended, and how long it took."""
        if self._closed:
            return
        self._closed = True
        self.note = note or self.note
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.close()
            return
        self.log.info(self.line())
