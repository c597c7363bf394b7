"""Which hooks a training row holds: one hook, a transcoder's pair, or every layer of `model.layers`.

With `model.layers` set, `model.hook_point` (and `model.hook_point_out`) are templates holding
`{layer}`; the training (`tokens`) cache then holds, per token and from one forward pass, every
layer's input stacked in column `acts` ([L, d_in], layer i = the i-th configured layer) and every
layer's target stacked in `acts_1` ([L, d_out]); a crosscoder (no output hook) has `acts` alone.
Without `model.layers` nothing changes: one column per hook, `[d]` per row.
"""

from __future__ import annotations

from typing import Any

from raysae.config import RaysaeConfig
from raysae.config.activations import LAYER_FIELD


def column_name(index: int) -> str:
    """The shard column of a cache's `index`-th hook: `acts` (the input), then `acts_1`, ..."""
    return "acts" if index == 0 else f"acts_{index}"


def expand(template: str, layers: list[int]) -> list[str]:
    """`blocks.{layer}.hook_mlp_out` over `[0, 2]` -> `["blocks.0.hook_mlp_out", "blocks.2.hook_mlp_out"]`."""
    return [template.replace(LAYER_FIELD, str(layer)) for layer in layers]


def has_targets(cfg: RaysaeConfig) -> bool:
    """Whether rows carry targets: `model.hook_point_out` is set and differs from `model.hook_point`."""
    m = cfg.model
    return m.hook_point_out not in (None, m.hook_point)


def expand_hooks(cfg: RaysaeConfig) -> tuple[list[str], list[str]]:
    """(the input hooks, the target hooks), one per configured layer each (one in all without
    `model.layers`); no targets for an SAE or a crosscoder."""
    m = cfg.model
    layers = m.layers
    inputs = [m.hook_point] if layers is None else expand(m.hook_point, layers)
    if not has_targets(cfg):
        return inputs, []
    assert m.hook_point_out is not None
    return inputs, [m.hook_point_out] if layers is None else expand(m.hook_point_out, layers)


def training_hooks(cfg: RaysaeConfig) -> list[str]:
    """The hooks of the training (`tokens`) cache in their stored order: the inputs, then the
    targets (a paired or multi-layer cache)."""
    inputs, targets = expand_hooks(cfg)
    return inputs + targets


def is_stacked(cfg: RaysaeConfig, hooks: list[str], layout: str) -> bool:
    """Whether the cache of these hooks is the multi-layer one, its rows stacked per column
    ([L, d]): the training cache of a config with `model.layers`."""
    return cfg.model.layers is not None and layout == "tokens" and list(hooks) == training_hooks(cfg)


def training_columns(cfg: RaysaeConfig) -> tuple[str, ...]:
    """The columns of a training row: `("acts",)`, or `("acts", "acts_1")` when rows carry targets."""
    if cfg.model.layers is not None:
        return ("acts", "acts_1") if has_targets(cfg) else ("acts",)
    return tuple(column_name(i) for i in range(len(training_hooks(cfg))))


def manifest_hook_entries(cfg: RaysaeConfig, hooks: list[str], layout: str) -> list[dict[str, Any]]:
    """The manifest's `hooks` (`name`, `d`, `column`; a stacked cache adds `layer` and `slot`, the
    index along the column's layer axis, and `role`: `input` or `target`), in stored order."""
    if not is_stacked(cfg, hooks, layout):
        return [{"name": h, "d": None, "column": column_name(i)} for i, h in enumerate(hooks)]
    inputs, targets = expand_hooks(cfg)
    layers = cfg.model.layers or []
    return [
        {"name": h, "d": None, "column": column, "layer": layer, "slot": slot, "role": role}
        for column, role, names in (("acts", "input", inputs), ("acts_1", "target", targets))
        if names
        for slot, (layer, h) in enumerate(zip(layers, names, strict=True))
    ]


def column_groups(hooks: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Stored column -> the indices (into `hooks`, manifest entries) of the hooks it holds, in order."""
    groups: dict[str, list[int]] = {}
    for i, hook in enumerate(hooks):
        groups.setdefault(hook["column"], []).append(i)
    return groups
