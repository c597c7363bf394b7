"""The shared body of every SAE: parameters, input scaling, init, decoder constraint.

Conventions (the same as SAELens 6.x, so saved weights load there unchanged):
`W_enc [d_in, d_sae]`, `W_dec [d_sae, d_in]`, `b_enc [d_sae]`, `b_dec [d_in]`,
and `encode(x) = act((x * s - b_dec) @ W_enc + b_enc)`, where `s` is the input
scale (mean norm -> sqrt(d_in)). The scale is folded into the weights after
training, so a finished SAE reads raw activations with `s = 1`.

Losses are computed in normalised units (inputs times `s`) so coefficients mean
the same on every model: `mse_loss` is the squared error summed over `d_in`
and averaged over tokens.

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
    """x_hat in the units of the input."""
    dense_acts: Tensor | None
    """[batch, d_sae] feature activations, or None where the forward pass decoded sparsely
    (`active`); `feature_acts` gives them either way."""
    loss: Tensor
    """mse_loss + sparsity_loss + aux_loss: what the optimiser minimises."""
    mse_loss: Tensor
    """Squared error summed over d_in, mean over tokens, in normalised units."""
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
    sync_free: bool = False
    """Take the paths that never read a device value on the host even on the CPU (where such a
    read is free, so the CPU by default skips work by it); on other devices they always are."""

    input_scale: Tensor
    """Multiplies raw inputs; 1 once folded into the weights."""
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

    def __init__(self, cfg: SAEConfig, d_in: int):
        super().__init__()
        self.cfg = cfg
        self.d_in = d_in
        self.d_sae = self.width(cfg, d_in)
        dtype = DTYPES[cfg.dtype]
        self.W_enc = nn.Parameter(torch.empty(d_in, self.d_sae, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(torch.empty(self.d_sae, d_in, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))
        # Multiplies raw inputs; 1 once folded into the weights.
        self.register_buffer("input_scale", torch.ones((), dtype=dtype))
        # Training tokens since each latent last fired (AuxK's dead mask).
        self.register_buffer("tokens_since_fired", torch.zeros(self.d_sae, dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.reset_parameters()

    def extra_repr(self) -> str:
        """What `repr(sae)` shows after the class name (nn.Module's hook): the architecture, its
        shape and dtype; subclasses add their sparsity setting (k, threshold, coefficient)."""
        dtype = str(self.W_enc.dtype).removeprefix("torch.")
        return f"architecture={self.architecture!r}, d_in={self.d_in}, d_sae={self.d_sae}, dtype={dtype}"

    # --- initialisation -------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random unit-norm decoder rows, encoder = decoder transpose, zero biases."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        w = torch.randn(self.d_sae, self.d_in, generator=gen, dtype=torch.float32)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec.copy_(w)
        self.W_enc.copy_(w.T)
        self.b_enc.zero_()
        self.b_dec.zero_()

    @torch.no_grad()
    def initialize_from_batch(self, x: Tensor) -> None:
        """Estimate the input scale and initialise `b_dec` from a first batch."""
        x = x.to(device=self.W_enc.device, dtype=torch.float32)
        if self.cfg.normalize_activations:
            mean_norm = x.norm(dim=-1).mean()
            if not torch.isfinite(mean_norm) or mean_norm <= 0:
                raise ValueError(f"cannot normalise activations: mean norm is {mean_norm.item()}")
            self.input_scale.fill_(self.d_in**0.5 / mean_norm.item())
        x = x * self.input_scale.float()
        if self.cfg.b_dec_init == "geometric_median":
            self.b_dec.copy_(geometric_median(x))
        elif self.cfg.b_dec_init == "mean":
            self.b_dec.copy_(x.mean(0))
        self.initialized.fill_(True)

    # --- the forward pass --------------------------------------------------
    def pre_activation(self, x_scaled: Tensor) -> Tensor:
        # The bias is added in the matmul's dtype: under bf16 autocast the fp32 bias would
        # otherwise promote the pre-activations (and the top-k over them) back to fp32.
        h = (x_scaled - self.b_dec) @ self.W_enc
        return h + self.b_enc.to(h.dtype)

    def activate(self, pre: Tensor) -> Tensor:
        """Pre-activations -> feature activations (training or inference mode)."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """Raw activations [..., d_in] -> feature activations [..., d_sae]."""
        return self.activate(self.pre_activation(x.to(self.W_enc.dtype) * self.input_scale))

    def decode(self, feature_acts: Tensor) -> Tensor:
        """Feature activations -> reconstruction in the units of the input."""
        return (feature_acts @ self.W_dec + self.b_dec) / self.input_scale

    def forward(
        self, x: Tensor, *, dead_mask: Tensor | None = None, sparsity_scale: float = 1.0
    ) -> ForwardOutput:
        """Reconstruction, features and loss terms.

        `dead_mask` ([d_sae] bool, `dead_mask()` during training) selects the latents the
        AuxK loss may use; without one there is no AuxK loss. `sparsity_scale` is the
        sparsity penalty's warm-up factor.
        """
        x_n = x.to(self.W_enc.dtype) * self.input_scale
        pre = self.pre_activation(x_n)
        active = self.activate_sparse(pre) if self.uses_sparse_decode(pre) else None
        if active is None:
            acts, penalty = self.activate_and_penalize(pre)
            recon_n = acts @ self.W_dec + self.b_dec
        else:  # the top-k family keeps no sparsity penalty
            acts, penalty = None, pre.new_zeros(())
            recon_n = active.decode(self.W_dec) + self.b_dec
        mse = (recon_n - x_n).pow(2).sum(-1).mean()
        # The loss terms in the reconstruction's dtype (fp32 under bf16 autocast, as `b_dec` is).
        sparsity = penalty.to(mse.dtype) * sparsity_scale
        aux = self.aux_loss(x_n, recon_n, pre, dead_mask) if dead_mask is not None else mse.new_zeros(())
        aux = aux.to(mse.dtype)
        return ForwardOutput(
            recon_n / self.input_scale, acts, mse + sparsity + aux, mse, sparsity, aux, active
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
        """Fold the input scale into the weights: same features, raw inputs, scale 1."""
        s = self.input_scale.clone()
        if s == 1:
            return
        self.W_enc *= s
        self.W_dec /= s
        self.b_dec /= s
        self.input_scale.fill_(1.0)

    def inference_state(self) -> dict[str, Tensor]:
        """Tensors of the SAELens checkpoint (subclasses add `threshold`)."""
        return {"W_enc": self.W_enc, "W_dec": self.W_dec, "b_enc": self.b_enc, "b_dec": self.b_dec}

    def load_inference_state(self, tensors: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
                getattr(self, name).copy_(tensors[name])
            self.input_scale.fill_(1.0)
            self.initialized.fill_(True)

    def saelens_config(self) -> dict[str, Any]:
        """This SAE's SAELens `cfg.json` (without `metadata`, which `raysae.checkpoint` adds)."""
        return {
            "architecture": self.saelens_architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "dtype": self.cfg.dtype,
            "device": "cpu",
            "apply_b_dec_to_input": True,
            "normalize_activations": "none",
            "reshape_activations": "none",
            **self.saelens_cfg_extra(),
        }

    def saelens_cfg_extra(self) -> dict[str, Any]:
        """Architecture-specific keys of SAELens's cfg.json."""
        return {}
