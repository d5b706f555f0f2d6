"""TTT-Linear and TTT-MLP layers: drop-in sequence mixers ([B, T, C] -> [B, T, C]).

XQ, XK, XV = x W_Q, x W_K, x W_V                 (share_qk: one W_Q then two causal convs, conv_q / conv_k)
RoPE on XQ, XK at position mod mini_batch_size
lr_t = ttt_base_lr · sigmoid(θ_lr,h · x_t + b_h) / head_dim         per head (lr_gate=False: ttt_base_lr / head_dim)
tf_i = max(0, 1/(i+1) + learnable_token_idx[i])                       per position in the mini-batch
       (token_factor="harmonic": 1/(i+1); "one": 1)
z   = TTT(XQ, XK, XV; lr, tf)                    per head: q + LN(f(q; W_t)), see ttt.ops
out = W_o · [gelu_tanh(W_g x) ⊙] LayerNorm_C(z)

Switches for ablations (the paper's Table 1) and beyond-the-paper options, all defaulting to the paper's layer:
`inner_bias`, `inner_norm` (the LN inside f's loss and read-out), `inner_residual`, `learnable_init` (False: W0 = 0,
not learned), `lr_gate`, `token_factor`, the inner optimizer (`inner_optimizer`: gd | momentum | adam | muon, see
ttt.ops.inner_optim) and retention r_t multiplying the carried weights: constant 1 − `inner_weight_decay`, or with
`forget_gate` a learned per-head gate r_t = 1 − sigmoid(θ_f,h · x_t + b_f,h) (Titans' forget gate).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import initialization as init

from ..hf_compat import pick_cache, reject_unknown
from ..ops import InnerSpec, Params, TTTState, layer_weight, ttt_forward
from .config import TTTLayerConfig
from .conv import CausalConv1d
from .layer_state import TTTLayerState
from .packing import Packing
from .rope import apply_rope, rope_table


class TTTBase(nn.Module):
    """Shared machinery of the TTT layers; subclasses define the inner model's parameters (`inner_param_names`)."""

    inner_param_names: tuple[str, ...] = ()

    def __init__(self, hidden_size: int, num_heads: int, layer_idx: int | None = None, **options: Any) -> None:
        """hidden_size C, num_heads H (head_dim C / H, even); `options`: the other fields of `TTTLayerConfig`
        (mini_batch_size, ttt_base_lr, share_qk, use_gate, ..., inner_optimizer as a name or an InnerOptimizer).
        Raises ValueError naming an option out of range, TypeError for an unknown one."""
        super().__init__()
        known = {f.name for f in dataclasses.fields(TTTLayerConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown option(s) {', '.join(unknown)}; known: {sorted(known)}")
        config = TTTLayerConfig(hidden_size=hidden_size, num_heads=num_heads, **options)
        if config.implementation == "triton" and self.inner_param_names not in (("W1", "b1"), ("W1", "b1", "W2", "b2")):
            raise ValueError(
                f"{type(self).__name__}: ttt_implementation='triton' has kernels for TTT-Linear and TTT-MLP only"
            )
        self.config = config
        self.inner_bias = config.inner_bias
        self.inner_norm = config.inner_norm
        self.inner_residual = config.inner_residual
        self.learnable_init = config.learnable_init
        self.lr_gate = config.lr_gate
        self.token_factor_mode = config.token_factor
        self.inner_optimizer = config.inner_optimizer
        self.inner_weight_decay = config.inner_weight_decay
        self.forget_gate = config.forget_gate
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = config.head_dim
        self.mini_batch_size = config.mini_batch_size
        self.ttt_base_lr = config.ttt_base_lr  # the inner-rate warmup changes it while training
        self.share_qk = config.share_qk
        self.use_gate = config.use_gate
        self.rope_theta = config.rope_theta
        self.initializer_range = config.initializer_range
        self.remat_mini_batch_group_size = config.remat_mini_batch_group_size
        self.implementation = config.implementation
        self.layer_idx = layer_idx
        conv_kernel, share_qk, use_gate = config.conv_kernel, config.share_qk, config.use_gate
        lr_gate, token_factor = config.lr_gate, config.token_factor
        inner_norm, forget_gate = config.inner_norm, config.forget_gate
        mini_batch_size = config.mini_batch_size

        width, heads = hidden_size, num_heads
        self.q_proj = nn.Linear(width, width, bias=False)
        if share_qk:
            self.conv_q = CausalConv1d(width, conv_kernel)
            self.conv_k = CausalConv1d(width, conv_kernel)
        else:
            self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.o_proj = nn.Linear(width, width, bias=False)
        if use_gate:
            self.g_proj = nn.Linear(width, width, bias=False)
        # learned inner learning rate, one gate per head: [H, 1, C] and [H, 1] (the official shapes)
        if lr_gate:
            self.learnable_ttt_lr_weight = nn.Parameter(torch.empty(heads, 1, width))
            self.learnable_ttt_lr_bias = nn.Parameter(torch.empty(heads, 1))
        if token_factor == "learned":
            self.learnable_token_idx = nn.Parameter(torch.empty(mini_batch_size))
        if inner_norm:
            self.ttt_norm_weight = nn.Parameter(torch.empty(heads, self.head_dim))
            self.ttt_norm_bias = nn.Parameter(torch.empty(heads, self.head_dim))
        if forget_gate:
            self.forget_gate_weight = nn.Parameter(torch.empty(heads, width))
            self.forget_gate_bias = nn.Parameter(torch.empty(heads))
        self.post_norm = nn.LayerNorm(width, eps=1e-6)
        self._init_inner_params()
        self.reset_parameters()

    supports_cache = True

    @classmethod
    def from_config(cls, config, layer_idx: int | None = None) -> TTTBase:
        """Build from a `TTTConfig` (or anything with its field names): its `TTTLayerConfig` and the options of this
        layer type (`extra_options`)."""
        return cls(layer_idx=layer_idx, **TTTLayerConfig.from_config(config).kwargs(), **cls.extra_options(config))

    @classmethod
    def extra_options(cls, config) -> dict:
        """Constructor arguments of this layer type beyond `TTTLayerConfig` (none here)."""
        return {}

    def _inner_param(self, name: str, shape: tuple[int, ...]) -> None:
        """W1, b1, ... as learned parameters; without `learnable_init` a W0 of zeros (a buffer, not learned);
        without `inner_bias` no bias at all (None)."""
        if name.startswith("b") and not self.inner_bias:
            setattr(self, name, None)
        elif self.learnable_init:
            setattr(self, name, nn.Parameter(torch.empty(shape)))
        else:
            self.register_buffer(name, torch.zeros(shape), persistent=False)

    def _init_inner_params(self) -> None:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """The official JAX training code's init: N(0, 0.02) projections, lr-gate kernel and inner weights; zero
        biases; LN γ = 1, β = 0; learnable_token_idx = 0; conv kernels LeCun normal."""
        std = self.initializer_range
        for name in ("q_proj", "k_proj", "v_proj", "o_proj", "g_proj"):
            if hasattr(self, name):
                init.normal_(getattr(self, name).weight, std=std)
        if self.lr_gate:
            init.normal_(self.learnable_ttt_lr_weight, std=std)
            init.zeros_(self.learnable_ttt_lr_bias)
        if self.token_factor_mode == "learned":
            init.zeros_(self.learnable_token_idx)
        if self.inner_norm:
            init.ones_(self.ttt_norm_weight)
            init.zeros_(self.ttt_norm_bias)
        if self.forget_gate:
            # start forgetting little: 1 − r = sigmoid(b) = inner_weight_decay, or 1% when that is 0
            rate = self.inner_weight_decay or 0.01
            init.normal_(self.forget_gate_weight, std=std)
            init.constant_(self.forget_gate_bias, math.log(rate / (1 - rate)))
        init.ones_(self.post_norm.weight)
        init.zeros_(self.post_norm.bias)
        for name in self.inner_param_names:
            param = getattr(self, name)
            if param is None:
                continue
            if not isinstance(param, nn.Parameter):
                # W0 = 0 without learnable_init: a non-persistent buffer, which from_pretrained allocates empty
                init.zeros_(param)
            elif name.startswith("W"):
                init.normal_(param, std=std)
            else:
                init.zeros_(param)
        if self.share_qk:
            self.conv_q.reset_parameters()
            self.conv_k.reset_parameters()

    def inner_params(self) -> Params:
        """The inner model's initial weights W0 (W1, b1[, W2, b2]), [H, ...] each; a bias is None without
        `inner_bias`."""
        return tuple(getattr(self, name) for name in self.inner_param_names)

    @property
    def state_dtype(self) -> torch.dtype:
        """The dtype the inner loop runs in and its state is kept in: W0's (float32 also when the projections hold
        bfloat16 or int8 weights, `models/weights.py`)."""
        return layer_weight(self.inner_params(), 0).dtype

    def token_factors(self) -> Tensor:
        """tf_i = max(0, 1/(i+1) + learnable_token_idx[i]), [b] (or 1/(i+1), or 1, per `token_factor`)."""
        ref = layer_weight(self.inner_params(), 0)
        if self.token_factor_mode == "one":
            return torch.ones(self.mini_batch_size, dtype=ref.dtype, device=ref.device)
        # built in float64 on the CPU (MPS has no float64), then cast
        base = 1.0 / torch.arange(1, self.mini_batch_size + 1, dtype=torch.float64)
        base = base.to(device=ref.device, dtype=ref.dtype)
        if self.token_factor_mode == "harmonic":
            return base
        return torch.clamp_min(base + self.learnable_token_idx, 0.0)

    def inner_norm_params(self) -> tuple[Tensor | None, Tensor | None]:
        """(γ, β) [H, D] of the LN inside the inner loss, or (None, None) without `inner_norm`."""
        if not self.inner_norm:
            return None, None
        return self.ttt_norm_weight, self.ttt_norm_bias

    def inner_spec(self) -> InnerSpec:
        """The fixed part of this layer's inner loop (token factors, inner LN, residual, inner optimizer), as the
        forms in `ttt.ops` take it."""
        ln_weight, ln_bias = self.inner_norm_params()
        return InnerSpec(
            self.token_factors(), ln_weight, ln_bias, residual=self.inner_residual, optimizer=self.inner_optimizer
        )

    def allocate_inference_cache(self, batch_size: int, dtype: torch.dtype | None = None, device=None) -> TTTLayerState:
        """A fresh per-layer state for `batch_size` sequences (the inner weights start at the learned W0)."""
        # not detached: a cache used with autograd on (training in chunks) must let gradients reach W0
        params = self.inner_params()
        if dtype is not None or device is not None:
            params = tuple(
                None if p is None else p.to(dtype=dtype or p.dtype, device=device or p.device) for p in params
            )
        ttt = TTTState.initial(params, batch_size)
        # optimizer buffers and retention at full size from the start, so the state's size never changes
        ttt.buffers = self.inner_optimizer.init_buffers(ttt.params)
        if self.inner_optimizer.needs_steps:
            ttt.steps = torch.zeros_like(ttt.offset)
        if self.forget_gate or self.inner_weight_decay > 0:
            ttt.retention = layer_weight(ttt.params, 0).new_ones(batch_size, self.num_heads)
        conv = {}
        if self.share_qk:
            conv_dtype = dtype or self.conv_q.weight.dtype
            conv_device = device or self.conv_q.weight.device
            conv = {
                "conv_q": self.conv_q.empty_state(batch_size, dtype=conv_dtype, device=conv_device),
                "conv_k": self.conv_k.empty_state(batch_size, dtype=conv_dtype, device=conv_device),
            }
        return TTTLayerState(ttt=ttt, conv=conv, initial=ttt)

    def _layer_state(self, cache) -> TTTLayerState | None:
        if cache is None:
            return None
        if isinstance(cache, TTTLayerState):
            return cache
        layers = getattr(cache, "layers", None)
        if layers is None:
            raise TypeError(f"the cache must be a TTTCache or a TTTLayerState, got {type(cache).__name__}")
        if self.layer_idx is None or not 0 <= self.layer_idx < len(layers):
            raise ValueError(
                f"this layer's layer_idx ({self.layer_idx}) does not index the cache's {len(layers)} layers; "
                "give each TTT layer its layer_idx"
            )
        state = layers[self.layer_idx]
        if not isinstance(state, TTTLayerState):
            raise TypeError(f"cache layer {self.layer_idx} is a {type(state).__name__}, not a TTTLayerState")
        return state

    def _check_state(self, state: TTTLayerState, batch: int, dtype: torch.dtype | None = None) -> None:
        if state.batch_size != batch:
            raise ValueError(
                f"the cache was made for batch size {state.batch_size}, the input has batch size {batch} (with beam "
                "search or num_return_sequences, allocate batch × num_beams rows)"
            )
        first = layer_weight(state.ttt.params, 0)
        if dtype is not None and first.dtype != dtype:
            raise ValueError(
                f"the cache holds {first.dtype} tensors, the layer runs in {dtype}: allocate it in {dtype}"
            )
        device = layer_weight(self.inner_params(), 0).device
        if first.device != device:
            raise ValueError(f"the cache is on {first.device}, the layer on {device}")
        expected = [None if p is None else tuple(p.shape) for p in self.inner_params()]
        got = [None if p is None else tuple(p.shape[1:]) for p in state.ttt.params]
        conv_missing = self.share_qk and not {"conv_q", "conv_k"} <= set(state.conv)
        # shapes, dtype and device only: reading the offsets would synchronise with the device (they are checked
        # where a state comes from outside, when a session is loaded)
        if expected != got or conv_missing:
            raise ValueError(
                f"the cache does not fit this layer (layer {self.layer_idx}: inner weights {expected}, cache {got}); "
                "was it made for another config?"
            )

    def forward(
        self,
        hidden_states: Tensor,
        attention_mask: Tensor | None = None,
        cache: TTTLayerState | Any = None,
        use_cache: bool = False,
        past_key_values: TTTLayerState | Any = None,
        *,
        packing: Packing | None | str = "from attention_mask",
        state: TTTLayerState | None = None,
        **kwargs,
    ) -> Tensor:
        """hidden_states: [B, T, C]; attention_mask: [B, ≥T] 0/1 (padding anywhere); cache (or its older name
        past_key_values): a TTTCache (indexed by `layer_idx`) or a TTTLayerState, updated in place and checked here
        (shapes, dtype and device, without a device synchronisation). use_cache is accepted for call sites written for
        attention layers (the state given is always updated). Returns [B, T, C].

        packing= and state= are how a model calls its layers: the padding layout it computed once for all of them,
        and this layer's state, which it checked once per call (`TTTModel.forward`).

        Raises TypeError for any other keyword argument, ValueError for a state that does not fit the layer."""
        reject_unknown(f"{type(self).__name__}.forward", kwargs)
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(
                f"{type(self).__name__} expects hidden_states of shape [batch, seq_len, {self.hidden_size}], "
                f"got {tuple(hidden_states.shape)}"
            )
        batch, seq_len, _ = hidden_states.shape
        if isinstance(packing, str):  # a direct call, not from a model: the layer checks what it is given
            state = self._layer_state(pick_cache(cache, past_key_values))
            if state is not None:
                self._check_state(state, batch, self.state_dtype)
            packing = Packing.from_mask(attention_mask, batch, seq_len, hidden_states.device)
        assert not isinstance(packing, str)
        if seq_len == 0:
            return hidden_states.new_zeros(hidden_states.shape)
        x = hidden_states if packing is None else packing.pack(hidden_states)
        lengths = None if packing is None else packing.lengths
        out = self._mix(x, state, lengths)
        if state is not None:
            state.num_positions += seq_len
        return out if packing is None else packing.unpack(out)

    def step(self, hidden_states: Tensor, state: TTTLayerState) -> Tensor:
        """One token per row through the primal step: hidden_states [B, C] -> [B, C]; `state` updated in place."""
        if hidden_states.dim() != 2:
            raise ValueError(f"step expects hidden_states of shape [batch, {self.hidden_size}]")
        if state is None:
            raise ValueError("step needs a state: state = layer.allocate_inference_cache(batch_size)")
        return self.forward(hidden_states.unsqueeze(1), cache=state).squeeze(1)

    def projections(
        self, x: Tensor, state: TTTLayerState | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, TTTState, dict[str, Tensor]]:
        """The inner loop's inputs for x [B, T, C]: q, k, v [B, T, H, D] (projected, conv'd, RoPE'd), the
        per-token learning rate lr [B, T, H], the TTT state to start from, and the new conv states."""
        batch, seq_len, _ = x.shape
        heads, head_dim = self.num_heads, self.head_dim
        conv = {} if state is None else state.conv
        new_conv = {}
        xq = self.q_proj(x)
        if self.share_qk:
            xk, new_conv["conv_k"] = self.conv_k(xq, conv.get("conv_k"), lengths)
            xq, new_conv["conv_q"] = self.conv_q(xq, conv.get("conv_q"), lengths)
        else:
            xk = self.k_proj(x)
        xv = self.v_proj(x)
        q, k, v = (t.view(batch, seq_len, heads, head_dim) for t in (xq, xk, xv))

        ttt_state = state.ttt if state is not None else TTTState.initial(self.inner_params(), batch, x.device)
        positions = (ttt_state.offset.unsqueeze(1) + torch.arange(seq_len, device=x.device)) % self.mini_batch_size
        cos, sin = rope_table(self.mini_batch_size, head_dim, self.rope_theta, x.dtype, x.device)
        q, k = apply_rope(q, positions, cos, sin), apply_rope(k, positions, cos, sin)

        if self.lr_gate:
            gate = torch.einsum("btc,hc->bth", x, self.learnable_ttt_lr_weight.squeeze(1))
            lr = self.ttt_base_lr * torch.sigmoid(gate + self.learnable_ttt_lr_bias.view(heads)) / head_dim
        else:
            lr = x.new_full((batch, seq_len, heads), self.ttt_base_lr / head_dim)
        return q, k, v, lr, ttt_state, new_conv

    def retention(self, x: Tensor) -> Tensor | None:
        """r_t [B, T, H] multiplying the carried inner weights (None: no decay)."""
        if self.forget_gate:
            gate = torch.einsum("btc,hc->bth", x, self.forget_gate_weight) + self.forget_gate_bias
            return torch.sigmoid(-gate)  # 1 − sigmoid(gate)
        if self.inner_weight_decay > 0:
            return x.new_full((*x.shape[:2], self.num_heads), 1.0 - self.inner_weight_decay)
        return None

    def _mix(self, x: Tensor, state: TTTLayerState | None, lengths: Tensor | None) -> Tensor:
        batch, seq_len, width = x.shape
        q, k, v, lr, ttt_state, new_conv = self.projections(x, state, lengths)
        z, new_state = self.inner_loop(x, q, k, v, lr, ttt_state, lengths)
        if state is not None:
            state.ttt = new_state
            state.conv.update(new_conv)

        z = self.post_norm(z.reshape(batch, seq_len, width))
        if self.use_gate:
            z = F.gelu(self.g_proj(x), approximate="tanh") * z
        return self.o_proj(z)

    def inner_loop(
        self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, lr: Tensor, ttt_state: TTTState, lengths: Tensor | None
    ) -> tuple[Tensor, TTTState]:
        """z [B, T, H, D] = TTT(q, k, v; lr, tf) from `ttt_state`, in the configured form; returns the new state.

        Under autocast the inner loop runs with autocast off, in the state's dtype (float32): q, k, v and lr are cast
        once per call, instead of autocast casting the operands of each of the loop's small products, mini-batch by
        mini-batch, to bfloat16 and the results back for the float32 state (docs/fast_inference.md has the profile
        that showed those casts). The Triton kernels take bfloat16 inputs as they are (their arithmetic is float32).
        """
        retention = self.retention(x)
        device = q.device.type
        if self.implementation == "triton" or not torch.is_autocast_enabled(device):
            return self._run_form(q, k, v, lr, ttt_state, lengths, retention)
        dtype = self.state_dtype
        with torch.autocast(device, enabled=False):
            r = None if retention is None else retention.to(dtype)
            return self._run_form(q.to(dtype), k.to(dtype), v.to(dtype), lr.to(dtype), ttt_state, lengths, r)

    def _run_form(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        lr: Tensor,
        ttt_state: TTTState,
        lengths: Tensor | None,
        retention: Tensor | None,
    ) -> tuple[Tensor, TTTState]:
        return ttt_forward(
            self.implementation,
            q,
            k,
            v,
            lr,
            self.inner_spec(),
            ttt_state,
            lengths,
            retention,
            remat_mini_batch_group_size=self.remat_mini_batch_group_size,
        )

    def extra_repr(self) -> str:
        extra = ""
        if self.inner_optimizer.name != "gd":
            extra += f", inner_optimizer={self.inner_optimizer.name!r}"
        if self.forget_gate or self.inner_weight_decay:
            extra += f", forget_gate={self.forget_gate}, inner_weight_decay={self.inner_weight_decay}"
        return (
            f"heads={self.num_heads}, head_dim={self.head_dim}, mini_batch_size={self.mini_batch_size}, "
            f"ttt_base_lr={self.ttt_base_lr}, implementation={self.implementation!r}{extra}"
        )


class TTTLinear(TTTBase):
    """TTT-Linear: the inner model is f(x) = x W1 + b1 per head (W1 [H, D, D], b1 [H, 1, D])."""

    inner_param_names = ("W1", "b1")

    def _init_inner_params(self) -> None:
        heads, dim = self.num_heads, self.head_dim
        self._inner_param("W1", (heads, dim, dim))
        self._inner_param("b1", (heads, 1, dim))


class TTTMLP(TTTBase):
    """TTT-MLP: the inner model is f(x) = gelu_tanh(x W1 + b1) W2 + b2 per head, hidden width 4·head_dim."""

    inner_param_names = ("W1", "b1", "W2", "b2")

    def _init_inner_params(self) -> None:
        heads, dim = self.num_heads, self.head_dim
        self._inner_param("W1", (heads, dim, 4 * dim))
        self._inner_param("b1", (heads, 1, 4 * dim))
        self._inner_param("W2", (heads, 4 * dim, dim))
        self._inner_param("b2", (heads, 1, dim))


TTT_LAYERS: dict[str, type[TTTBase]] = {"linear": TTTLinear, "mlp": TTTMLP}


def register_ttt_layer(name: str, layer: type[TTTBase]) -> None:
    """Make `TTTConfig(ttt_layer_type=name)` build `layer` (a TTTBase subclass with `from_config`) in this process.
    Registering the same class twice is a no-op; another class under a taken name is refused."""
    if not (isinstance(layer, type) and issubclass(layer, TTTBase)):
        raise TypeError(f"register_ttt_layer: {layer!r} is not a TTTBase subclass")
    if TTT_LAYERS.get(name, layer) is not layer:
        raise ValueError(f"register_ttt_layer: ttt_layer_type {name!r} is taken by {TTT_LAYERS[name].__name__}")
    TTT_LAYERS[name] = layer
