"""The shared body of every SAE: parameters, input scaling, init, decoder constraint.

Conventions (the same as SAELens 6.x, so saved weights load there unchanged):
`W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]`, `b_enc [d_sae]`, `b_dec [d_in]`,
and `encode(x) = act((x * s - b_dec) @ W_enc + b_enc)`, where `s` is the input
scale (mean norm -> sqrt(d_in)). The scale is folded into the weights after
training, so a finished SAE reads raw activations with `s = 1`.

Losses are computed in normalised units (inputs times `s`) so coefficients mean
the same on every model: `mse_loss` is the squared error summed over `d_in`
and averaged over tokens.

Transcoders (`sae.kind`: `transcoder`, `skip_transcoder`) are the same body reading one
hook and writing another, as SAELens 6.x's `Transcoder` classes: `W_dec [d_sae, d_out]`,
`b_dec [d_out]`, `encode(x) = act(x * s @ W_enc + b_enc)` (no `b_dec` subtracted: it lives
in the output space), `decode(f) = (f @ W_dec + b_dec) / t` with `t` the output scale (the
target's mean norm -> sqrt(d_out)), and a skip transcoder adds `x * s @ W_skip.T / t`
(`W_skip [d_out, d_in]`, zero at init). The loss is the target's: `forward(x, target)`.
An SAE is the case `target = x`, one scale, `d_out = d_in`.

The models are plain PyTorch: no Ray, no `torch.distributed`, no files. State
that training keeps across steps (which latents are dead, BatchTopK's inference
threshold) is updated by the trainer from `batch_statistics`, which data-parallel
workers sum first, so that a forward pass on one worker can never wait for another.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from raysae.devices import DTYPES
from raysae.models.init import geometric_median
from raysae.models.sparse import ActiveLatents

if TYPE_CHECKING:  # the models read their settings; they never load or validate a config
    from raysae.config.sae import SAEConfig


class ForwardOutput(NamedTuple):
    """What `sae(x)` returns; every loss is a scalar tensor."""

    reconstruction: Tensor
    """x_hat (a transcoder's y_hat) in the units of the input (target)."""
    dense_acts: Tensor | None
    """[batch, d_sae] feature activations, or None where the forward pass decoded sparsely
    (`active`); `feature_acts` gives them either way."""
    loss: Tensor
    """mse_loss + sparsity_loss + aux_loss: what the optimiser minimises."""
    mse_loss: Tensor
    """Squared error summed over d_out (d_in for an SAE), mean over tokens, in normalised units."""
    sparsity_loss: Tensor
    """Weighted L1 (standard) or L0 (jumprelu) penalty; 0 for top-k architectures."""
    aux_loss: Tensor
    """Weighted AuxK loss on dead latents (topk, batchtopk); 0 otherwise."""
    active: ActiveLatents | None = None
    """The kept latents as (indices, values), where the forward pass decoded from them."""

    @property
    def feature_acts(self) -> Tensor:
        """[batch, d_sae] feature activations (built from `active` when decoded sparsely)."""
        if self.dense_acts is not None:
            return self.dense_acts
        assert self.active is not None
        return self.active.dense()

    def l0(self) -> Tensor:
        """Mean firing latents per token (from the indices when decoded sparsely)."""
        if self.active is not None:
            return self.active.l0()
        return (self.feature_acts.detach() > 0).sum(-1).float().mean()


class SparseAutoencoder(nn.Module):
    """Base class; subclasses set `architecture` and implement `activate`."""

    architecture: ClassVar[str]
    """Our (training) architecture name, the registry key."""
    saelens_architecture: ClassVar[str]
    """The SAELens inference class this SAE is saved as."""
    unit_norm_decoder: ClassVar[bool] = True
    """Keep decoder rows at unit norm during training (removing the parallel gradient)."""
    k: int | None = None
    """Active latents per token in use (the top-k family, which the trainer anneals); None otherwise."""
    sparse_decode: bool = True
    """Decode the top-k family from (indices, values) (`ActiveLatents`) rather than a dense
    [batch, d_sae] matrix; False is the dense reference path (the tests compare the two)."""
    transcoder_ok: ClassVar[bool] = True
    """Whether the architecture trains as a transcoder (`sae.kind` other than `sae`)."""
    sync_free: bool = False
    """Take the paths that never read a device value on the host even on the CPU (where such a
    read is free, so the CPU by default skips work by it); on other devices they always are."""

    input_scale: Tensor
    """Multiplies raw inputs; 1 once folded into the weights."""
    output_scale: Tensor
    """Transcoders only: multiplies raw targets (the output is divided by it); 1 once folded."""
    tokens_since_fired: Tensor
    """[d_sae] training tokens since each latent last fired (the dead mask)."""
    initialized: Tensor
    """Whether the input scale and `b_dec` were set from data."""

    @staticmethod
    def width(cfg: SAEConfig, d_in: int) -> int:
        """d_sae: `sae.d_sae`, else `sae.expansion_factor * d_in`."""
        return cfg.d_sae or cfg.expansion_factor * d_in

    @classmethod
    def width_problems(cls, cfg: SAEConfig, d_in: int) -> Iterator[tuple[str, str]]:
        """What is wrong with `cfg` for inputs of width `d_in`, as `(dotted path, message)`."""
        d_sae = cls.width(cfg, d_in)
        if cfg.k_aux is not None and cfg.k_aux > d_sae:
            yield "sae.k_aux", f"k_aux={cfg.k_aux} is larger than d_sae={d_sae}"
        if cfg.kind != "sae" and not cls.transcoder_ok:
            yield "sae.kind", f"architecture {cfg.architecture!r} trains only as an SAE, not as a {cfg.kind}"

    def __init__(self, cfg: SAEConfig, d_in: int, d_out: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.kind = cfg.kind
        self.is_transcoder = cfg.kind != "sae"
        """Reads one hook and writes another (`forward(x, target)`)."""
        if d_out is not None and d_out != d_in and not self.is_transcoder:
            raise ValueError(f"an SAE writes what it reads: d_out={d_out} must equal d_in={d_in}")
        self.d_in = d_in
        self.d_out = d_in if d_out is None else d_out
        self.d_sae = self.width(cfg, d_in)
        dtype = DTYPES[cfg.dtype]
        self.W_enc = nn.Parameter(torch.empty(d_in, self.d_sae, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(torch.empty(self.d_sae, self.d_out, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(self.d_out, dtype=dtype))
        if cfg.kind == "skip_transcoder":
            # The dense linear part of the map, zero at init as in SAELens's SkipTranscoder.
            self.W_skip = nn.Parameter(torch.zeros(self.d_out, d_in, dtype=dtype))
        # Multiplies raw inputs; 1 once folded into the weights.
        self.register_buffer("input_scale", torch.ones((), dtype=dtype))
        if self.is_transcoder:  # only transcoders hold it, so an SAE's state is as it always was
            self.register_buffer("output_scale", torch.ones((), dtype=dtype))
        # Training tokens since each latent last fired (AuxK's dead mask).
        self.register_buffer("tokens_since_fired", torch.zeros(self.d_sae, dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.reset_parameters()

    def extra_repr(self) -> str:
        """What `repr(sae)` shows after the class name (nn.Module's hook): the architecture, its
        shape and dtype; subclasses add their sparsity setting (k, threshold, coefficient)."""
        dtype = str(self.W_enc.dtype).removeprefix("torch.")
        kind = f"kind={self.kind!r}, " if self.is_transcoder else ""
        out = f", d_out={self.d_out}" if self.is_transcoder else ""
        return f"architecture={self.architecture!r}, {kind}d_in={self.d_in}{out}, d_sae={self.d_sae}, dtype={dtype}"

    @property
    def target_scale(self) -> Tensor:
        """What multiplies raw targets: the output scale of a transcoder, the input scale of an SAE."""
        return self.output_scale if self.is_transcoder else self.input_scale

    # --- initialisation -------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random unit-norm decoder rows, encoder = decoder transpose, zero biases. A transcoder's
        encoder columns are drawn on their own (unit norm), as its input and output spaces differ."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        w = torch.randn(self.d_sae, self.d_out, generator=gen, dtype=torch.float32)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec.copy_(w)
        if self.is_transcoder:
            w = torch.randn(self.d_sae, self.d_in, generator=gen, dtype=torch.float32)
            w /= w.norm(dim=1, keepdim=True)
        self.W_enc.copy_(w.T)
        self.b_enc.zero_()
        self.b_dec.zero_()
        if self.kind == "skip_transcoder":
            self.W_skip.zero_()

    @torch.no_grad()
    def initialize_from_batch(self, x: Tensor, target: Tensor | None = None) -> None:
        """Estimate the input scale (and a transcoder's output scale, from `target`) and
        initialise `b_dec` from a first batch: the centre of what the SAE reconstructs."""
        x = x.to(device=self.W_enc.device, dtype=torch.float32)
        if self.cfg.normalize_activations:
            self.input_scale.fill_(_norm_scale(x, "activations"))
        y = x * self.input_scale.float()
        if self.is_transcoder:
            y = self._need_target(target).to(device=self.W_enc.device, dtype=torch.float32)
            if self.cfg.normalize_activations:
                self.output_scale.fill_(_norm_scale(y, "target activations"))
            y = y * self.output_scale.float()
        if self.cfg.b_dec_init == "geometric_median":
            self.b_dec.copy_(geometric_median(y))
        elif self.cfg.b_dec_init == "mean":
            self.b_dec.copy_(y.mean(0))
        self.initialized.fill_(True)

    def _need_target(self, target: Tensor | None) -> Tensor:
        if target is None:
            raise ValueError(
                f"a {self.kind} needs target activations: batches of (input, target) pairs, "
                "from a paired cache (model.hook_point_out)"
            )
        if target.shape[-1] != self.d_out:
            raise ValueError(f"target width {target.shape[-1]} is not the {self.kind}'s d_out={self.d_out}")
        return target

    # --- the forward pass --------------------------------------------------
    def pre_activation(self, x_scaled: Tensor) -> Tensor:
        # The bias is added in the matmul's dtype: under bf16 autocast the fp32 bias would
        # otherwise promote the pre-activations (and the top-k over them) back to fp32.
        # A transcoder's b_dec is in the output space, so (as SAELens) its input is not centred.
        h = (x_scaled if self.is_transcoder else x_scaled - self.b_dec) @ self.W_enc
        return h + self.b_enc.to(h.dtype)

    def activate(self, pre: Tensor) -> Tensor:
        """Pre-activations -> feature activations (training or inference mode)."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """Raw activations [..., d_in] -> feature activations [..., d_sae]."""
        return self.activate(self.pre_activation(x.to(self.W_enc.dtype) * self.input_scale))

    def decode(self, feature_acts: Tensor) -> Tensor:
        """Feature activations -> reconstruction in the units of the input (a transcoder's
        output units; without a skip transcoder's skip term, as SAELens's `decode`)."""
        return (feature_acts @ self.W_dec + self.b_dec) / self.target_scale

    def reconstruct(self, x: Tensor, feature_acts: Tensor | None = None) -> Tensor:
        """Raw input -> the reconstruction (a transcoder's prediction of its target, skip
        included); `feature_acts`, when given, are `encode(x)` already computed."""
        out = self.decode(self.encode(x) if feature_acts is None else feature_acts)
        if self.kind == "skip_transcoder":
            out = out + self.skip(x.to(self.W_enc.dtype) * self.input_scale) / self.target_scale
        return out

    def skip(self, x_scaled: Tensor) -> Tensor:
        """A skip transcoder's dense term, in normalised output units."""
        return x_scaled @ self.W_skip.T

    def forward(
        self,
        x: Tensor,
        target: Tensor | None = None,
        *,
        dead_mask: Tensor | None = None,
        sparsity_scale: float = 1.0,
    ) -> ForwardOutput:
        """Reconstruction, features and loss terms.

        `target` is what a transcoder predicts (its output hook's activations for the same
        tokens); an SAE reconstructs `x` and ignores it. `dead_mask` ([d_sae] bool,
        `dead_mask()` during training) selects the latents the AuxK loss may use; without one
        there is no AuxK loss. `sparsity_scale` is the sparsity penalty's warm-up factor.
        """
        x_n = x.to(self.W_enc.dtype) * self.input_scale
        if self.is_transcoder:
            y_n = self._need_target(target).to(self.W_enc.dtype) * self.output_scale
        else:
            y_n = x_n
        pre = self.pre_activation(x_n)
        active = self.activate_sparse(pre) if self.uses_sparse_decode(pre) else None
        if active is None:
            acts, penalty = self.activate_and_penalize(pre)
            recon_n = acts @ self.W_dec + self.b_dec
        else:  # the top-k family keeps no sparsity penalty
            acts, penalty = None, pre.new_zeros(())
            recon_n = active.decode(self.W_dec) + self.b_dec
        if self.kind == "skip_transcoder":
            recon_n = recon_n + self.skip(x_n)
        mse = (recon_n - y_n).pow(2).sum(-1).mean()
        # The loss terms in the reconstruction's dtype (fp32 under bf16 autocast, as `b_dec` is).
        sparsity = penalty.to(mse.dtype) * sparsity_scale
        # AuxK fits the dead latents to what the live ones left of the target.
        aux = self.aux_loss(y_n, recon_n, pre, dead_mask) if dead_mask is not None else mse.new_zeros(())
        aux = aux.to(mse.dtype)
        return ForwardOutput(
            recon_n / self.target_scale, acts, mse + sparsity + aux, mse, sparsity, aux, active
        )

    def uses_sparse_decode(self, pre: Tensor) -> bool:
        """Whether this forward pass decodes from (indices, values): `sparse_decode`, on every
        device, as it measured faster on the CPU too (d 256 x 4096, k 32: TopK 67 vs 107 ms/step)."""
        return self.sparse_decode and pre.ndim == 2

    def activate_sparse(self, pre: Tensor) -> ActiveLatents | None:
        """The kept latents as (indices, values), for architectures that keep a few per token
        (in the mode the SAE is in); None decodes densely."""
        return None

    def activate_and_penalize(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """Feature activations and their sparsity penalty (before the warm-up factor)."""
        acts = self.activate(pre)
        return acts, self.sparsity_penalty(acts)

    def sparsity_penalty(self, acts: Tensor) -> Tensor:
        """The weighted L1 (standard) or L0 (jumprelu) term; 0 for the top-k family."""
        return acts.new_zeros(())

    def aux_loss(self, x_n: Tensor, recon_n: Tensor, pre: Tensor, dead_mask: Tensor) -> Tensor:
        """The weighted AuxK loss on the latents of `dead_mask` (top-k family); 0 otherwise."""
        return x_n.new_zeros(())

    # --- state kept across training steps -------------------------------------
    def dead_mask(self) -> Tensor:
        """[d_sae] bool: latents that have not fired for `sae.dead_tokens_threshold` training tokens."""
        return self.tokens_since_fired >= self.cfg.dead_tokens_threshold

    @torch.no_grad()
    def batch_statistics(self, feature_acts: Tensor) -> Tensor:
        """What one training batch adds to the SAE's running state, as one float vector that
        data-parallel workers sum before `update_running_state`: here, which latents fired."""
        return (feature_acts.reshape(-1, self.d_sae) > 0).any(0).float()

    @torch.no_grad()
    def step_statistics(self, out: ForwardOutput) -> Tensor:
        """`batch_statistics` of a forward pass, from its indices when it decoded sparsely."""
        if out.active is not None:
            return out.active.fired()
        return self.batch_statistics(out.feature_acts.detach())

    @torch.no_grad()
    def update_running_state(self, stats: Tensor, tokens: int) -> None:
        """Apply a step's `batch_statistics` (summed over workers), which covered `tokens`
        training tokens in all: latents that fired anywhere restart their dead count."""
        self.tokens_since_fired += tokens
        # masked_fill_, not boolean indexing: indexing with a mask reads its count on the host.
        self.tokens_since_fired.masked_fill_(stats[: self.d_sae] > 0, 0)

    # --- constraints and folding ----------------------------------------------
    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Drop the gradient component along each unit-norm decoder row."""
        if not self.unit_norm_decoder or self.W_dec.grad is None:
            return
        w, g = self.W_dec, self.W_dec.grad
        g -= (g * w).sum(-1, keepdim=True) * w / w.pow(2).sum(-1, keepdim=True)

    @torch.no_grad()
    def after_optimizer_step(self, applied: Tensor | None = None) -> None:
        """Re-impose constraints the optimiser step may have broken (unit-norm decoder rows).

        `applied` (a bool scalar tensor) is False when the optimiser skipped the step (a
        non-finite loss): then nothing changes, not even by rounding, decided on the device.
        """
        if self.unit_norm_decoder:
            norm = self.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            if applied is not None:
                norm = torch.where(applied, norm, torch.ones_like(norm))
            self.W_dec /= norm

    @torch.no_grad()
    def fold_input_scale(self) -> None:
        """Fold the input (and a transcoder's output) scale into the weights: same features,
        raw inputs and outputs, scales 1. The pre-activations do not change, so neither do
        thresholds."""
        s, t = self.input_scale.clone(), self.target_scale.clone()
        if s == 1 and t == 1:
            return
        self.W_enc *= s
        self.W_dec /= t
        self.b_dec /= t
        if self.kind == "skip_transcoder":
            self.W_skip *= s / t
        self.input_scale.fill_(1.0)
        self.target_scale.fill_(1.0)

    def inference_state(self) -> dict[str, Tensor]:
        """Tensors of the SAELens checkpoint (subclasses add `threshold`; skip transcoders `W_skip`)."""
        state = {"W_enc": self.W_enc, "W_dec": self.W_dec, "b_enc": self.b_enc, "b_dec": self.b_dec}
        if self.kind == "skip_transcoder":
            state["W_skip"] = self.W_skip
        return state

    def load_inference_state(self, tensors: dict[str, Tensor]) -> None:
        with torch.no_grad():
            names = ["W_enc", "W_dec", "b_enc", "b_dec"] + (
                ["W_skip"] if self.kind == "skip_transcoder" else []
            )
            for name in names:
                getattr(self, name).copy_(tensors[name])
            self.input_scale.fill_(1.0)
            self.target_scale.fill_(1.0)
            self.initialized.fill_(True)

    @property
    def saved_architecture(self) -> str:
        """The `architecture` of the saved cfg.json: SAELens's class for an SAE, its transcoder
        class for a transcoder (`saved_transcoder_architecture`)."""
        if not self.is_transcoder:
            return self.saelens_architecture
        return saved_transcoder_architecture(self.saelens_architecture, self.kind)

    def saelens_config(self) -> dict[str, Any]:
        """This SAE's SAELens `cfg.json` (without `metadata`, which `raysae.checkpoint` adds)."""
        return {
            "architecture": self.saved_architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            **({"d_out": self.d_out} if self.is_transcoder else {}),
            "dtype": self.cfg.dtype,
            "device": "cpu",
            # SAELens's TranscoderConfig refuses true: a transcoder's b_dec is in the output space.
            "apply_b_dec_to_input": not self.is_transcoder,
            "normalize_activations": "none",
            "reshape_activations": "none",
            **self.saelens_cfg_extra(),
        }

    def saelens_cfg_extra(self) -> dict[str, Any]:
        """Architecture-specific keys of SAELens's cfg.json."""
        return {}


def saved_transcoder_architecture(saelens_architecture: str, kind: str) -> str:
    """The cfg.json `architecture` of a transcoder whose SAE form SAELens saves as
    `saelens_architecture`: SAELens 6.54's classes `transcoder` (ReLU), `skip_transcoder`,
    `jumprelu_transcoder`, `jumprelu_skip_transcoder` (BatchTopK saves as JumpReLU, as for SAEs).
    SAELens has no TopK transcoder: those save as `topk_transcoder` / `topk_skip_transcoder`
    in the same layout (cfg `k`), which only raysae loads."""
    skip = "skip_" if kind == "skip_transcoder" else ""
    prefix = "" if saelens_architecture == "standard" else f"{saelens_architecture}_"
    return f"{prefix}{skip}transcoder"


def _norm_scale(x: Tensor, what: str) -> float:
    """The factor that brings rows of `x` to mean norm sqrt(width)."""
    mean_norm = x.norm(dim=-1).mean()
    if not torch.isfinite(mean_norm) or mean_norm <= 0:
        raise ValueError(f"cannot normalise {what}: mean norm is {mean_norm.item()}")
    return x.shape[-1] ** 0.5 / mean_norm.item()
