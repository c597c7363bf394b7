"""Cross-layer transcoders and per-layer transcoders in circuit-tracer 0.5's disk format.

circuit-tracer (Anthropic's circuit tracing, the `circuit-tracer` package) loads a local folder
the way it loads its own cache (`circuit_tracer.utils.caching.load_transcoders_from_cache`): a
`config.yaml` (`model_kind`, `feature_input_hook`, `feature_output_hook`, `scan`, `model_name`)
beside the weights, whose hooks are names inside a block (`ln2.hook_normalized`, applied at
`blocks.{layer}.` for every layer from 0).

- A CLT (`model_kind: cross_layer_transcoder`, `load_clt`): per layer i, `W_enc_{i}.safetensors`
  with `W_enc_{i}` [d_sae, d_model] (our `W_enc[i]` transposed), `b_enc_{i}` [d_sae],
  `b_dec_{i}` [d_model] and, for JumpReLU, `threshold_{i}` [d_sae]; `W_dec_{i}.safetensors` with
  `W_dec_{i}` [d_sae, n_layers - i, d_model] (ours as it is: layer i's features writing to
  layers i..n-1).
- Per-layer transcoders (`model_kind: transcoder_set`, `load_transcoder_set`): `layer_{i}.safetensors`
  with `W_enc` [d_sae, d_model] (ours transposed), `W_dec` [d_sae, d_model], `b_enc`, `b_dec`,
  `activation_function.threshold` [d_sae] for JumpReLU and `W_skip` [d_model, d_model] for a skip
  transcoder (ours as they are).

Both read and write the one residual width `d_model`, so `d_in` must equal `d_out`. circuit-tracer's
activations are ReLU and JumpReLU (`x * (x > threshold)`) only: a BatchTopK model saves as its
JumpReLU form (its inference threshold), and a TopK model is refused, as no file it reads would
reconstruct the same. A ReLU CLT (no thresholds) loads here as JumpReLU with zero thresholds, which
is the same function. Scales are folded before saving, so the files read and write raw activations.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor

from raysae import filesystem
from raysae.config import SAEConfig
from raysae.devices import DTYPES
from raysae.models import CrossLayerTranscoder, SparseAutoencoder, build_sae

CONFIG_FILE = "config.yaml"
CIRCUIT_TRACER_VERSION = "0.5.0"
"""The circuit-tracer release whose loaders this format is written for and tested against."""
CLT_KIND = "cross_layer_transcoder"
SET_KIND = "transcoder_set"
EXPRESSIBLE_ARCHITECTURES = ("standard", "jumprelu", "batchtopk")
"""What circuit-tracer can compute: ReLU (`standard`), JumpReLU, and BatchTopK as its JumpReLU form."""

Transcoders = Sequence[SparseAutoencoder]
"""Per-layer transcoders, the i-th for block i."""


def block_hook(hook: str) -> str:
    """The hook inside a block, as circuit-tracer names it (`ln2.hook_normalized`), from a raysae
    template (`blocks.{layer}.ln2.hook_normalized`), a block's hook (`blocks.3.ln2.hook_normalized`)
    or the name inside the block itself."""
    inner = re.sub(r"^blocks\.(\{layer\}|\d+)\.", "", hook)
    if not inner or inner.startswith("blocks.") or "{" in inner:
        raise ValueError(
            f"hook {hook!r}: circuit-tracer hooks are inside a block (e.g. 'ln2.hook_normalized' or "
            "'blocks.{layer}.hook_mlp_out'), applied at every layer"
        )
    return inner


def unexpressible(model: Any, layers: Sequence[int] | None = None) -> str | None:
    """Why `model` (a CLT, or a sequence of per-layer transcoders) cannot be saved in circuit-tracer
    0.5's format without changing what it computes; None when it can. `layers`: the model's
    block indices, when known (circuit-tracer applies its i-th layer at block i)."""
    if isinstance(model, Sequence):
        return _set_problem(model, layers)
    if not isinstance(model, CrossLayerTranscoder):
        return f"circuit-tracer holds cross-layer and per-layer transcoders only, not a {getattr(model, 'kind', model)!r}"
    problem = _activation_problem(model.architecture, "CLT")
    if problem is None and model.d_in != model.d_out:
        problem = _width_problem(model.d_in, model.d_out)
    if problem is None and model.W_skip is not None:
        problem = (
            "circuit-tracer 0.5's load_clt reads no W_skip (its CLT files hold none), so a CLT with "
            "sae.skip_connection would load without its skip term; train it without one"
        )
    if problem is None and model.shards > 1:
        problem = (
            f"this model holds {model.n_local} of {model.d_sae} features per layer (one shard): "
            "merge the shards' states (models.multilayer.merge_states) into one model first"
        )
    return problem or _layers_problem(layers, model.n_layers)


def _activation_problem(architecture: str, what: str) -> str | None:
    if architecture == "topk":
        return (
            f"circuit-tracer 0.5 has no top-k activation (ReLU and JumpReLU only), so a TopK {what} "
            "cannot be saved in its format without reconstructing differently; train "
            "sae.architecture 'jumprelu', or 'batchtopk' (saved as its JumpReLU form), instead"
        )
    if architecture not in EXPRESSIBLE_ARCHITECTURES:
        return f"circuit-tracer 0.5 has no {architecture!r} {what}: use one of {EXPRESSIBLE_ARCHITECTURES}"
    return None


def _width_problem(d_in: int, d_out: int) -> str:
    return f"circuit-tracer's transcoders read and write one width d_model, but d_in={d_in} != d_out={d_out}"


def _layers_problem(layers: Sequence[int] | None, n_layers: int) -> str | None:
    if layers is not None and list(layers) != list(range(n_layers)):
        return (
            f"circuit-tracer applies its i-th layer at block i from block 0, but these layers are "
            f"{list(layers)}: train on model.layers {list(range(n_layers))}"
        )
    return None


def _set_problem(transcoders: Transcoders, layers: Sequence[int] | None) -> str | None:
    if not transcoders:
        return "no transcoders to save"
    for i, tc in enumerate(transcoders):
        if not isinstance(tc, SparseAutoencoder) or not tc.is_transcoder:
            return f"layer {i}: circuit-tracer's transcoder set holds transcoders, not a {getattr(tc, 'kind', tc)!r}"
        problem = _activation_problem(tc.architecture, "transcoder")
        if problem is None and tc.d_in != tc.d_out:
            problem = _width_problem(tc.d_in, tc.d_out)
        if problem is not None:
            return f"layer {i}: {problem}"
    first = transcoders[0]
    for i, tc in enumerate(transcoders):
        if (tc.d_sae, tc.d_in, tc.kind) != (first.d_sae, first.d_in, first.kind):
            return (
                f"layer {i}: circuit-tracer's transcoder set needs one width and kind for every layer, "
                f"got d_sae={tc.d_sae}, d_in={tc.d_in}, {tc.kind} after d_sae={first.d_sae}, "
                f"d_in={first.d_in}, {first.kind}"
            )
    return _layers_problem(layers, len(transcoders))


def save_circuit_tracer(
    model: CrossLayerTranscoder | Transcoders,
    directory: str | os.PathLike,
    *,
    input_hook: str,
    output_hook: str,
    layers: Sequence[int] | None = None,
    model_name: str | None = None,
    scan: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path | str:
    """Write `model` (a CLT, or per-layer transcoders, the i-th for block i) to `directory` in
    circuit-tracer 0.5's layout, replacing it once everything is written. The hooks are raysae
    hook names or templates (`blocks.{layer}.ln2.hook_normalized`) or circuit-tracer's names
    inside a block; `scan` (circuit-tracer's name for the set, shown by its frontend) defaults to
    the directory's name. Raises ValueError (`unexpressible`'s reason) for what circuit-tracer
    cannot compute, e.g. TopK. Returns the directory (a URI stays one)."""
    problem = unexpressible(model, layers)
    if problem is not None:
        raise ValueError(f"{directory}: cannot save in circuit-tracer's format: {problem}")
    config: dict[str, Any] = {
        "model_kind": SET_KIND if isinstance(model, Sequence) else CLT_KIND,
        "feature_input_hook": block_hook(input_hook),
        "feature_output_hook": block_hook(output_hook),
        "scan": scan or Path(str(directory).rstrip("/")).name,
        **({"model_name": model_name} if model_name else {}),
    }
    if filesystem.is_remote(directory):
        with filesystem.staged_dir(directory) as local:
            _write(model, local, config, dtype)
        return str(directory)
    path = Path(directory)
    tmp = filesystem.fresh_sibling_dir(path)
    _write(model, tmp, config, dtype)
    filesystem.replace_dir(tmp, path)
    return path


def _write(model: CrossLayerTranscoder | Transcoders, folder: Path, config: dict[str, Any], dtype) -> None:
    if isinstance(model, Sequence):
        for i, tc in enumerate(model):
            save_file(_cast(transcoder_tensors(_folded(tc)), dtype), str(folder / f"layer_{i}.safetensors"))
    else:
        for name, tensors in clt_files(_folded(model)).items():
            save_file(_cast(tensors, dtype), str(folder / name))
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))


def _folded(model):
    """`model` with its scales folded into the weights (a copy when there is anything to fold)."""
    scales = [model.input_scale] + ([model.output_scale] if hasattr(model, "output_scale") else [])
    if any(bool((s != 1).any()) for s in scales):
        model = copy.deepcopy(model)
        model.fold_input_scale()
    return model


def _cast(tensors: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    return {k: v.detach().to(device="cpu", dtype=dtype).contiguous() for k, v in tensors.items()}


def inference_threshold(model, shape: tuple[int, ...]) -> Tensor | None:
    """The JumpReLU threshold circuit-tracer applies, broadcast to `shape` ([d_sae] per transcoder,
    [n_layers, d_sae] per CLT): JumpReLU's own, BatchTopK's inference threshold (a transcoder's one
    scalar; a CLT's `batch_threshold`, one per layer, or one for all with `topk_scope: model`);
    None for ReLU. BatchTopK's inference `relu(x) * (x > t)` is `x * (x > t)`, as its t >= 0."""
    if model.architecture == "standard":
        return None
    if isinstance(model, CrossLayerTranscoder) and model.architecture == "batchtopk":
        per_group = model.batch_threshold.detach()
        return (
            per_group.view(-1, 1).expand(shape)
            if per_group.numel() > 1
            else per_group.reshape(()).expand(shape)
        )
    return model.threshold.detach().expand(shape)


def clt_files(model: CrossLayerTranscoder) -> dict[str, dict[str, Tensor]]:
    """File name -> tensors of a (folded) CLT in circuit-tracer's layout."""
    n_layers, _, d_sae = model.W_enc.shape
    threshold = inference_threshold(model, (n_layers, d_sae))
    files = {}
    for i in range(n_layers):
        enc = {f"W_enc_{i}": model.W_enc[i].T, f"b_enc_{i}": model.b_enc[i], f"b_dec_{i}": model.b_dec[i]}
        if threshold is not None:
            enc[f"threshold_{i}"] = threshold[i]
        files[f"W_enc_{i}.safetensors"] = enc
        files[f"W_dec_{i}.safetensors"] = {f"W_dec_{i}": model.W_dec[i]}
    return files


def transcoder_tensors(tc: SparseAutoencoder) -> dict[str, Tensor]:
    """The tensors of one (folded) transcoder's `layer_{i}.safetensors`."""
    tensors = {"W_enc": tc.W_enc.T, "W_dec": tc.W_dec, "b_enc": tc.b_enc, "b_dec": tc.b_dec}
    threshold = inference_threshold(tc, (tc.d_sae,))
    if threshold is not None:
        tensors["activation_function.threshold"] = threshold
    if tc.kind == "skip_transcoder":
        tensors["W_skip"] = tc.W_skip
    return tensors


# --- reading ---------------------------------------------------------------------------------
def is_circuit_tracer_dir(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds a circuit-tracer CLT (`W_enc_0.safetensors`) or transcoder set
    (`layer_0.safetensors`), with or without its config.yaml."""
    return any(
        filesystem.exists(filesystem.join(directory, f))
        for f in ("W_enc_0.safetensors", "layer_0.safetensors")
    )


def read_circuit_tracer_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The folder's config.yaml ({} for bare weights, e.g. a Hub snapshot of `*.safetensors`)."""
    file = filesystem.join(directory, CONFIG_FILE)
    if not filesystem.exists(file):
        return {}
    config = yaml.safe_load(filesystem.read_bytes(file))
    if not isinstance(config, dict):
        raise ValueError(f"{file}: not a circuit-tracer config (a YAML mapping)")
    return config


def load_circuit_tracer(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> CrossLayerTranscoder | list[SparseAutoencoder]:
    """A circuit-tracer CLT folder as a raysae `CrossLayerTranscoder` (JumpReLU; zero thresholds for
    a ReLU CLT), or a transcoder set as a list of raysae transcoders (standard or jumprelu,
    skip_transcoder with W_skip), in eval mode, in the files' dtype."""
    if filesystem.is_remote(directory):
        with filesystem.local_copy(directory) as local:
            return load_circuit_tracer(local, device)
    path = Path(directory)
    kind = read_circuit_tracer_config(path).get("model_kind")
    if kind == CLT_KIND or (kind is None and (path / "W_enc_0.safetensors").exists()):
        return _load_clt(path).to(device)
    if kind == SET_KIND or (kind is None and (path / "layer_0.safetensors").exists()):
        return [tc.to(device) for tc in _load_set(path)]
    raise ValueError(
        f"{path}: not a circuit-tracer folder (config.yaml model_kind {kind!r}; no W_enc_0.safetensors "
        "or layer_0.safetensors)"
    )


def _numbered(path: Path, prefix: str) -> list[Path]:
    found = {
        int(m.group(1)): f
        for f in path.iterdir()
        if (m := re.fullmatch(rf"{prefix}(\d+)\.safetensors", f.name))
    }
    if sorted(found) != list(range(len(found))) or not found:
        raise ValueError(
            f"{path}: {prefix}N.safetensors files must be numbered 0..n-1, found {sorted(found)}"
        )
    return [found[i] for i in range(len(found))]


def _read(file: Path, names: Sequence[str]) -> dict[str, Tensor]:
    tensors = load_file(str(file))
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ValueError(f"{file}: missing tensors {missing} (has {sorted(tensors)})")
    return tensors


def _dtype_name(t: Tensor, file: Path) -> str:
    names = {v: k for k, v in DTYPES.items()}
    if t.dtype not in names:
        raise ValueError(f"{file}: dtype {t.dtype} is not one of {sorted(DTYPES)}")
    return names[t.dtype]


def _load_clt(path: Path) -> CrossLayerTranscoder:
    enc_files = _numbered(path, "W_enc_")
    n_layers = len(enc_files)
    enc = [_read(f, [f"W_enc_{i}", f"b_enc_{i}", f"b_dec_{i}"]) for i, f in enumerate(enc_files)]
    dec = [_read(path / f"W_dec_{i}.safetensors", [f"W_dec_{i}"])[f"W_dec_{i}"] for i in range(n_layers)]
    d_sae, d_model = enc[0]["W_enc_0"].shape
    has_threshold = "threshold_0" in enc[0]
    for i, (e, d) in enumerate(zip(enc, dec, strict=True)):
        expected = (d_sae, n_layers - i, d_model)
        if tuple(e[f"W_enc_{i}"].shape) != (d_sae, d_model) or tuple(d.shape) != expected:
            raise ValueError(
                f"{path}: layer {i} has W_enc {tuple(e[f'W_enc_{i}'].shape)} and W_dec {tuple(d.shape)}, "
                f"expected {(d_sae, d_model)} and {expected}"
            )
        if (f"threshold_{i}" in e) != has_threshold:
            raise ValueError(f"{path}: threshold_{i} is {'missing' if has_threshold else 'extra'}")
    cfg = SAEConfig.model_validate(
        {
            "architecture": "jumprelu",
            "kind": "clt",
            "d_in": d_model,
            "d_sae": d_sae,
            "dtype": _dtype_name(enc[0]["W_enc_0"], enc_files[0]),
        }
    )
    model = build_sae(cfg, d_model, d_model, n_layers=n_layers)
    assert isinstance(model, CrossLayerTranscoder)
    with torch.no_grad():
        for i in range(n_layers):
            model.W_enc[i].copy_(enc[i][f"W_enc_{i}"].T)
            model.b_enc[i].copy_(enc[i][f"b_enc_{i}"])
            model.b_dec[i].copy_(enc[i][f"b_dec_{i}"])
            model.W_dec[i].copy_(dec[i])
            # A ReLU CLT is JumpReLU at 0: x * (x > 0) = relu(x).
            model.threshold[i].copy_(enc[i][f"threshold_{i}"] if has_threshold else torch.zeros(d_sae))
        model.input_scale.fill_(1.0)
        model.output_scale.fill_(1.0)
        model.initialized.fill_(True)
    return model.eval()


def _load_set(path: Path) -> list[SparseAutoencoder]:
    transcoders = []
    for i, file in enumerate(_numbered(path, "layer_")):
        t = _read(file, ["W_enc", "W_dec", "b_enc", "b_dec"])
        d_sae, d_model = t["W_enc"].shape
        jumprelu = "activation_function.threshold" in t
        cfg = SAEConfig.model_validate(
            {
                "architecture": "jumprelu" if jumprelu else "standard",
                "kind": "skip_transcoder" if "W_skip" in t else "transcoder",
                "d_in": d_model,
                "d_sae": d_sae,
                "dtype": _dtype_name(t["W_enc"], file),
            }
        )
        tc = build_sae(cfg, d_model, t["W_dec"].shape[1])
        state = {k: v for k, v in t.items() if k != "activation_function.threshold"}
        state["W_enc"] = t["W_enc"].T
        if jumprelu:
            state["threshold"] = t["activation_function.threshold"]
        expected = {k: tuple(v.shape) for k, v in tc.inference_state().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        if found != expected:
            raise ValueError(f"{file}: tensors {found} do not match {expected} (layer {i})")
        tc.load_inference_state(state)
        transcoders.append(tc.eval())
    return transcoders
