"""The shared base of every config section.

Each section is a strict pydantic model: unknown keys and wrong types are
errors, and the docstring under each field is its description (shown by
`python -m raysae.config --describe`).
"""

from __future__ import annotations

import enum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict

from raysae.filesystem import REMOTE_SCHEMES, URI  # stdlib only at import; pyarrow is imported on use

FloatDType = Literal["float32", "bfloat16", "float16"]
"""The floating-point dtypes a config may name (`raysae.devices.DTYPES`)."""


class Section(BaseModel):
    """A strict config section: no unknown keys, no silent type coercion."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        use_attribute_docstrings=True,
        validate_assignment=True,
        validate_default=True,
    )


class Scope(enum.Enum):
    """What a field of an SAE's own settings (`sae.*`, `train.*`) means for populations and resumes.

    Every field of a `ScopedSection` carries exactly one, as `Annotated` metadata
    (`lr: Annotated[float, MEMBER] = ...`), so a new field cannot fall into none.
    """

    MEMBER = "member"
    """May differ between the SAEs of a population; a resumed run refuses a change."""
    SHARED = "shared"
    """Decides the batches every SAE of a population sees, so it is the same for all of them;
    a resumed run refuses a change."""
    OPERATIONAL = "operational"
    """How the run executes (workers, checkpoints, logging): a resumed run may change it."""


MEMBER, SHARED, OPERATIONAL = Scope.MEMBER, Scope.SHARED, Scope.OPERATIONAL


class ScopedSection(Section):
    """A section whose every field declares its `Scope`."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, field in cls.model_fields.items():
            scopes = [m for m in field.metadata if isinstance(m, Scope)]
            if len(scopes) != 1:
                raise TypeError(
                    f"{cls.__name__}.{name}: give it exactly one Scope (MEMBER, SHARED, OPERATIONAL)"
                )

    @classmethod
    def scope(cls, name: str) -> Scope:
        return next(m for m in cls.model_fields[name].metadata if isinstance(m, Scope))


def shared_storage(value: str) -> str:
    """A folder given as a path, a `file://` URI (turned into a path) or an object-store URI
    (`s3://bucket/prefix`, kept as it is; read and written through `raysae.filesystem`)."""
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
