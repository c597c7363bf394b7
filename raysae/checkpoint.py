"""SAE checkpoints in the SAELens 6.x disk format (docs/architecture.md, "Checkpoints"), plus `raysae.json`.

A directory holds `cfg.json`, `sae_weights.safetensors` (`W_enc [d_in, d_sae]`,
`W_dec [d_sae, d_in]` (`[d_sae, d_out]` for a transcoder), `b_enc`, `b_dec`, `threshold` for
JumpReLU-style inference, `W_skip [d_out, d_in]` for a skip transcoder), `sparsity.safetensors` (log10 firing frequency per feature) and our
own `raysae.json` (training architecture, full config with credentials redacted, metrics, ...):
an SAE folder is made to be shared, so it holds no password.
SAELens's `SAE.load_from_disk(dir)` reads the first three as they are.
The directory may also be an object-store URI (`s3://…`, `raysae.filesystem`): it is
written from, and read through, a temporary local copy. Each model describes its
own SAELens config (`saelens_config`); this module does the directory work.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from raysae import filesystem
from raysae.checkpoint_multilayer import load_multilayer, save_multilayer
from raysae.circuit_tracer_format import is_circuit_tracer_dir, load_circuit_tracer
from raysae.config import RaysaeConfig, SAEConfig, redact
from raysae.metrics.sparsity import log_feature_density
from raysae.models import (
    ARCHITECTURES,
    MULTILAYER_KINDS,
    MultiLayerDictionary,
    SparseAutoencoder,
    saelens_class,
    saved_kind,
)

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
RECORD_FILE = "raysae.json"
SAELENS_FORMAT_VERSION = "6.54.12"
"""The SAELens release whose disk format we write and test against."""


def saelens_metadata(config: RaysaeConfig) -> dict[str, Any]:
    """The `metadata` block of cfg.json for an SAE trained under `config`."""
    return {
        "model_name": config.model.name,
        "hook_name": config.model.hook_point,
        "context_size": config.data.context_size,
        "prepend_bos": config.data.prepend_bos,
        "dataset_path": config.data.path,
    }


def save_sae(
    sae: SparseAutoencoder | MultiLayerDictionary,
    path: str | os.PathLike,
    *,
    config: RaysaeConfig | None = None,
    feature_frequency: Tensor | None = None,
    record: dict[str, Any] | None = None,
) -> Path | str:
    """Write `sae` to the directory `path`, replacing it only once everything is written.

    An input scale that is not yet folded is folded into a copy first, so the
    files always describe an SAE that reads raw activations.
    `feature_frequency` (per feature, in [0, 1]) becomes `sparsity.safetensors`.
    A CLT or crosscoder, which SAELens has no format for, is saved as raysae's own record
    (`raysae.checkpoint_multilayer`: `raysae.json`, `model.safetensors` and, for a CLT circuit-tracer
    can compute, its `circuit_tracer/` layout; `feature_frequency` is not kept).
    Returns the directory (a URI stays one).
    """
    if filesystem.is_remote(path):
        with filesystem.staged_dir(path) as local:
            save_sae(sae, local, config=config, feature_frequency=feature_frequency, record=record)
        return str(path)
    path = Path(path)
    if isinstance(sae, MultiLayerDictionary):
        return save_multilayer(sae, path, RECORD_FILE, config=config, record=record or {})
    if float(sae.input_scale) != 1.0:
        sae = copy.deepcopy(sae)
        sae.fold_input_scale()
    tmp = filesystem.fresh_sibling_dir(path)
    metadata = saelens_metadata(config) if config is not None else {}
    if sae.is_transcoder and config is not None:
        # SAELens 6.54 keeps the output hook in the metadata only (TranscoderConfig has no field).
        metadata["hook_name_out"] = config.model.hook_point_out
    cfg = {
        **sae.saelens_config(),
        "metadata": {"sae_lens_version": SAELENS_FORMAT_VERSION, **metadata},
    }
    (tmp / CFG_FILE).write_text(json.dumps(cfg, indent=2))
    tensors = {k: v.detach().cpu().contiguous() for k, v in sae.inference_state().items()}
    save_file(tensors, str(tmp / WEIGHTS_FILE))
    if feature_frequency is not None:
        sparsity = log_feature_density(feature_frequency.detach().cpu())
        save_file({"sparsity": sparsity.contiguous()}, str(tmp / SPARSITY_FILE))
    full_record = {
        "architecture": sae.architecture,
        "kind": sae.kind,
        "d_in": sae.d_in,
        **({"d_out": sae.d_out} if sae.is_transcoder else {}),
        "d_sae": sae.d_sae,
        "sae": sae.cfg.model_dump(mode="json"),
        **({"config": config.model_dump(mode="json")} if config is not None else {}),
        **(record or {}),
    }
    full_record = redact(full_record)
    (tmp / RECORD_FILE).write_text(json.dumps(full_record, indent=2, default=str))
    filesystem.replace_dir(tmp, path)
    return path


def read_json(file: filesystem.Location) -> dict[str, Any]:
    try:
        return json.loads(filesystem.read_bytes(file))
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: missing; not an SAE checkpoint directory") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not valid JSON ({exc})") from None


def load_sae(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> SparseAutoencoder | MultiLayerDictionary:
    """Load an SAE, transcoder, CLT or crosscoder written by `save_sae` (or a SAELens
    standard/topk/jumprelu SAE or transcoder/skip_transcoder/jumprelu_transcoder/jumprelu_skip_transcoder
    checkpoint, or a circuit-tracer CLT folder: `W_enc_{i}`/`W_dec_{i}.safetensors`, config.yaml optional)."""
    if filesystem.is_remote(path):
        with filesystem.local_copy(path) as local:
            try:
                return load_sae(local, device)
            except (FileNotFoundError, ValueError) as exc:  # name the URI, not the download
                raise type(exc)(str(exc).replace(str(local), str(path))) from None
    path = Path(path)
    record_file = path / RECORD_FILE
    record = read_json(record_file) if record_file.exists() else None
    if record is not None and record.get("kind") in MULTILAYER_KINDS:
        return load_multilayer(path, record, device)
    if record is None and not (path / CFG_FILE).exists() and is_circuit_tracer_dir(path):
        loaded = load_circuit_tracer(path, device)
        if isinstance(loaded, list):
            raise ValueError(
                f"{path}: a circuit-tracer transcoder set is one transcoder per layer, not one SAE; "
                "load it with raysae.circuit_tracer_format.load_circuit_tracer"
            )
        return loaded
    cfg = read_json(path / CFG_FILE)
    if record is not None:
        sae_cfg = SAEConfig.model_validate(record["sae"])
    else:
        arch = cfg.get("architecture")
        if saelens_class(str(arch)) is None:
            raise ValueError(f"{path / CFG_FILE}: unsupported architecture {arch!r}")
        cls = saelens_class(str(arch))
        assert cls is not None
        fields = {
            "architecture": cls.architecture,
            "kind": saved_kind(str(arch)),
            "d_sae": cfg["d_sae"],
            "dtype": cfg.get("dtype", "float32"),
        }
        if "k" in cfg:
            fields["k"] = cfg["k"]
        sae_cfg = SAEConfig.model_validate(fields)
    # The width is the checkpoint's, whatever the training config said (usually d_in unset, d_sae
    # from expansion_factor): the loaded SAE's cfg states both, as a config that rebuilds it.
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    sae_cfg = SAEConfig.model_validate({**sae_cfg.model_dump(), "d_in": d_in, "d_sae": d_sae})
    d_out = int(cfg["d_out"]) if sae_cfg.kind != "sae" else None
    sae = ARCHITECTURES[sae_cfg.architecture](sae_cfg, d_in, d_out)
    try:
        tensors = load_file(str(path / WEIGHTS_FILE))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path / WEIGHTS_FILE}: missing") from None
    expected = {k: tuple(v.shape) for k, v in sae.inference_state().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if found != expected:
        raise ValueError(f"{path / WEIGHTS_FILE}: tensors {found} do not match {expected}")
    sae.load_inference_state(tensors)
    sae.eval()
    return sae.to(device)


def load_single_layer_sae(path: str | os.PathLike, device: str | torch.device = "cpu") -> SparseAutoencoder:
    """`load_sae` for the parts that handle one-hook SAEs and transcoders only (the analysis, the
    browser): a CLT or crosscoder directory is a ValueError naming it."""
    sae = load_sae(path, device)
    if not isinstance(sae, SparseAutoencoder):
        raise ValueError(f"{path}: a {sae.kind} over {sae.n_layers} layers, not a one-hook SAE or transcoder")
    return sae


def read_record(directory: filesystem.Location) -> dict[str, Any]:
    """The SAE's `raysae.json` ({} for a checkpoint written by SAELens itself)."""
    file = filesystem.join(directory, RECORD_FILE)
    return read_json(file) if filesystem.exists(file) else {}


def read_saelens_cfg(directory: filesystem.Location) -> dict[str, Any]:
    """The SAE's `cfg.json` as SAELens reads it."""
    return read_json(filesystem.join(directory, CFG_FILE))


def write_json_beside(directory: filesystem.Location, name: str, document: Any) -> str:
    """`<directory>/<name>`: a strict JSON document (no NaN) saved beside an SAE, e.g. its
    `saebench_core.json`. Returns its path."""
    path = filesystem.join(directory, name)
    filesystem.write_bytes(path, json.dumps(document, indent=1, allow_nan=False).encode())
    return path
