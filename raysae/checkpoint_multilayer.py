"""Checkpoints of the multi-layer dictionaries (`sae.kind` `clt`, `crosscoder`), which SAELens has
no format for.

A directory holds `raysae.json` (as for an SAE: architecture, kind, widths, `n_layers`, the layers
and hooks, the SAE config, the full config redacted, and what else training records),
`model.safetensors` (the model's whole state, scales folded: `W_enc [L, d_in, d_sae]`, `b_enc`,
the CLT's `W_dec.{l}` [d_sae, L - l, d_out] or the crosscoder's `W_dec [d_sae, L, d_out]`,
`b_dec [L, d_out]`, `threshold`, `W_skip`, the running state) and, for a CLT that circuit-tracer can
compute, `circuit_tracer/`: the same CLT in circuit-tracer 0.5's layout (`raysae.circuit_tracer_format`),
loadable there as it is. Where it cannot be (TopK, a skip connection, layers not from 0, no config
to name the hooks), `raysae.json`'s `circuit_tracer.skipped` says why.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from raysae import filesystem
from raysae.circuit_tracer_format import CIRCUIT_TRACER_VERSION, save_circuit_tracer, unexpressible
from raysae.config import RaysaeConfig, SAEConfig, redact
from raysae.models import MULTILAYER_KINDS, CrossLayerTranscoder, MultiLayerDictionary, build_sae

MODEL_FILE = "model.safetensors"
CIRCUIT_TRACER_DIR = "circuit_tracer"
"""The subfolder of a CLT checkpoint holding its circuit-tracer layout."""


def save_multilayer(
    model: MultiLayerDictionary,
    path: Path,
    record_file: str,
    *,
    config: RaysaeConfig | None,
    record: dict[str, Any],
) -> Path:
    """Write `model` (the whole of it, not one shard) to the local directory `path`, replacing it
    only once everything is written; `record` is `raysae.json`'s content beyond what this adds."""
    if model.shards > 1:
        raise ValueError(
            f"{path}: this model holds {model.n_local} of {model.d_sae} features per layer (one "
            "shard); merge the shards' states (models.multilayer.merge_states) into one model to save it"
        )
    if bool((model.input_scale != 1).any()) or bool((model.output_scale != 1).any()):
        model = copy.deepcopy(model)
        model.fold_input_scale()
    tmp = filesystem.fresh_sibling_dir(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp / MODEL_FILE))
    layers = config.model.layers if config is not None else None
    full_record: dict[str, Any] = {
        "architecture": model.architecture,
        "kind": model.kind,
        "d_in": model.d_in,
        "d_out": model.d_out,
        "d_sae": model.d_sae,
        "n_layers": model.n_layers,
        **(
            {
                "layers": layers,
                "hook_point": config.model.hook_point,
                "hook_point_out": config.model.hook_point_out,
            }
            if config is not None
            else {}
        ),
        "sae": model.cfg.model_dump(mode="json"),
        **({"config": config.model_dump(mode="json")} if config is not None else {}),
    }
    if isinstance(model, CrossLayerTranscoder):
        full_record["circuit_tracer"] = _save_circuit_tracer(model, tmp / CIRCUIT_TRACER_DIR, config)
    full_record = redact({**full_record, **record})
    (tmp / record_file).write_text(json.dumps(full_record, indent=2, default=str))
    filesystem.replace_dir(tmp, path)
    return path


def _save_circuit_tracer(model: CrossLayerTranscoder, folder: Path, config: RaysaeConfig | None) -> dict:
    """The circuit-tracer layout in `folder` when it can hold `model`; what raysae.json says of it."""
    if config is None or config.model.hook_point_out is None:
        return {"skipped": "no config to name the input and output hooks circuit-tracer needs"}
    problem = unexpressible(model, config.model.layers)
    if problem is not None:
        return {"skipped": problem}
    save_circuit_tracer(
        model,
        folder,
        input_hook=config.model.hook_point,
        output_hook=config.model.hook_point_out,
        layers=config.model.layers,
        model_name=config.model.name,
        scan=config.name,
    )
    return {"folder": CIRCUIT_TRACER_DIR, "version": CIRCUIT_TRACER_VERSION}


def load_multilayer(
    path: Path, record: dict[str, Any], device: str | torch.device = "cpu"
) -> MultiLayerDictionary:
    """The CLT or crosscoder `save_multilayer` wrote to `path` (`record`: its raysae.json), in eval mode."""
    try:
        sae_cfg = SAEConfig.model_validate(record["sae"])
        d_in, d_out, n_layers = int(record["d_in"]), int(record["d_out"]), int(record["n_layers"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: raysae.json does not describe a {record.get('kind')} ({exc})") from None
    sae_cfg = SAEConfig.model_validate({**sae_cfg.model_dump(), "d_in": d_in, "d_sae": int(record["d_sae"])})
    model = build_sae(sae_cfg, d_in, d_out if sae_cfg.kind == "clt" else None, n_layers=n_layers)
    if not isinstance(model, MultiLayerDictionary) or sae_cfg.kind not in MULTILAYER_KINDS:
        raise ValueError(f"{path}: raysae.json's sae.kind {sae_cfg.kind!r} is not a multi-layer dictionary")
    file = path / MODEL_FILE
    try:
        state = load_file(str(file))
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: missing") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if found != expected:
        raise ValueError(f"{file}: tensors {found} do not match {expected}")
    model.load_state_dict(state)
    model.eval()
    return model.to(device)
