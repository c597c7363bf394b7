"""The shared base of every config section.

Each section is a strict pydantic model: unknown keys and wrong types are
errors, and the docstring under each field is its description (shown by
`python -m raysae.config --describe`).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict

from raysae.storage import REMOTE_SCHEMES, URI  # stdlib only at import; pyarrow is imported on use


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


def shared_storage(value: str) -> str:
    """A folder given as a path, a `file://` URI (turned into a path) or an object-store URI
    (`s3://bucket/prefix`, kept as it is; read and written through `raysae.storage`)."""
    found = URI.match(value)
    if not found:
        return value
    scheme = found.group(1).lower()
    if scheme in ("file", "local"):
        parts = urlsplit(value)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"{value!r}: a file:// URI names a local path (file:///abs/path), not host {parts.netloc!r}"
            )
        path = unquote(parts.path)
        if not PurePosixPath(path).is_absolute():
            raise ValueError(f"{value!r}: a file:// URI needs an absolute path (file:///abs/path)")
        return path
    if scheme not in REMOTE_SCHEMES:
        raise ValueError(
            f"{scheme}:// is not a storage scheme raysae can use; use a path, file://, or one of "
            + ", ".join(f"{s}://" for s in REMOTE_SCHEMES)
        )
    if not urlsplit(value).netloc:
        raise ValueError(f"{value!r}: a {scheme}:// URI needs a bucket or host ({scheme}://bucket/prefix)")
    return value


SharedStorage = Annotated[str, AfterValidator(shared_storage)]
"""A config field holding a folder: a path, a `file://` URI turned into one, or an object-store URI."""
