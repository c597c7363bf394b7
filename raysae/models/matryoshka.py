"""`matryoshka_batchtopk`: BatchTopK with nested reconstruction losses (Bussmann et al. 2025).

The latents are split into nested prefixes `0:w_1 ⊂ 0:w_2 ⊂ … ⊂ 0:d_sae`
(`sae.matryoshka_widths`). Each prefix reconstructs the input on its own from
the latents BatchTopK kept, plus `b_dec` (SAELens 6.54's `_iterable_decode` starts
every prefix from `b_dec`), and the loss is the sum of every prefix's MSE with no
per-width weight: the full width's is `mse_loss`, the inner ones are added to `loss`.
So `loss` here is `mse_loss + sparsity_loss + aux_loss +` the inner prefix MSEs. AuxK is
BatchTopK's, on the full reconstruction's residual (SAELens's default,
`use_matryoshka_aux_loss=False`). Early latents must explain the input alone, so they
learn the frequent, general features and later ones cannot absorb them.

The prefix reconstructions reuse the sparse decode: during training BatchTopK keeps its
latents as (indices, values), and a prefix decodes the ones with index < width (values
masked, one `embedding_bag` per prefix); eval mode (threshold) decodes densely from
`acts[:, :width]`. After training it is a BatchTopK SAE, saved as SAELens saves it:
as `jumprelu` with the inference threshold for every latent.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from typing import TYPE_CHECKING

from torch import Tensor

from raysae.models.base import ForwardOutput
from raysae.models.batchtopk import BatchTopKSAE

if TYPE_CHECKING:
    from raysae.config.sae import SAEConfig


def default_widths(d_sae: int) -> list[int]:
    """Our default prefix ladder when `sae.matryoshka_widths` is empty: d_sae/16, d_sae/4, d_sae
    (SAELens has no default and requires the list)."""
    return sorted({w for w in (d_sae // 16, d_sae // 4, d_sae) if w > 0})


def matryoshka_widths(cfg: SAEConfig, d_sae: int) -> list[int]:
    """The prefix widths in use: the configured ones, with d_sae appended when the last is
    smaller (as SAELens does), or `default_widths`."""
    if cfg.matryoshka_widths is None:
        return default_widths(d_sae)
    widths = list(cfg.matryoshka_widths)
    return widths if widths and widths[-1] == d_sae else [*widths, d_sae]


class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    architecture = "matryoshka_batchtopk"
    saelens_architecture = "jumprelu"
    transcoder_ok = False  # its nested prefixes reconstruct the input

    @classmethod
    def width_problems(cls, cfg: SAEConfig, d_in: int) -> Iterator[tuple[str, str]]:
        yield from super().width_problems(cfg, d_in)
        widths, d_sae = cfg.matryoshka_widths, cls.width(cfg, d_in)
        if widths is None:
            return
        if not widths:
            yield "sae.matryoshka_widths", "is empty; give ascending prefix widths, or leave it unset"
        elif any(w <= 0 for w in widths):
            yield "sae.matryoshka_widths", f"must all be positive, got {widths}"
        elif any(a >= b for a, b in pairwise(widths)):
            yield "sae.matryoshka_widths", f"must be strictly increasing, got {widths}"
        elif widths[-1] > d_sae:
            yield "sae.matryoshka_widths", f"the last width {widths[-1]} is larger than d_sae={d_sae}"

    def __init__(self, cfg: SAEConfig, d_in: int, d_out: int | None = None):
        super().__init__(cfg, d_in, d_out)
        self.widths = matryoshka_widths(cfg, self.d_sae)
        """The prefix widths, ascending, the last equal to d_sae."""

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, matryoshka_widths={self.widths}"

    def forward(
        self,
        x: Tensor,
        target: Tensor | None = None,
        *,
        dead_mask: Tensor | None = None,
        sparsity_scale: float = 1.0,
    ) -> ForwardOutput:
        """BatchTopK's forward pass (the full width's MSE, AuxK), plus the inner prefixes' MSEs in `loss`."""
        out = super().forward(x, dead_mask=dead_mask, sparsity_scale=sparsity_scale)
        inner = self.inner_mse_losses(x, out)
        if not inner:
            return out
        return out._replace(loss=out.loss + sum(inner))

    def inner_mse_losses(self, x: Tensor, out: ForwardOutput) -> list[Tensor]:
        """The MSE (summed over d_in, mean over tokens, normalised units) of each prefix but the
        full one, ascending: `b_dec` plus the decoder rows of the prefix's kept latents."""
        x_n = x.to(self.W_enc.dtype) * self.input_scale
        losses = []
        for width in self.widths[:-1]:
            if out.active is not None:
                active = out.active
                kept = active._replace(
                    values=active.values * (active.indices < width).to(active.values.dtype)
                )
                recon_n = kept.decode(self.W_dec) + self.b_dec
            else:
                acts = out.feature_acts
                recon_n = acts[..., :width] @ self.W_dec[:width] + self.b_dec
            losses.append((recon_n - x_n).pow(2).sum(-1).mean().to(out.mse_loss.dtype))
        return losses
