"""Facts about config fields live on the fields: every SAE and training field declares its Scope,
and moved keys fail naming their new spelling."""

from typing import Annotated

import pytest
from pydantic import Field

from raysae.config import (
    MEMBER,
    MOVED_KEYS,
    OPERATIONAL,
    ConfigError,
    SAEConfig,
    ScopedSection,
    TrainConfig,
    load_config,
)
from raysae.config.paths import known_path
from raysae.config.population import member_paths


def test_every_scoped_field_declares_exactly_one_scope():
    for model in (SAEConfig, TrainConfig):
        assert all(
            model.scope(name) in (MEMBER, OPERATIONAL, model.scope(name)) for name in model.model_fields
        )
    with pytest.raises(TypeError, match="NewSection.forgotten: give it exactly one Scope"):

        class NewSection(ScopedSection):
            lr: Annotated[float, MEMBER] = Field(default=1.0)
            """Scoped."""
            forgotten: int = 0
            """Not scoped: refused when the class is made."""


def test_members_may_set_the_member_fields_and_a_resume_may_change_the_operational_ones():
    assert "train.lr" in member_paths() and "sae.k" in member_paths()
    assert "sae.d_in" not in member_paths() and "train.batch_size" not in member_paths()
    assert (
        TrainConfig.scope("workers") is OPERATIONAL and TrainConfig.scope("total_tokens") is not OPERATIONAL
    )


@pytest.mark.parametrize("old", sorted(MOVED_KEYS))
def test_a_moved_key_fails_naming_its_new_spelling(old, tmp_path):
    new = MOVED_KEYS[old]
    assert known_path(new) and not known_path(old)
    section, _, leaf = old.partition(".")
    value = "{a: 1.0}" if leaf == "worker_resources" else "true" if leaf == "use_gpu" else "1"
    with pytest.raises(ConfigError, match=rf"{old}: unknown config path \(moved: it is `{new}` now\)"):
        load_config(None, [f"{old}={value}"])
    (tmp_path / "old.yaml").write_text(f"{section}:\n  {leaf}: {value}\n")
    with pytest.raises(ConfigError, match=rf"{old}: unknown key \(moved: it is `{new}` now\)"):
        load_config(tmp_path / "old.yaml")
