"""TTT-Linear and TTT-MLP layers: drop-in sequence mixers ([B, T, C] -> [B, T, C]).

XQ, XK, XV = x W_Q, x W_K, x W_V                 (share_qk: one W_Q then two causal convs, conv_q / conv_k)
RoPE on XQ, XK at position mod mini_batch_size
lr_t = ttt_base_lr · sigmoid(θ_lr,h · x_t + b_h) / head_dim         per head
tf_i = max(0, 1/(i+1) + learnable_token_idx[i])                       per position in the mini-batch
z   = TTT(XQ, XK, XV; lr, tf)                    per head: q + LN(f(q; W_t)), see ttt.ops
out = W_o · [gelu_tanh(W_g x) ⊙] LayerNorm_C(z)
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import initialization as init

from ..ops import TTTState, ttt_dual, ttt_naive, ttt_primal, ttt_primal_step
from .conv import CausalConv1d
from .packing import Packing
from .rope import apply_rope, rope_table
from .state import TTTLayerState

Implementation = Literal["auto", "dual", "primal", "naive"]
IMPLEMENTATIONS = ("auto", "dual", "primal", "naive")


class TTTBase(nn.Module):
    """Shared machinery of the TTT layers; subclasses define the inner model's parameters (`inner_param_names`)."""

    inner_param_names: tuple[str, ...] = ()

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mini_batch_size: int = 16,
        ttt_base_lr: float = 1.0,
        share_qk: bool = False,
        use_gate: bool = False,
        conv_kernel: int = 4,
        rope_theta: float = 10000.0,
        initializer_range: float = 0.02,
        remat_mini_batch_group_size: int = 0,
        implementation: Implementation = "auto",
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        if (hidden_size // num_heads) % 2:
            raise ValueError(f"head_dim = hidden_size / num_heads = {hidden_size // num_heads} must be even for RoPE")
        if mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
        if share_qk and conv_kernel < 1:
            raise ValueError(f"conv_kernel must be >= 1 with share_qk, got {conv_kernel}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.mini_batch_size = mini_batch_size
        self.ttt_base_lr = ttt_base_lr
        self.share_qk = share_qk
        self.use_gate = use_gate
        self.rope_theta = rope_theta
        self.initializer_range = initializer_range
        self.remat_mini_batch_group_size = remat_mini_batch_group_size
        self.implementation = implementation
        self.layer_idx = layer_idx

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
        self.learnable_ttt_lr_weight = nn.Parameter(torch.empty(heads, 1, width))
        self.learnable_ttt_lr_bias = nn.Parameter(torch.empty(heads, 1))
        self.learnable_token_idx = nn.Parameter(torch.empty(mini_batch_size))
        self.ttt_norm_weight = nn.Parameter(torch.empty(heads, self.head_dim))
        self.ttt_norm_bias = nn.Parameter(torch.empty(heads, self.head_dim))
        self.post_norm = nn.LayerNorm(width, eps=1e-6)
        self._init_inner_params()
        self.reset_parameters()

    @classmethod
    def from_config(cls, config, layer_idx: int | None = None) -> TTTBase:
        """Build from a `TTTConfig` (or anything with its field names)."""
        return cls(
            hidden_size=config.hidden_size,
            num_heads=config.num_attention_heads,
            mini_batch_size=config.mini_batch_size,
            ttt_base_lr=config.ttt_base_lr,
            share_qk=config.share_qk,
            use_gate=config.use_gate,
            conv_kernel=config.conv_kernel,
            rope_theta=config.rope_theta,
            initializer_range=config.initializer_range,
            remat_mini_batch_group_size=config.remat_mini_batch_group_size,
            implementation=config.ttt_implementation,
            layer_idx=layer_idx,
        )

    def _init_inner_params(self) -> None:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """The official JAX training code's init: N(0, 0.02) projections, lr-gate kernel and inner weights; zero
        biases; LN γ = 1, β = 0; learnable_token_idx = 0; conv kernels LeCun normal."""
        std = self.initializer_range
        for name in ("q_proj", "k_proj", "v_proj", "o_proj", "g_proj"):
            if hasattr(self, name):
                init.normal_(getattr(self, name).weight, std=std)
        init.normal_(self.learnable_ttt_lr_weight, std=std)
        init.zeros_(self.learnable_ttt_lr_bias)
        init.zeros_(self.learnable_token_idx)
        init.ones_(self.ttt_norm_weight)
        init.zeros_(self.ttt_norm_bias)
        init.ones_(self.post_norm.weight)
        init.zeros_(self.post_norm.bias)
        for name in self.inner_param_names:
            param = getattr(self, name)
            if name.startswith("W"):
                init.normal_(param, std=std)
            else:
                init.zeros_(param)
        if self.share_qk:
            self.conv_q.reset_parameters()
            self.conv_k.reset_parameters()

    def inner_params(self) -> tuple[Tensor, ...]:
        return tuple(getattr(self, name) for name in self.inner_param_names)

    def token_factor(self) -> Tensor:
        """tf_i = max(0, 1/(i+1) + learnable_token_idx[i]), [b]."""
        idx = self.learnable_token_idx
        # built in float64 on the CPU (MPS has no float64), then cast
        base = 1.0 / torch.arange(1, self.mini_batch_size + 1, dtype=torch.float64)
        return torch.clamp_min(base.to(device=idx.device, dtype=idx.dtype) + idx, 0.0)

    def allocate_inference_cache(self, batch_size: int, dtype: torch.dtype | None = None, device=None) -> TTTLayerState:
        """A fresh per-layer state for `batch_size` sequences (the inner weights start at the learned W0)."""
        # not detached: a cache used with autograd on (training in chunks) must let gradients reach W0
        params = self.inner_params()
        if dtype is not None or device is not None:
            params = tuple(p.to(dtype=dtype or p.dtype, device=device or p.device) for p in params)
        ttt = TTTState.initial(params, batch_size)
        conv = {}
        if self.share_qk:
            kw = dict(dtype=dtype or self.conv_q.weight.dtype, device=device or self.conv_q.weight.device)
            conv = {
                "conv_q": self.conv_q.empty_state(batch_size, **kw),
                "conv_k": self.conv_k.empty_state(batch_size, **kw),
            }
        return TTTLayerState(ttt=ttt, conv=conv, initial=ttt)

    def _layer_state(self, past_key_values) -> TTTLayerState | None:
        if past_key_values is None:
            return None
        if isinstance(past_key_values, TTTLayerState):
            return past_key_values
        layers = getattr(past_key_values, "layers", None)
        if layers is None:
            raise TypeError(
                f"past_key_values must be a TTTCache or a TTTLayerState, got {type(past_key_values).__name__}"
            )
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
        first = state.ttt.params[0]
        if dtype is not None and first.dtype != dtype:
            raise ValueError(
                f"the cache holds {first.dtype} tensors, the layer runs in {dtype}: allocate it in {dtype}"
            )
        if first.device != self.q_proj.weight.device:
            raise ValueError(f"the cache is on {first.device}, the layer on {self.q_proj.weight.device}")
        expected = [tuple(p.shape) for p in self.inner_params()]
        got = [tuple(p.shape[1:]) for p in state.ttt.params]
        conv_missing = self.share_qk and not {"conv_q", "conv_k"} <= set(state.conv)
        if expected != got or conv_missing or int(state.ttt.offset.max()) >= self.mini_batch_size:
            raise ValueError(
                f"the cache does not fit this layer (layer {self.layer_idx}: inner weights {expected}, cache {got}); "
                "was it made for another config?"
            )

    def forward(
        self,
        hidden_states: Tensor,
        attention_mask: Tensor | None = None,
        past_key_values=None,
        use_cache: bool = False,
        **kwargs,
    ) -> Tensor:
        """hidden_states: [B, T, C]; attention_mask: [B, ≥T] 0/1 (padding anywhere); past_key_values: a TTTCache
        (indexed by `layer_idx`) or a TTTLayerState, updated in place. Returns [B, T, C]."""
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(
                f"{type(self).__name__} expects hidden_states of shape [batch, seq_len, {self.hidden_size}], "
                f"got {tuple(hidden_states.shape)}"
            )
        batch, seq_len, _ = hidden_states.shape
        state = self._layer_state(past_key_values)
        if state is not None:
            self._check_state(state, batch, self.q_proj.weight.dtype)
        if seq_len == 0:
            return hidden_states.new_zeros(hidden_states.shape)
        packing = Packing.from_mask(attention_mask, batch, seq_len, hidden_states.device)
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
        return self.forward(hidden_states.unsqueeze(1), past_key_values=state).squeeze(1)

    def views(
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

        ttt_state = state.ttt if state is not None else TTTState.initial(self.inner_params(), batch)
        positions = (ttt_state.offset.unsqueeze(1) + torch.arange(seq_len, device=x.device)) % self.mini_batch_size
        cos, sin = rope_table(self.mini_batch_size, head_dim, self.rope_theta, x.dtype, x.device)
        q, k = apply_rope(q, positions, cos, sin), apply_rope(k, positions, cos, sin)

        gate = torch.einsum("btc,hc->bth", x, self.learnable_ttt_lr_weight.squeeze(1))
        lr = self.ttt_base_lr * torch.sigmoid(gate + self.learnable_ttt_lr_bias.view(heads)) / head_dim
        return q, k, v, lr, ttt_state, new_conv

    def _mix(self, x: Tensor, state: TTTLayerState | None, lengths: Tensor | None) -> Tensor:
        batch, seq_len, width = x.shape
        q, k, v, lr, ttt_state, new_conv = self.views(x, state, lengths)
        args = (q, k, v, lr, self.token_factor(), self.ttt_norm_weight, self.ttt_norm_bias, ttt_state)
        impl = self.implementation
        if impl == "auto":
            impl = "primal" if seq_len == 1 else "dual"
        if impl == "primal" and seq_len == 1:
            valid = None if lengths is None else lengths > 0
            z, new_state = ttt_primal_step(*(a[:, 0] if i < 4 else a for i, a in enumerate(args)), valid=valid)
            z = z.unsqueeze(1)
        elif impl == "primal":
            z, new_state = ttt_primal(*args, lengths=lengths)
        elif impl == "naive":
            z, new_state = ttt_naive(*args, lengths=lengths)
        else:
            z, new_state = ttt_dual(
                *args, lengths=lengths, remat_mini_batch_group_size=self.remat_mini_batch_group_size
            )
        if state is not None:
            state.ttt = new_state
            state.conv.update(new_conv)

        z = self.post_norm(z.reshape(batch, seq_len, width))
        if self.use_gate:
            z = F.gelu(self.g_proj(x), approximate="tanh") * z
        return self.o_proj(z)

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, head_dim={self.head_dim}, mini_batch_size={self.mini_batch_size}, "
            f"ttt_base_lr={self.ttt_base_lr}, implementation={self.implementation!r}"
        )


class TTTLinear(TTTBase):
    """TTT-Linear: the inner model is f(x) = x W1 + b1 per head (W1 [H, D, D], b1 [H, 1, D])."""

    inner_param_names = ("W1", "b1")

    def _init_inner_params(self) -> None:
        heads, dim = self.num_heads, self.head_dim
        self.W1 = nn.Parameter(torch.empty(heads, dim, dim))
        self.b1 = nn.Parameter(torch.empty(heads, 1, dim))


class TTTMLP(TTTBase):
    """TTT-MLP: the inner model is f(x) = gelu_tanh(x W1 + b1) W2 + b2 per head, hidden width 4·head_dim."""

    inner_param_names = ("W1", "b1", "W2", "b2")

    def _init_inner_params(self) -> None:
        heads, dim = self.num_heads, self.head_dim
        self.W1 = nn.Parameter(torch.empty(heads, dim, 4 * dim))
        self.b1 = nn.Parameter(torch.empty(heads, 1, 4 * dim))
        self.W2 = nn.Parameter(torch.empty(heads, 4 * dim, dim))
        self.b2 = nn.Parameter(torch.empty(heads, 1, dim))


TTT_LAYERS: dict[str, type[TTTBase]] = {"linear": TTTLinear, "mlp": TTTMLP}
