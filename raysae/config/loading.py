"""YAML in, typed config out, with errors that name the dotted path; and the config out again
(redacted YAML)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from raysae.config.paths import known_path, set_dotted, unknown_path_problem, validation_problems
from raysae.config.population import population_problems
from raysae.config.root import RaysaeConfig, cross_field_problems
from raysae.config.search_space import SEARCH_SPACE, search_space_problems, set_swept
from raysae.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float (YAML 1.2), as users expect."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=value` -> (`a.b`, value parsed as YAML, so `k=64` is an int)."""
    key, sep, raw = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key.strip()):
        raise ConfigError([("", f"override {text!r} is not of the form dotted.key=value")])
    try:
        value = _yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError([(key, f"override value {raw!r} is not valid YAML: {exc}")]) from None
    return key.strip(), value


def validate_config(raw: Mapping[str, Any], source: str | None = None) -> RaysaeConfig:
    """A plain mapping -> the typed config; raises `ConfigError` naming every problem."""
    if not isinstance(raw, Mapping):
        raise ConfigError([("", f"expected a mapping at the top level, got {type(raw).__name__}")], source)
    raw = dict(raw)
    try:
        cfg = RaysaeConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(validation_problems(err), source) from None
    problems = list(cross_field_problems(cfg)) + search_space_problems(raw, cfg)
    problems += population_problems(raw, cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


PACKAGED_CONFIGS = Path(__file__).parents[1] / "configs"
"""The ready configs that ship in the package (raysae/configs/*.yaml, package data)."""


def packaged_config_names() -> list[str]:
    return sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))


def config_path(path: str | Path) -> Path:
    """`path` itself, or for a bare name (no folder, no suffix) that is not a file in the working
    folder, the packaged config of that name: `quickstart` -> raysae/configs/quickstart.yaml."""
    given = Path(path)
    if given.is_file() or given.suffix or len(given.parts) != 1:
        return given
    packaged = PACKAGED_CONFIGS / f"{given}.yaml"
    if packaged.is_file():
        return packaged
    names = ", ".join(packaged_config_names())
    raise ConfigError(
        [("", f"no such file, and no packaged config of that name (the packaged configs: {names})")],
        str(path),
    )


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> RaysaeConfig:
    """Read a YAML config (a file, or a packaged config's name such as `quickstart`), apply
    `dotted.key=value` overrides, validate strictly.

    `path=None` starts from the defaults. Errors are `ConfigError`s whose message
    starts with the file name and names each dotted path.
    """
    path = config_path(path) if path is not None else None
    source = str(path) if path is not None else None
    raw: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError([("", f"cannot read config file: {exc.strerror}")], source) from None
        try:
            raw = _yaml(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([("", f"not valid YAML: {exc}")], source) from None
        if not isinstance(raw, dict):
            raise ConfigError(
                [("", f"expected a mapping at the top level, got {type(raw).__name__}")], source
            )
    for text in overrides:
        key, value = parse_override(text)
        if key.startswith(SEARCH_SPACE + "."):  # the rest of the key is the swept path (`sae.k`)
            set_swept(raw, key, value)
            continue
        if not known_path(key):
            raise ConfigError([(key, unknown_path_problem(key))], source)
        set_dotted(raw, key, value)
    return validate_config(raw, source)


# The userinfo of a URI: everything after `://` up to the *last* `@` before the path, query or
# fragment, so a password holding an `@` (`u:se@cret@host`) is dropped whole.
_URI_CREDENTIALS = re.compile(r"(?<=://)[^/?#\s]*@")
# Query parameters that carry a secret (`?password=…`, `&apiKey=…`, `sig=…`, `X-Amz-Credential=…`):
# those whose name ends in one of these words. `authSource`, `authMechanism`, `tls…File` are not secrets.
_SECRET_PARAMETER = re.compile(
    r"(?<=[?&;])([^=&#;?\s]*(?:password|passwd|pwd|secret|token|key|signature|sig|credential))=[^&#;\s]*",
    re.IGNORECASE,
)


def redact(value: Any) -> Any:
    """Drop `user:password@` and secret query parameters from URIs (also inside longer text, such as
    an error message), so configs and messages can be printed, logged and saved."""
    if isinstance(value, str):
        return _SECRET_PARAMETER.sub(r"\1=***", _URI_CREDENTIALS.sub("***@", value))
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def dump_config(cfg: RaysaeConfig, *, redacted: bool = True) -> str:
    """The fully resolved config as YAML (credentials in URIs redacted by default)."""
    data = cfg.model_dump(mode="json", exclude_none=False)
    if redacted:
        data = redact(data)
    return yaml.safe_dump(data, sort_keys=False)
