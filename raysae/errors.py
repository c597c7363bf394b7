"""raysae's error types, one home for all of them (no imports, so any module can raise them).

Each means bad input or an unusable resource, which the commands report in one
paragraph with exit code 2 (`raysae.cli`), never as a traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config that cannot be used; the message names every bad dotted path.

    `problems` holds `(dotted_path, message)` pairs so callers (tests, the sweep's
    search-space checks) can inspect them without parsing the text.
    """

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        if len(problems) == 1:
            path, msg = problems[0]
            text = f"{where}{path}: {msg}" if path else f"{where}{msg}"
        else:
            lines = [f"  {p}: {m}" if p else f"  {m}" for p, m in problems]
            text = f"{where}{len(problems)} problems in the config\n" + "\n".join(lines)
        super().__init__(text)

    def __reduce__(self):
        # Rebuild from the problems, not the text, so the error survives pickling
        # (e.g. raised inside a Ray actor and re-raised in the driver).
        return (type(self), (self.problems, self.source))


class CacheError(ValueError):
    """An activation cache that cannot be used as it is; the message names the file."""


class StoreError(RuntimeError):
    """The result store cannot be used: unreachable, malformed URI, or out of retries."""
