"""`clt`: the cross-layer transcoder (Anthropic's circuit tracing; the `circuit-tracer` layout).

Each of the L layers has its own features: layer l's features read layer l's input
(`W_enc[l] [d_in, F]`, `b_enc[l]`) and write the targets of layer l and every later layer
(`W_dec[l] [F, L - l, d_out]`: `W_dec[l][:, j]` writes layer l + j). So the prediction of layer
t's target is `sum_{l <= t} act_l @ W_dec[l][:, t - l] + b_dec[t]` (+ `x_t @ W_skip[t].T` with
`sae.skip_connection`), and no feature writes a layer before its own. A feature's decoder rows
over its L - l target layers, concatenated, have unit norm.

The activation is per layer (`topk`: k per layer per token, or with `sae.topk_scope: model` k * L
over all layers' features of the token jointly; `batchtopk`: k * batch per layer over the batch,
or k * batch * L over all, with an inference threshold per layer or one; `jumprelu`: a threshold per layer per feature,
the L0 penalty counting every layer's features, the quadratic one pulling each layer's count
towards `sae.target_l0`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raysae.models.jumprelu import JumpReLUWithL0
from raysae.models.multilayer import MultiLayerDictionary, select_topk, unit_rows

if TYPE_CHECKING:
    from raysae.config.sae import SAEConfig


class CrossLayerTranscoder(MultiLayerDictionary):
    kind = "clt"
    is_transcoder = True

    def __init__(
        self,
        cfg: SAEConfig,
        n_layers: int,
        d_in: int,
        d_out: int | None = None,
        *,
        shard_index: int = 0,
        shards: int = 1,
    ):
        d_out = d_in if d_out is None else d_out
        super().__init__(cfg, n_layers, d_in, d_out, shard_index=shard_index, shards=shards)
        L, n = n_layers, self.n_local
        self.W_enc = nn.Parameter(torch.empty(L, d_in, n, dtype=self.dtype))
        """`[L, d_in, F]`: layer l's inputs -> its features."""
        self.b_enc = nn.Parameter(torch.zeros(L, n, dtype=self.dtype))
        self.W_dec = nn.ParameterList(
            [nn.Parameter(torch.empty(n, L - layer, d_out, dtype=self.dtype)) for layer in range(L)]
        )
        """`W_dec[l] [F, L - l, d_out]`: layer l's features -> the targets of layers l..L-1."""
        if cfg.skip_connection:
            self.W_skip = nn.Parameter(torch.zeros(L, d_out, d_in, dtype=self.dtype))
        self.reset_parameters()

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return (self.n_layers, self.n_local)

    def decoders(self) -> list[Tensor]:
        return list(self.W_dec)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Unit-norm random decoders and encoder columns (drawn on their own: input and output
        spaces differ), zero biases and skip. Drawn for all `d_sae` features a layer at a time and
        cut to this shard's, so the shards of one seed together hold the unsharded model."""
        gen = torch.Generator().manual_seed(self.cfg.seed)
        for layer in range(self.n_layers):
            dec = unit_rows(gen, self.d_sae, self.n_layers - layer, self.d_out)
            enc = unit_rows(gen, self.d_sae, self.d_in)
            self.W_dec[layer].copy_(dec[self.features])
            self.W_enc[layer].copy_(enc[self.features].T)
        self.b_enc.zero_()
        self.b_dec.zero_()
        if self.W_skip is not None:
            self.W_skip.zero_()

    def pre_activation(self, x_n: Tensor) -> Tensor:
        # One batched matmul over layers; the bias added in the matmul's dtype (bf16 autocast).
        h = torch.bmm(x_n.transpose(0, 1), self.W_enc).transpose(0, 1)
        return h + self.b_enc.to(h.dtype)

    def decode_partial(self, acts: Tensor, kept_per_token: int | None = None) -> Tensor:
        batch = acts.shape[0]
        total = None
        for layer, w in enumerate(self.W_dec):
            weight = w.flatten(1).to(acts.dtype)
            kept = self._kept(acts[:, layer], kept_per_token)
            if kept is None:
                out = acts[:, layer] @ weight
            else:  # the few kept features' decoder rows, summed (as ActiveLatents.decode)
                values, indices = kept
                out = F.embedding_bag(indices, weight, per_sample_weights=values, mode="sum")
            out = out.view(batch, self.n_layers - layer, self.d_out)
            out = F.pad(out, (0, 0, layer, 0))  # nothing for the layers before its own
            total = out if total is None else total + out
        assert total is not None  # at least one layer
        return total

    def _kept(self, acts: Tensor, bound: int | None = None) -> tuple[Tensor, Tensor] | None:
        """One layer's kept features `[batch, n]` as (values, indices) for the sparse decode, or
        None to decode densely. The decode then costs n, not F, decoder rows per token and layer
        (a CLT's rows are long: (L - l) x d_out), with the same result and the same gradients:
        top-k and BatchTopK pass no gradient to the features they did not keep. Not JumpReLU,
        whose threshold gradient reads the features' gradient near the threshold, kept or not.
        `bound` is what the caller knows of the count per token (k of a per-layer top-k, AuxK's
        k_aux); without one the count is read on the host where that is free (the CPU)."""
        if not self.sparse_decode or acts.ndim != 2 or self.architecture not in ("topk", "batchtopk"):
            return None
        if bound is not None:
            n = min(bound, acts.shape[-1])
        elif acts.device.type == "cpu":
            n = max(int((acts != 0).sum(-1).max()), 1)  # at least one (a 0 where none fired)
        else:
            return None
        if 4 * n > acts.shape[-1]:  # a dense matmul is as cheap
            return None
        values, indices = acts.topk(n, dim=-1, sorted=False)  # activations are >= 0: the kept first
        return values, indices

    def skip(self, x_n: Tensor) -> Tensor | None:
        if self.W_skip is None:
            return None
        return torch.bmm(x_n.transpose(0, 1), self.W_skip.transpose(1, 2)).transpose(0, 1)

    def encode_layer(self, x: Tensor, layer: int) -> Tensor:
        """Raw inputs of one layer `[rows, d_in]` -> that layer's (local) features `[rows, F]`, as
        `encode` gives them: for a replacement model that reads each layer's input in one forward.
        A whole-model top-k (`topk_scope: model`) ranks all layers together, so it cannot."""
        if self.cfg.topk_scope == "model" and self.architecture == "topk":
            raise ValueError(
                "a CLT with sae.topk_scope 'model' selects over all layers at once: encode them together"
            )
        x_n = x.to(self.dtype) * self.input_scale[layer]
        pre = (x_n @ self.W_enc[layer] + self.b_enc[layer].to(x_n.dtype))[:, None]
        if self.architecture == "jumprelu":
            return JumpReLUWithL0.apply(pre[:, 0], self.threshold[layer], self.cfg.jumprelu_bandwidth)[0]
        if self.architecture == "batchtopk" and not self.training:
            threshold = self.batch_threshold[layer if self.n_groups > 1 else 0]
            return pre[:, 0].relu() * (pre[:, 0] > threshold).to(pre.dtype)
        if self.architecture == "batchtopk":
            raise ValueError(
                "a training-mode batchtopk CLT selects over the whole batch: use encode (or eval())"
            )
        assert self.k is not None
        return select_topk(pre[:, 0], self.k, self.comm)

    def decode_layer(self, acts: list[Tensor], target: int, x: Tensor | None = None) -> Tensor:
        """Layer `target`'s prediction in raw units from the features of layers 0..target
        (`acts[l] [rows, F]`) and, with a skip connection, that layer's raw input `x [rows, d_in]`."""
        if len(acts) != target + 1:
            raise ValueError(
                f"layer {target}'s prediction needs the features of layers 0..{target}, got {len(acts)}"
            )
        parts = [a @ self.W_dec[layer][:, target - layer].to(a.dtype) for layer, a in enumerate(acts)]
        y = self.comm.reduce(torch.stack(parts).sum(0)) + self.b_dec[target]
        if self.W_skip is not None:
            if x is None:
                raise ValueError("a CLT with a skip connection needs the layer's input to decode it")
            y = y + (x.to(self.dtype) * self.input_scale[target]) @ self.W_skip[target].T
        return y / self.output_scale[target]

    def _fold_decoders(self, t: Tensor) -> None:
        for layer, w in enumerate(self.W_dec):
            w /= t[layer:, None]
