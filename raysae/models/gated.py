"""`gated`: a gate that decides which latents fire and a magnitude path that says how much
(Rajamanoharan et al. 2024), in SAELens 6.54's formulation (`saes/gated_sae.py`).

With `c = x * s - b_dec` (s the input scale):
gate `pi_gate = c @ W_enc + b_gate`, magnitude `pi_mag = c @ (W_enc * exp(r_mag)) + b_mag`
(the two paths share `W_enc`, each latent rescaled by `exp(r_mag)`), and
`acts = 1[pi_gate > 0] * relu(pi_mag)`. The step has no gradient, so the gate learns from
two extra terms, as in SAELens's `GatedTrainingSAE.calculate_aux_loss`:
- `sparsity_loss`: `l1_coefficient` times the L1 of `relu(pi_gate)`, each latent weighted
  by its decoder row norm (the decoder is unconstrained, as for `standard`);
- `aux_loss`: the MSE of the reconstruction through the gate alone,
  `relu(pi_gate) @ W_dec + b_dec`. SAELens lets this term train the decoder too; the
  paper (and dictionary_learning) use a frozen copy of the decoder instead, which
  `sae.gated_aux_detach_decoder` chooses.

There is no `b_enc`. Saved in SAELens's `gated` format (`W_enc`, `W_dec`, `b_dec`, `b_gate`,
`b_mag`, `r_mag`), which SAELens loads as `GatedSAE`; `encode` is written as SAELens's, op for
op, so both give bit-identical activations. Decoding is dense.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from raysae.models.base import ForwardOutput, SparseAutoencoder

if TYPE_CHECKING:
    from raysae.config.sae import SAEConfig


class GatedSAE(SparseAutoencoder):
    architecture = "gated"
    saelens_architecture = "gated"
    transcoder_ok = False  # SAELens has no gated transcoder, and its aux loss reads the input
    unit_norm_decoder = False

    def __init__(self, cfg: SAEConfig, d_in: int, d_out: int | None = None):
        super().__init__(cfg, d_in, d_out)
        del self.b_enc  # the gate and the magnitude path each have their own bias
        dtype = self.W_enc.dtype
        self.b_gate = nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))
        self.b_mag = nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))
        self.r_mag = nn.Parameter(torch.zeros(self.d_sae, dtype=dtype))
        """Log of each latent's magnitude-path rescaling of `W_enc` (0: the gate's weights)."""

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, l1_coefficient={self.cfg.l1_coefficient}"

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The base initialisation (decoder rows, encoder = their transpose, zero `b_dec`) and
        zero gate and magnitude parameters (SAELens's `_init_weights_gated`)."""
        has_b_enc = "b_enc" in self._parameters  # only while the base __init__ runs
        if not has_b_enc:  # the base initialisation zeroes a b_enc: lend it one
            self.b_enc = nn.Parameter(self.b_dec.new_zeros(self.d_sae))
        super().reset_parameters()
        if not has_b_enc:
            del self.b_enc
        for name in ("b_gate", "b_mag", "r_mag"):
            if name in self._parameters:  # not yet while the base __init__ runs
                getattr(self, name).zero_()

    def pre_activations(self, x_scaled: Tensor) -> tuple[Tensor, Tensor]:
        """(pi_gate, pi_mag) of inputs already times the input scale, in SAELens's order of
        operations (so that its `GatedSAE.encode` gives the same bits)."""
        centered = x_scaled - self.b_dec
        pi_gate = centered @ self.W_enc + self.b_gate
        pi_mag = centered @ (self.W_enc * self.r_mag.exp()) + self.b_mag
        return pi_gate, pi_mag

    def pre_activation(self, x_scaled: Tensor) -> Tensor:
        """The magnitude path's pre-activations (SAELens's `hidden_pre` of a gated SAE)."""
        return self.pre_activations(x_scaled)[1]

    @staticmethod
    def gated_acts(pi_gate: Tensor, pi_mag: Tensor) -> Tensor:
        return (pi_gate > 0).to(pi_mag.dtype) * pi_mag.relu()

    def encode(self, x: Tensor) -> Tensor:
        return self.gated_acts(*self.pre_activations(x.to(self.W_enc.dtype) * self.input_scale))

    def forward(
        self,
        x: Tensor,
        target: Tensor | None = None,
        *,
        dead_mask: Tensor | None = None,
        sparsity_scale: float = 1.0,
    ) -> ForwardOutput:
        """Reconstruction and loss terms (see the module docstring); `dead_mask` is not used."""
        x_n = x.to(self.W_enc.dtype) * self.input_scale
        pi_gate, pi_mag = self.pre_activations(x_n)
        acts = self.gated_acts(pi_gate, pi_mag)
        recon_n = acts @ self.W_dec + self.b_dec
        mse = (recon_n - x_n).pow(2).sum(-1).mean()
        gate_acts = pi_gate.relu()
        l1 = (gate_acts * self.W_dec.norm(dim=1)).sum(-1).mean()
        sparsity = (self.cfg.l1_coefficient * l1).to(mse.dtype) * sparsity_scale
        W_dec, b_dec = self.W_dec, self.b_dec
        if self.cfg.gated_aux_detach_decoder:
            W_dec, b_dec = W_dec.detach(), b_dec.detach()
        via_gate = gate_acts @ W_dec + b_dec
        aux = (via_gate - x_n).pow(2).sum(-1).mean().to(mse.dtype)
        return ForwardOutput(recon_n / self.input_scale, acts, mse + sparsity + aux, mse, sparsity, aux)

    def inference_state(self) -> dict[str, Tensor]:
        return {
            "W_enc": self.W_enc,
            "W_dec": self.W_dec,
            "b_dec": self.b_dec,
            "b_gate": self.b_gate,
            "b_mag": self.b_mag,
            "r_mag": self.r_mag,
        }

    def load_inference_state(self, tensors: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for name in self.inference_state():
                getattr(self, name).copy_(tensors[name])
            self.input_scale.fill_(1.0)
            self.initialized.fill_(True)
