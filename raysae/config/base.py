"""The shared base of every config section.

Each section is a strict pydantic model: unknown keys and wrong types are
errors, and the docstring under each field is its description (shown by
`python -m raysae.config --describe`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A strict config section: no unknown keys, no silent type coercion."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        use_attribute_docstrings=True,
        validate_assignment=True,
        validate_default=True,
    )


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
