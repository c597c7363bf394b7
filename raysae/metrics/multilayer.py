"""Metrics of multi-layer dictionaries (cross-layer transcoders, crosscoders).

A multi-layer dictionary reads `x` [tokens, L, d_in] (layer i = the i-th configured layer) and
reconstructs `target` [tokens, L, d_out] (a crosscoder's target is `x`). Its features are
[tokens, L, F] (a CLT: F per layer) or [tokens, F] (a crosscoder: one dictionary).

`evaluate_layers`: reconstruction and sparsity pooled over the layers (the concatenated target
vector per token: `fvu` = summed squared error over summed variance of every layer's dimensions;
`l0` = features firing per token over all layers) and per layer (`fvu_layer_{l}`,
`mse_layer_{l}`, `explained_variance_layer_{l}`, and a CLT's `l0_layer_{l}`: its layer-l features
firing per token), l the model's layer number. Exact and streaming, as `evaluate`.

`replacement_ce`: the language model with the dictionary's reconstructions in place of its
targets. The replacement model (`ce_loss_recovered`, `kl_sae`) replaces every layer's target at
once in one forward; a CLT's layer-l features read that forward's layer-l input, already changed
by the replaced layers before it (the replacement model of circuit tracing), so its activation must
be causal (per-layer top-k, BatchTopK's inference threshold, JumpReLU: not `topk_scope: model`).
A crosscoder reads every layer at once, so it reconstructs from the clean forward's inputs. The
per-layer splice (`ce_loss_recovered_layer_{l}`, `kl_layer_{l}`) replaces one layer's target by
the reconstruction from the clean inputs, all else clean. The zero ablations (the denominators)
zero the same targets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from raysae.metrics.downstream import _kl, _next_token_stats
from raysae.metrics.reconstruction import ReconstructionStats
from raysae.metrics.sparsity import FiringStats


def layer_names(n_layers: int, layers: Sequence[int] | None) -> list[int]:
    """The model's layer number of each dictionary layer (0..L-1 when not given)."""
    names = list(range(n_layers)) if layers is None else list(layers)
    if len(names) != n_layers:
        raise ValueError(f"{len(names)} layer numbers for a dictionary of {n_layers} layers")
    return names


@torch.no_grad()
def evaluate_layers(
    dictionary,
    batches: Iterable[Tensor | tuple[Tensor, Tensor]],
    *,
    layers: Sequence[int] | None = None,
    dense_threshold: float = 0.1,
    max_tokens: int | None = None,
) -> dict[str, float]:
    """Pooled and per-layer reconstruction and sparsity of `dictionary` in eval mode over
    `batches` (`x` [rows, L, d_in], or (x, target) pairs; see the module docstring)."""
    was_training = dictionary.training
    dictionary.eval()
    n_layers = dictionary.n_layers
    names = layer_names(n_layers, layers)
    device = next(dictionary.parameters()).device
    pooled, per_layer = ReconstructionStats(), [ReconstructionStats() for _ in range(n_layers)]
    firing: FiringStats | None = None
    layer_firing: list[FiringStats] = []
    try:
        for batch in batches:
            if max_tokens is not None and pooled.n_tokens >= max_tokens:
                break
            x, target = batch if isinstance(batch, tuple | list) else (batch, None)
            if max_tokens is not None:
                x = x[: max_tokens - pooled.n_tokens]
                target = None if target is None else target[: len(x)]
            x = x.to(device)
            if dictionary.is_transcoder:
                if target is None:
                    raise ValueError("evaluating a cross-layer transcoder needs (inputs, targets) batches")
                y = target.to(device)
            else:
                y = x
            acts = dictionary.encode(x)
            y_hat = dictionary.reconstruct(x, acts)
            rows = y.shape[0]
            pooled.update(y.reshape(rows, -1), y_hat.reshape(rows, -1))
            for i, stats in enumerate(per_layer):
                stats.update(y[:, i], y_hat[:, i])
            if firing is None:
                firing = FiringStats(acts[0].numel())
                if acts.ndim == 3:
                    layer_firing = [FiringStats(acts.shape[-1]) for _ in range(acts.shape[1])]
            firing.update(acts.reshape(rows, -1))
            for i, stats in enumerate(layer_firing):
                stats.update(acts[:, i])
    finally:
        dictionary.train(was_training)
    if firing is None:
        raise ValueError("no activations were evaluated")
    metrics: dict[str, float] = {
        **pooled.result(),
        **firing.result(dense_threshold),
        "n_tokens": pooled.n_tokens,
    }
    for name, stats in zip(names, per_layer, strict=True):
        result = stats.result()
        for key in ("fvu", "mse", "explained_variance"):
            metrics[f"{key}_layer_{name}"] = result[key]
    for name, stats in zip(names, layer_firing, strict=False):
        metrics[f"l0_layer_{name}"] = stats.result(dense_threshold)["l0"]
    return metrics


