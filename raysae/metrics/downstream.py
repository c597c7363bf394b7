"""CE-loss recovered and KL with the SAE (or transcoder) spliced into the language model.

`model` is anything with TransformerLens's `run_with_hooks(tokens, fwd_hooks=...,
return_type="logits")`, e.g. a TransformerLens 4.x `TransformerBridge`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _next_token_stats(logits: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
    """Per-position next-token CE and log-probabilities, positions 0..seq-2."""
    logp = logits[:, :-1].double().log_softmax(-1)
    ce = -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)
    return ce, logp


def _kl(logp_ref: Tensor, logp: Tensor) -> Tensor:
    return (logp_ref.exp() * (logp_ref - logp)).sum(-1)


@torch.no_grad()
def ce_loss_recovered(
    model,
    tokens: Tensor,
    sae,
    hook_point: str,
    *,
    loss_mask: Tensor | None = None,
    splice_mask: Tensor | None = None,
    hook_point_out: str | None = None,
) -> dict[str, float]:
    """Next-token CE of the clean model, with the SAE's reconstruction spliced in at
    `hook_point`, and with that activation zero-ablated; plus KL(clean || spliced).

    `ce_loss_recovered = (ce_zero - ce_sae) / (ce_zero - ce_clean)`: 1 means the
    SAE loses nothing, 0 means it is as bad as deleting the activation.
    `loss_mask` ([batch, seq - 1], bool) selects the predicted positions that count.
    `splice_mask` ([batch, seq], bool) selects the positions whose activation is
    replaced (by the reconstruction, or by zeros); e.g. leave BOS out, which SAEs
    are not trained on. By default every position is replaced.

    A transcoder (`hook_point_out`, its output hook) is spliced in place of its target: in the
    same forward pass its input is read at `hook_point` and its output replaces the activation
    at `hook_point_out` (which must come later in the forward pass); the zero ablation zeroes
    `hook_point_out`. The same definitions as for an SAE, with the target in the input's place.
    """
    sae.eval()
    keep = None if splice_mask is None else ~splice_mask.to(tokens.device)[..., None]
    read: dict[str, Tensor] = {}
    # raysae's SAEs reconstruct (a skip transcoder's skip term included); anything with
    # SAELens's encode/decode will do too.
    reconstruct = getattr(sae, "reconstruct", None) or (lambda a: sae.decode(sae.encode(a)))

    def splice(act: Tensor, hook=None) -> Tensor:
        new = reconstruct(act).to(act.dtype)
        return new if keep is None else torch.where(keep, act, new)

    def read_input(act: Tensor, hook=None) -> Tensor:
        read["input"] = act
        return act

    def transcode(act: Tensor, hook=None) -> Tensor:
        if "input" not in read:
            raise ValueError(
                f"{hook_point_out} runs before {hook_point}: a transcoder cannot be spliced there"
            )
        new = reconstruct(read.pop("input")).to(act.dtype)
        return new if keep is None else torch.where(keep, act, new)

    def zero(act: Tensor, hook=None) -> Tensor:
        return torch.zeros_like(act) if keep is None else act.masked_fill(~keep, 0)

    target = hook_point if hook_point_out is None else hook_point_out
    spliced = (
        [(hook_point, splice)] if hook_point_out is None else [(hook_point, read_input), (target, transcode)]
    )
    runs = {}
    for name, hooks in (("clean", []), ("sae", spliced), ("zero", [(target, zero)])):
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks, return_type="logits")
        runs[name] = _next_token_stats(logits, tokens)
    mask = torch.ones_like(runs["clean"][0], dtype=torch.bool) if loss_mask is None else loss_mask

    def mean(t: Tensor) -> float:
        return float(t[mask].mean())

    ce = {name: mean(stats[0]) for name, stats in runs.items()}
    denom = ce["zero"] - ce["clean"]
    return {
        "ce_clean": ce["clean"],
        "ce_sae": ce["sae"],
        "ce_zero": ce["zero"],
        "ce_loss_recovered": (ce["zero"] - ce["sae"]) / denom if denom != 0 else float("nan"),
        "kl_sae": mean(_kl(runs["clean"][1], runs["sae"][1])),
        "kl_zero": mean(_kl(runs["clean"][1], runs["zero"][1])),
    }
