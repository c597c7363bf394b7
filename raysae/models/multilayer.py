"""The shared body of the multi-layer dictionaries (`clt.CrossLayerTranscoder`,
`crosscoder.Crosscoder`), and how a feature-sharded one talks to its other shards.

Batches are `x [batch, L, d_in]` (layer i = the i-th configured layer) and, for a CLT,
`target [batch, L, d_out]`. Losses are in normalised units, as `base.py`: each layer's inputs
(targets) are scaled to mean norm sqrt(d) by its own factor (`input_scale [L]`,
`output_scale [L]`), folded into the weights after training. `mse_loss` is the squared error
summed over target layers and d_out, averaged over tokens.

Feature sharding: a model holds only its shard's `F = d_sae // shards` features per layer (global
features `[index * F, (index + 1) * F)`), everything else (`b_dec`, `W_skip`, the scales) on
every shard. The forward pass talks to the other shards through `self.comm` (a `FeatureComm`;
`Unsharded` by default, the torch.distributed one lives in `raysae.raytrain`): the top-k is
chosen exactly across shards (`select_topk`), each shard decodes its own features and the partial
reconstructions are summed (`comm.reduce`). Every shard then computes the same loss, so the
replicated parameters get the same gradient everywhere and the sharded ones their own slice's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn

from raysae.devices import DTYPES
from raysae.errors import ConfigError
from raysae.models.base import ForwardOutput, _norm_scale
from raysae.models.init import geometric_median
from raysae.models.jumprelu import JumpReLUWithL0

if TYPE_CHECKING:
    from raysae.config.sae import SAEConfig

ARCHITECTURES = ("topk", "batchtopk", "jumprelu")
"""The activations a multi-layer dictionary trains with."""


class FeatureComm(Protocol):
    """How a feature-sharded model talks to the other shards (implemented with torch.distributed
    in raysae/raytrain; the models never import it)."""

    shards: int
    """Number of feature shards."""
    index: int
    """This worker's shard, 0-based."""

    def gather(self, t: Tensor) -> Tensor:
        """`t` of every shard concatenated along the last dim, in shard order; no gradient."""
        ...

    def reduce(self, t: Tensor) -> Tensor:
        """`t` summed over shards; backward is the identity (every shard computes the same loss)."""
        ...


class Unsharded:
    """The communicator of a model that holds all its features: gather and reduce are identities."""

    shards = 1
    index = 0

    def gather(self, t: Tensor) -> Tensor:
        return t

    def reduce(self, t: Tensor) -> Tensor:
        return t


def shard_slice(d_sae: int, shards: int, index: int) -> slice:
    """The global features `[index * F, (index + 1) * F)` of shard `index`, `F = d_sae // shards`."""
    if shards < 1 or not 0 <= index < shards:
        raise ValueError(f"shard index {index} is not in 0..{shards - 1}")
    if d_sae % shards:
        raise ConfigError(
            [
                (
                    "sae.d_sae",
                    f"d_sae={d_sae} features per layer do not split into {shards} equal feature shards",
                )
            ]
        )
    width = d_sae // shards
    return slice(index * width, (index + 1) * width)


SHARDED_DIMS = {"W_enc": -1, "b_enc": -1, "threshold": -1, "tokens_since_fired": -1, "W_dec": 0}
"""State entries that hold one slice per feature shard -> the dim they are cut along (the
others, `b_dec`, `W_skip`, the scales, `initialized`, are the same on every shard)."""


def _sharded_dim(key: str) -> int | None:
    """The dim `key` (a state_dict key, maybe prefixed; `W_dec.3` is a CLT's decoder of layer 3) is
    sharded along, or None for a replicated entry."""
    names = [part for part in key.split(".") if not part.isdigit()]
    return SHARDED_DIMS.get(names[-1]) if names else None


def split_state(state: dict[str, Tensor], shards: int) -> list[dict[str, Tensor]]:
    """An unsharded model's state_dict -> the state_dict of each of `shards` feature shards."""
    out: list[dict[str, Tensor]] = [{} for _ in range(shards)]
    for key, value in state.items():
        dim = _sharded_dim(key)
        for index in range(shards):
            if dim is None:
                out[index][key] = value.clone()
            else:
                cut = shard_slice(value.shape[dim], shards, index)
                out[index][key] = value.narrow(dim, cut.start, cut.stop - cut.start).clone()
    return out