@torch.no_grad()
def replacement_ce(
    model,
    tokens: Tensor,
    dictionary,
    input_hooks: Sequence[str],
    output_hooks: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    loss_mask: Tensor | None = None,
    splice_mask: Tensor | None = None,
    per_layer: bool = True,
) -> dict[str, float]:
    """CE and KL of the replacement model and of each per-layer splice (the module docstring).

    `model` has TransformerLens's `run_with_hooks`; `input_hooks[i]` / `output_hooks[i]` are the
    hooks of dictionary layer i (a crosscoder's output hooks are its input hooks). `loss_mask`
    ([batch, seq - 1]) selects the predicted positions that count, `splice_mask` ([batch, seq])
    the positions whose targets are replaced (e.g. all but BOS); by default all of them.
    """
    dictionary.eval()
    n_layers = dictionary.n_layers
    names = layer_names(n_layers, layers)
    if len(input_hooks) != n_layers or len(output_hooks) != n_layers:
        raise ValueError(f"a dictionary of {n_layers} layers needs {n_layers} input and output hooks")
    keep = None if splice_mask is None else ~splice_mask.to(tokens.device)[..., None]

    def put(act: Tensor, new: Tensor) -> Tensor:
        new = new.to(act.dtype)
        return new if keep is None else torch.where(keep, act, new)

    clean_inputs: dict[int, Tensor] = {}

    def reader(i: int):
        def hook(act: Tensor, hook=None) -> Tensor:
            clean_inputs[i] = act
            return act

        return hook

    clean_logits = model.run_with_hooks(
        tokens, fwd_hooks=[(h, reader(i)) for i, h in enumerate(input_hooks)], return_type="logits"
    )
    batch, seq = tokens.shape
    stacked = torch.stack([clean_inputs[i] for i in range(n_layers)], dim=-2)  # [batch, seq, L, d_in]
    clean_recon = dictionary.reconstruct(stacked.reshape(batch * seq, n_layers, -1))
    clean_recon = clean_recon.reshape(batch, seq, n_layers, -1)

    def from_clean(i: int):
        return lambda act, hook=None: put(act, clean_recon[:, :, i])

    def zero(act: Tensor, hook=None) -> Tensor:
        return torch.zeros_like(act) if keep is None else act.masked_fill(~keep, 0)

    runs: dict[str, list] = {"clean": [(h, reader(i)) for i, h in enumerate(input_hooks)]}
    if dictionary.is_transcoder:
        runs["sae"] = _causal_replacement_hooks(dictionary, input_hooks, output_hooks, put)
    else:
        runs["sae"] = [(h, from_clean(i)) for i, h in enumerate(output_hooks)]
    runs["zero"] = [(h, zero) for h in output_hooks]
    if per_layer:
        for i, h in enumerate(output_hooks):
            runs[f"sae_layer_{names[i]}"] = [(h, from_clean(i))]
            runs[f"zero_layer_{names[i]}"] = [(h, zero)]
    stats = {"clean": _next_token_stats(clean_logits, tokens)}
    for name, hooks in runs.items():
        if name != "clean":
            stats[name] = _next_token_stats(
                model.run_with_hooks(tokens, fwd_hooks=hooks, return_type="logits"), tokens
            )
    mask = torch.ones_like(stats["clean"][0], dtype=torch.bool) if loss_mask is None else loss_mask

    def mean(t: Tensor) -> float:
        return float(t[mask].mean())

    ce = {name: mean(s[0]) for name, s in stats.items()}
    kl = {name: mean(_kl(stats["clean"][1], s[1])) for name, s in stats.items() if name != "clean"}

    def recovered(spliced: str, zeroed: str) -> float:
        denom = ce[zeroed] - ce["clean"]
        return (ce[zeroed] - ce[spliced]) / denom if denom != 0 else float("nan")

    out = {
        "ce_clean": ce["clean"],
        "ce_sae": ce["sae"],
        "ce_zero": ce["zero"],
        "ce_loss_recovered": recovered("sae", "zero"),
        "kl_sae": kl["sae"],
        "kl_zero": kl["zero"],
    }
    if per_layer:
        for name in names:
            out[f"ce_loss_recovered_layer_{name}"] = recovered(f"sae_layer_{name}", f"zero_layer_{name}")
            out[f"kl_layer_{name}"] = kl[f"sae_layer_{name}"]
    return out


def _causal_replacement_hooks(dictionary, input_hooks: Sequence[str], output_hooks: Sequence[str], put):
    """Hooks of the one-forward replacement model of a CLT: layer i's features are encoded from the
    input its hook sees in that forward, and layer t's target is replaced by the decode of the
    features of layers <= t (`dictionary.encode_layer` / `decode_layer`)."""
    inputs: dict[int, Tensor] = {}
    acts: dict[int, Tensor] = {}

    def encoder(i: int):
        def hook(act: Tensor, hook=None) -> Tensor:
            flat = act.reshape(-1, act.shape[-1])
            inputs[i] = flat
            acts[i] = dictionary.encode_layer(flat, i)
            return act

        return hook

    def decoder(t: int):
        def hook(act: Tensor, hook=None) -> Tensor:
            missing = [i for i in range(t + 1) if i not in acts]
            if missing:
                raise ValueError(
                    f"{output_hooks[t]} runs before {input_hooks[missing[0]]}: the CLT cannot be spliced there"
                )
            y = dictionary.decode_layer([acts[i] for i in range(t + 1)], t, inputs[t])
            return put(act, y.reshape(act.shape))

        return hook

    hooks = [(h, encoder(i)) for i, h in enumerate(input_hooks)]
    return hooks + [(h, decoder(t)) for t, h in enumerate(output_hooks)]