def merge_states(states: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The shards' state_dicts (in shard order) -> the unsharded model's (`split_state` undone).
    Replicated entries are taken from shard 0 (the shards keep them equal)."""
    if not states:
        raise ValueError("merge_states needs the state of at least one shard")
    keys = list(states[0])
    for index, state in enumerate(states):
        if list(state) != keys:
            raise ValueError(f"shard {index}'s state has other entries than shard 0's")
    merged: dict[str, Tensor] = {}
    for key in keys:
        dim = _sharded_dim(key)
        merged[key] = states[0][key].clone() if dim is None else torch.cat([s[key] for s in states], dim)
    return merged


def select_topk(pre: Tensor, k: int, comm: FeatureComm) -> Tensor:
    """ReLU of the k largest entries of the last dim over all shards' features, zero elsewhere:
    this shard's part, `[..., n_local]`, as `topk_relu` gives it unsharded.

    Each shard's top-min(k, n_local) candidates are gathered; the k-th largest gathered value is
    the threshold, and the local candidates at or above it are kept (exactly the unsharded choice
    but for ties at the threshold)."""
    values, indices = pre.topk(min(k, pre.shape[-1]), dim=-1, sorted=False)
    if comm.shards > 1:
        everyone = comm.gather(values.detach())
        threshold = everyone.topk(k, dim=-1, sorted=False).values.min(-1, keepdim=True).values
        # where, not a product: a dead-feature search holds -inf candidates (-inf * 0 is NaN)
        values = torch.where(values >= threshold, values, torch.zeros_like(values))
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


class MultiLayerDictionary(nn.Module):
    """What the CLT and the crosscoder share: scales, activation, losses, running state, the
    decoder constraint. Subclasses create the parameters and say how to encode and decode.

    `feature_shape` is the shape of one token's local features: `(L, F)` for a CLT, `(F,)` for a
    crosscoder (one dictionary for every layer); `b_enc`, `threshold` and `tokens_since_fired`
    have it. The trainer drives this as it drives a `SparseAutoencoder` (the same duck interface).
    """

    kind: str
    is_transcoder: bool
    unit_norm_decoder = True
    """Each feature's decoder rows, concatenated over the layers it writes, have unit norm."""
    sparse_decode = True
    """A CLT decodes top-k and BatchTopK features from the kept ones (`CrossLayerTranscoder._kept`);
    False is the dense reference path (the tests compare the two)."""
    W_enc: Tensor
    """`[L, d_in, F]`: layer l's inputs -> this shard's features."""
    W_skip: Tensor | None
    """A CLT's `[L, d_out, d_in]` dense map per layer (`sae.skip_connection`), else None."""
    input_scale: Tensor
    """`[L]`: multiplies each layer's raw inputs; 1 once folded into the weights."""
    output_scale: Tensor
    """`[L]`: multiplies each layer's raw targets (a crosscoder's: its input scale); 1 once folded."""
    tokens_since_fired: Tensor
    """`[*feature_shape]` training tokens since each local feature last fired (the dead mask)."""
    initialized: Tensor
    """Whether the scales and `b_dec` were set from data."""
    batch_threshold: Tensor
    """batchtopk: `[n_groups]` inference thresholds (EMA of the smallest activation kept per batch)."""
    batch_threshold_updates: Tensor

    @classmethod
    def width_problems(cls, cfg: SAEConfig, d_in: int) -> Iterator[tuple[str, str]]:
        """What is wrong with `cfg` for inputs of width `d_in`, as `(dotted path, message)`."""
        d_sae = cfg.d_sae or cfg.expansion_factor * d_in
        if cfg.architecture not in ARCHITECTURES:
            yield (
                "sae.architecture",
                f"a {cfg.kind} trains as {' or '.join(ARCHITECTURES)}, not {cfg.architecture!r}",
            )
        if cfg.architecture != "jumprelu" and cfg.k > d_sae:
            yield "sae.k", f"k={cfg.k} is larger than d_sae={d_sae}"
        if cfg.k_aux is not None and cfg.k_aux > d_sae:
            yield "sae.k_aux", f"k_aux={cfg.k_aux} is larger than d_sae={d_sae}"
        if cfg.architecture == "jumprelu" and cfg.jumprelu_sparsity_loss_mode == "quadratic":
            if cfg.target_l0 is None:
                yield "sae.target_l0", "must be set when sae.jumprelu_sparsity_loss_mode is 'quadratic'"

    def __init__(
        self, cfg: SAEConfig, n_layers: int, d_in: int, d_out: int, *, shard_index: int = 0, shards: int = 1
    ):
        super().__init__()
        problems = list(self.width_problems(cfg, d_in))
        if problems:
            raise ConfigError(problems)
        if n_layers < 1:
            raise ConfigError([("model.layers", f"a {cfg.kind} needs at least one layer, got {n_layers}")])
        self.cfg = cfg
        self.architecture = cfg.architecture
        self.n_layers, self.d_in, self.d_out = n_layers, d_in, d_out
        self.d_sae = cfg.d_sae or cfg.expansion_factor * d_in
        """Features per layer (a crosscoder's whole dictionary), over all shards."""
        self.features = shard_slice(self.d_sae, shards, shard_index)
        """This shard's global features."""
        self.n_local = self.d_sae // shards
        self.shard_index, self.shards = shard_index, shards
        self.comm: FeatureComm = Unsharded()
        """Set by the sharding code to talk to the other shards; its `shards` must be `shards`."""
        self.k: int | None = None if cfg.architecture == "jumprelu" else cfg.k
        """Active features per layer per token (batchtopk: on average over the batch) in use (the
        trainer anneals it); None for jumprelu."""
        self.k_aux = min(cfg.k_aux or max(d_out // 2, 1), self.d_sae)
        self.dtype = DTYPES[cfg.dtype]
        self.b_dec = nn.Parameter(torch.zeros(n_layers, d_out, dtype=self.dtype))
        self.register_parameter("W_skip", None)  # a CLT with `sae.skip_connection` sets it
        self.register_buffer("input_scale", torch.ones(n_layers, dtype=self.dtype))
        self.register_buffer("output_scale", torch.ones(n_layers, dtype=self.dtype))
        self.register_buffer("tokens_since_fired", torch.zeros(self.feature_shape, dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        if cfg.architecture == "batchtopk":
            # The inference threshold per selection group (each layer, or one for all): an EMA of
            # the smallest activation kept per training batch, as BatchTopKSAE's.
            self.register_buffer("batch_threshold", torch.zeros(self.n_groups, dtype=torch.float32))
            self.register_buffer("batch_threshold_updates", torch.zeros(self.n_groups, dtype=torch.long))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(
                torch.full(self.feature_shape, cfg.jumprelu_init_threshold, dtype=self.dtype)
            )

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """The local features of one token: `(L, F)` (CLT) or `(F,)` (crosscoder)."""
        raise NotImplementedError

    @property
    def n_groups(self) -> int:
        """How many sets of features a batchtopk selection ranks apart: each layer's (a CLT with
        `topk_scope: layer`), or all of them at once."""
        return self.n_layers if len(self.feature_shape) == 2 and self.cfg.topk_scope == "layer" else 1

    def _grouped(self, t: Tensor) -> Tensor:
        """`[batch, *feature_shape]` -> `[n_groups, batch * features of the group]`."""
        if self.n_groups > 1:
            return t.transpose(0, 1).reshape(self.n_groups, -1)
        return t.reshape(1, -1)

    def _ungrouped(self, g: Tensor, like: Tensor) -> Tensor:
        if self.n_groups > 1:
            return g.view(self.n_groups, like.shape[0], -1).transpose(0, 1)
        return g.view_as(like)

    def decoders(self) -> list[Tensor]:
        """The decoder tensors `[F, layers written, d_out]`; each feature's slice has unit norm."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        shard = f", shard={self.shard_index}/{self.shards}" if self.shards > 1 else ""
        k = "" if self.k is None else f", k={self.k}"
        if self.k is not None and len(self.feature_shape) == 2:  # a crosscoder has one set of features
            k += f", topk_scope={self.cfg.topk_scope!r}"
        return (
            f"architecture={self.architecture!r}, kind={self.kind!r}, n_layers={self.n_layers}, "
            f"d_in={self.d_in}, d_out={self.d_out}, d_sae={self.d_sae}{shard}{k}"
        )

    # --- the parts a subclass defines (normalised units, local features) ----------------------
    def pre_activation(self, x_n: Tensor) -> Tensor:
        """Normalised inputs `[batch, L, d_in]` -> pre-activations `[batch, *feature_shape]`."""
        raise NotImplementedError

    def decode_partial(self, acts: Tensor, kept_per_token: int | None = None) -> Tensor:
        """This shard's features' part of the reconstruction `[batch, L, d_out]` (no `b_dec`)."""
        raise NotImplementedError

    def skip(self, x_n: Tensor) -> Tensor | None:
        """A CLT's dense `W_skip` term in normalised output units, or None."""
        return None

    def _fold_decoders(self, t: Tensor) -> None:
        """Divide each decoder slice writing layer j by the output scale `t[j]`."""
        raise NotImplementedError

    # --- inputs and initialisation -----------------------------------------------------------
    def _check(self, t: Tensor, width: int, what: str) -> Tensor:
        if t.ndim != 3 or t.shape[1] != self.n_layers or t.shape[2] != width:
            raise ValueError(
                f"a {self.kind} reads {what} of shape [batch, {self.n_layers} layers, {width}], "
                f"got {tuple(t.shape)}"
            )
        return t

    def _inputs(self, x: Tensor) -> Tensor:
        x = self._check(x, self.d_in, "inputs")
        return x.to(self.dtype) * self.input_scale[:, None]

    def _targets(self, x_n: Tensor, target: Tensor | None) -> Tensor:
        """Normalised targets: a CLT's `target`, a crosscoder's own input."""
        if not self.is_transcoder:
            return x_n
        if target is None:
            raise ValueError(f"a {self.kind} needs target activations: batches of (inputs, targets)")
        return self._check(target, self.d_out, "targets").to(self.dtype) * self.output_scale[:, None]

    @torch.no_grad()
    def initialize_from_batch(self, x: Tensor, target: Tensor | None = None) -> None:
        """Per-layer input (and a CLT's output) scales and `b_dec` from a first batch."""
        x = self._check(x, self.d_in, "inputs").to(device=self.b_dec.device, dtype=torch.float32)
        if self.cfg.normalize_activations:
            self.input_scale.copy_(self._scales(x, "activations"))
        y = x * self.input_scale.float()[:, None]
        if self.is_transcoder:
            if target is None:
                raise ValueError(f"a {self.kind} needs target activations to initialise from")
            y = self._check(target, self.d_out, "targets").to(device=self.b_dec.device, dtype=torch.float32)
            if self.cfg.normalize_activations:
                self.output_scale.copy_(self._scales(y, "target activations"))
            y = y * self.output_scale.float()[:, None]
        else:
            self.output_scale.copy_(self.input_scale)
        for layer in range(self.n_layers):
            if self.cfg.b_dec_init == "geometric_median":
                self.b_dec[layer].copy_(geometric_median(y[:, layer]))
            elif self.cfg.b_dec_init == "mean":
                self.b_dec[layer].copy_(y[:, layer].mean(0))
        self.initialized.fill_(True)

    def _scales(self, t: Tensor, what: str) -> Tensor:
        return torch.tensor(
            [_norm_scale(t[:, layer], f"{what} of layer {layer}") for layer in range(t.shape[1])]
        )

    # --- the forward pass -------------------------------------------------------------------
    def activate_and_penalize(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """Feature activations (local) and the sparsity penalty (over all shards; 0 for topk)."""
        if self.architecture == "jumprelu":
            return self._jumprelu(pre)
        assert self.k is not None
        if self.architecture == "batchtopk":
            return self._batchtopk(pre), pre.new_zeros(())
        if self.cfg.topk_scope == "model" and pre.ndim == 3:  # k * L over all layers' features
            acts = select_topk(pre.flatten(1), self.k * self.n_layers, self.comm).view_as(pre)
        else:
            acts = select_topk(pre, self.k, self.comm)
        return acts, pre.new_zeros(())

    def _jumprelu(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        # One fused JumpReLU per group of F features (its threshold gradient sums over the rest).
        groups = pre.reshape(pre.shape[0], -1, self.n_local)
        thresholds = self.threshold.reshape(-1, self.n_local)
        pairs = [
            JumpReLUWithL0.apply(groups[:, g], thresholds[g], self.cfg.jumprelu_bandwidth)
            for g in range(groups.shape[1])
        ]
        acts = torch.stack([a for a, _ in pairs], 1).view_as(pre)
        l0 = self.comm.reduce(torch.stack([n for _, n in pairs], 1))  # [batch, layers] over all shards
        if self.cfg.jumprelu_sparsity_loss_mode == "quadratic":
            target = self.cfg.target_l0
            assert target is not None  # width_problems refuses the config without one
            per_token = (2 / target * (l0 - target) ** 2).sum(-1)
        else:
            per_token = l0.sum(-1)
        return acts, self.cfg.l0_coefficient * per_token.mean()

    def _batchtopk(self, pre: Tensor) -> Tensor:
        """Training: the k * batch (per layer, or k * batch * L over all) largest activations of
        the batch over all shards; inference: each group's threshold (then a JumpReLU)."""
        if not self.training:
            shape = (1, self.n_groups, 1) if self.n_groups > 1 else (1,)
            return pre.relu() * (pre > self.batch_threshold.view(shape)).to(pre.dtype)
        assert self.k is not None
        per_group = self.n_layers if len(self.feature_shape) == 2 and self.n_groups == 1 else 1
        kept = select_topk(self._grouped(pre), self.k * pre.shape[0] * per_group, self.comm)
        return self._ungrouped(kept, pre)

    def encode(self, x: Tensor) -> Tensor:
        """Raw inputs `[batch, L, d_in]` -> this shard's feature activations `[batch, *feature_shape]`."""
        return self.activate_and_penalize(self.pre_activation(self._inputs(x)))[0]

    def decode(self, feature_acts: Tensor) -> Tensor:
        """Feature activations -> reconstruction in raw target units (without the skip term)."""
        return (self.comm.reduce(self.decode_partial(feature_acts)) + self.b_dec) / self.output_scale[:, None]

    def reconstruct(self, x: Tensor, feature_acts: Tensor | None = None) -> Tensor:
        """Raw inputs -> the reconstruction (a CLT's prediction of its targets, skip included)."""
        out = self.decode(self.encode(x) if feature_acts is None else feature_acts)
        skip = self.skip(self._inputs(x))
        return out if skip is None else out + skip / self.output_scale[:, None]

    def kept_per_token(self) -> int | None:
        """The most features a layer keeps per token when the activation bounds it (a per-layer
        top-k: k), for the sparse decode; None when the count varies."""
        if self.architecture == "topk" and self.cfg.topk_scope == "layer":
            return self.k
        return None

    def _reconstruct_normalised(self, x_n: Tensor, acts: Tensor) -> Tensor:
        recon = self.comm.reduce(self.decode_partial(acts, self.kept_per_token())) + self.b_dec
        skip = self.skip(x_n)
        return recon if skip is None else recon + skip

    def forward(
        self,
        x: Tensor,
        target: Tensor | None = None,
        *,
        dead_mask: Tensor | None = None,
        sparsity_scale: float = 1.0,
    ) -> ForwardOutput:
        """Reconstruction (raw units), this shard's features and the loss terms, as
        `SparseAutoencoder.forward`; `dead_mask` (`dead_mask()`) turns on the AuxK loss (topk)."""
        x_n = self._inputs(x)
        y_n = self._targets(x_n, target)
        pre = self.pre_activation(x_n)
        acts, penalty = self.activate_and_penalize(pre)
        recon_n = self._reconstruct_normalised(x_n, acts)
        mse = (recon_n - y_n).pow(2).sum((-2, -1)).mean()
        sparsity = penalty.to(mse.dtype) * sparsity_scale
        aux = mse.new_zeros(())
        if dead_mask is not None and self.k is not None and self.cfg.aux_coefficient > 0:
            aux = self.aux_loss(y_n, recon_n, pre, dead_mask).to(mse.dtype)
        recon = recon_n / self.output_scale[:, None]
        return ForwardOutput(recon, acts, mse + sparsity + aux, mse, sparsity, aux, None)

    def aux_loss(self, y_n: Tensor, recon_n: Tensor, pre: Tensor, dead_mask: Tensor) -> Tensor:
        """AuxK: each layer's top-`k_aux` dead features (over all shards) fit the residual."""
        if pre.device.type == "cpu" and self.comm.shards == 1 and not bool(dead_mask.any()):
            # On the CPU reading the mask costs nothing, and most steps of a healthy run have no
            # dead feature: skip the term's top-k and decode (as TopKSAE does).
            return y_n.new_zeros(())
        residual = (y_n - recon_n).detach()
        # Live features at -inf: picks beyond the dead ones are relu(-inf) = 0.
        acts = select_topk(pre.masked_fill(~dead_mask, float("-inf")), self.k_aux, self.comm)
        aux_recon = self.comm.reduce(self.decode_partial(acts, self.k_aux))
        loss = self.cfg.aux_coefficient * (aux_recon - residual).pow(2).sum((-2, -1)).mean()
        any_dead = self.comm.reduce(dead_mask.any().to(loss.dtype)) > 0
        return torch.where(any_dead, loss, torch.zeros_like(loss))

    @torch.no_grad()
    def mse_per_layer(self, x: Tensor, target: Tensor | None = None) -> Tensor:
        """[L] squared error summed over d_out, mean over tokens, per target layer (normalised units)."""
        x_n = self._inputs(x)
        y_n = self._targets(x_n, target)
        acts = self.activate_and_penalize(self.pre_activation(x_n))[0]
        return (self._reconstruct_normalised(x_n, acts) - y_n).pow(2).sum(-1).mean(0)

    # --- state kept across training steps -----------------------------------------------------
    def dead_mask(self) -> Tensor:
        """[*feature_shape] bool: features that have not fired for `sae.dead_tokens_threshold` tokens."""
        return self.tokens_since_fired >= self.cfg.dead_tokens_threshold

    @torch.no_grad()
    def batch_statistics(self, feature_acts: Tensor) -> Tensor:
        """Which local features fired in the batch, flattened (workers of one shard sum it);
        batchtopk adds, per group, the smallest activation kept over all shards and 1 ([0, 0]
        where none was kept), whose sum over workers gives the mean of their batch minima."""
        fired = (feature_acts.reshape(-1, self.tokens_since_fired.numel()) > 0).any(0).float()
        if self.architecture != "batchtopk":
            return fired
        g = self._grouped(feature_acts)
        smallest = torch.where(g > 0, g, float("inf")).min(-1).values.float()
        if self.comm.shards > 1:
            smallest = self.comm.gather(smallest[:, None]).min(-1).values
        kept = torch.isfinite(smallest)
        return torch.cat([fired, torch.where(kept, smallest, 0.0), kept.float()])

    @torch.no_grad()
    def step_statistics(self, out: ForwardOutput) -> Tensor:
        """`batch_statistics` of a forward pass."""
        return self.batch_statistics(out.feature_acts.detach())

    @torch.no_grad()
    def update_running_state(self, stats: Tensor, tokens: int) -> None:
        """Features that fired anywhere restart their dead count; the others age by `tokens`."""
        self.tokens_since_fired += tokens
        n = self.tokens_since_fired.numel()
        self.tokens_since_fired.masked_fill_(stats[:n].view(self.feature_shape) > 0, 0)
        if self.architecture == "batchtopk":  # the first update takes the batch's minimum whole
            total, batches = stats[n : n + self.n_groups], stats[n + self.n_groups : n + 2 * self.n_groups]
            m = torch.where(self.batch_threshold_updates > 0, self.cfg.batchtopk_threshold_momentum, 0.0)
            moved = self.batch_threshold * m + (1 - m) * (total / batches.clamp_min(1))
            self.batch_threshold.copy_(torch.where(batches > 0, moved, self.batch_threshold))
            self.batch_threshold_updates += (batches > 0).long()

    # --- constraints and folding ------------------------------------------------------------
    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Drop the gradient component along each feature's (unit-norm, concatenated) decoder."""
        for w in self.decoders():
            if w.grad is not None:
                g = w.grad
                g -= (g * w).sum((1, 2), keepdim=True) * w / w.pow(2).sum((1, 2), keepdim=True)

    @torch.no_grad()
    def after_optimizer_step(self, applied: Tensor | None = None) -> None:
        """Unit-norm decoders again (unchanged when `applied` is False), thresholds positive."""
        for w in self.decoders():
            norm = w.norm(dim=(1, 2), keepdim=True).clamp_min(1e-12)
            if applied is not None:
                norm = torch.where(applied, norm, torch.ones_like(norm))
            w /= norm
        if self.architecture == "jumprelu":
            self.threshold.clamp_(min=1e-6)

    @torch.no_grad()
    def fold_input_scale(self) -> None:
        """Fold the per-layer scales into the weights: same features and thresholds, raw units."""
        s, t = self.input_scale.clone(), self.output_scale.clone()
        self.W_enc *= s[:, None, None].to(self.dtype)
        self._fold_decoders(t.to(self.dtype))
        self.b_dec /= t[:, None]
        if self.W_skip is not None:
            self.W_skip *= (s / t)[:, None, None]
        self.input_scale.fill_(1.0)
        self.output_scale.fill_(1.0)


def unit_rows(gen: torch.Generator, rows: int, *shape: int) -> Tensor:
    """`[rows, *shape]` standard normal draws, each row scaled to unit norm (fp32)."""
    w = torch.randn(rows, *shape, generator=gen)
    return w / w.flatten(1).norm(dim=1).view(rows, *[1] * len(shape))
