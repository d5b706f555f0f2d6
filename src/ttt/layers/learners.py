"""TTT layers with other inner learners: any `nn.Module` as the hidden state, and the Nadaraya-Watson estimator.

TTTGeneric          f = a user's module (one copy of its parameters per head, [H, ...]), mini-batch TTT with the
                    paper's GD and η semantics, inner gradients by torch.func (`ttt.ops.generic`). Training and
                    evaluation forward; no cache (decode) and no padding masks.
TTTNadarayaWatson   f(q_t) = Σ_{s ≤ t} exp(kₛᵀq_t / √D) vₛ / Σ_{s ≤ t} exp(kₛᵀq_t / √D): the learner stores every
                    (k, v) pair (Theorem 2: causal softmax attention). Its state grows with the context, the one
                    exception to the fixed-size TTT state, so it has no TTT cache either. `implementation="naive"`
                    runs the learner token by token; otherwise SDPA computes the same function.

Both keep the TTT layer's projections, RoPE, η gate, output norm and gate (`TTTBase.views`, `TTTBase._mix`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import initialization as init

from ..ops import ttt_generic, ttt_nadaraya_watson
from .ttt import TTT_LAYERS, TTTBase


class SwiGLU(nn.Module):
    """f(x) = (silu(x W_gate) ⊙ x W_up) W_down, no biases."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


def _gelu() -> nn.Module:
    return nn.GELU(approximate="tanh")


# inner models by name (config field `inner_model`), each for one head: [D] -> [D]
INNER_MODELS = {
    "linear": lambda d: nn.Linear(d, d),
    "mlp": lambda d: nn.Sequential(nn.Linear(d, 4 * d), _gelu(), nn.Linear(4 * d, d)),
    "mlp3": lambda d: nn.Sequential(
        nn.Linear(d, 2 * d), _gelu(), nn.Linear(2 * d, 2 * d), _gelu(), nn.Linear(2 * d, d)
    ),
    "swiglu": lambda d: SwiGLU(d, 2 * d),
}


class _NoCache:
    supports_cache = False

    def allocate_inference_cache(self, batch_size: int, dtype=None, device=None):
        raise NotImplementedError(
            f"{type(self).__name__} keeps no fixed-size TTT state, so it has no cache or decode step: use it for "
            "training and evaluation forwards (TTTLinear / TTTMLP support decoding)"
        )

    def _check_state(self, state, batch: int, dtype=None) -> None:
        self.allocate_inference_cache(batch)

    def _check_lengths(self, lengths: Tensor | None) -> None:
        if lengths is not None:
            raise NotImplementedError(f"{type(self).__name__} does not take padding masks; give unpadded batches")


class TTTGeneric(_NoCache, TTTBase):
    """A TTT layer whose inner model is any module (`inner_model`: an `nn.Module` mapping [D] -> [D], or a name in
    INNER_MODELS). The module is a template: its structure is used, each head gets its own learned W0."""

    _inner_spec: nn.Module | str  # set with object.__setattr__: outside the module tree
    _template: nn.Module

    def __init__(self, hidden_size: int, num_heads: int, inner_model: nn.Module | str = "swiglu", **kwargs) -> None:
        for option, default in (("inner_optimizer", "gd"), ("inner_weight_decay", 0.0), ("forget_gate", False)):
            value = kwargs.get(option, default)
            if getattr(value, "name", value) != default:
                raise ValueError(f"TTTGeneric supports the paper's GD only ({option} must stay {default!r})")
        for option in ("inner_norm", "inner_residual"):
            if not kwargs.get(option, True):
                raise ValueError(f"TTTGeneric always uses the inner LN and residual ({option} must stay True)")
        # before Module.__init__: _init_inner_params (called by TTTBase.__init__) needs it
        object.__setattr__(self, "_inner_spec", inner_model)
        super().__init__(hidden_size, num_heads, **kwargs)

    @classmethod
    def extra_options(cls, config) -> dict:
        return {"inner_model": getattr(config, "inner_model", "swiglu")}

    def _init_inner_params(self) -> None:
        spec = self._inner_spec
        if isinstance(spec, str):
            if spec not in INNER_MODELS:
                raise ValueError(f"inner_model must be an nn.Module or one of {tuple(INNER_MODELS)}, got {spec!r}")
            spec = INNER_MODELS[spec](self.head_dim)
        probe = torch.zeros(1, self.head_dim, dtype=next(spec.parameters()).dtype)
        out = spec(probe)
        if out.shape != probe.shape:
            raise ValueError(
                f"the inner model must map [.., {self.head_dim}] to [.., {self.head_dim}], got {tuple(out.shape)}"
            )
        # a template outside the module tree: its structure is used, its own parameters are not
        object.__setattr__(self, "_template", spec)
        self._names = [name for name, _ in spec.named_parameters()]
        self.inner_param_names = tuple("inner_" + name.replace(".", "_") for name in self._names)
        for attr, (_, p) in zip(self.inner_param_names, spec.named_parameters()):
            self._inner_param(attr, (self.num_heads, *p.shape))

    def reset_parameters(self) -> None:
        """TTTBase's init, then the inner weights per head: N(0, initializer_range) for matrices, 0 for vectors."""
        super().reset_parameters()
        for name in self.inner_param_names:
            param = getattr(self, name)
            if isinstance(param, nn.Parameter):
                if param.dim() > 2:
                    init.normal_(param, std=self.initializer_range)
                else:
                    init.zeros_(param)

    def inner_loop(self, x, q, k, v, lr, ttt_state, lengths):
        self._check_lengths(lengths)
        params = {name: getattr(self, attr) for name, attr in zip(self._names, self.inner_param_names)}
        z, _ = ttt_generic(self._template, params, q, k, v, lr, self.inner_spec())
        return z, ttt_state

    def extra_repr(self) -> str:
        return super().extra_repr() + f", inner_model={type(self._template).__name__}"


class TTTNadarayaWatson(_NoCache, TTTBase):
    """A TTT layer whose inner learner is the Nadaraya-Watson estimator (see the module docstring)."""

    def __init__(self, hidden_size: int, num_heads: int, **kwargs) -> None:
        # the learner has no inner weights, LN, learning rate or token factor
        kwargs.update(inner_norm=False, lr_gate=False, token_factor="one")
        super().__init__(hidden_size, num_heads, **kwargs)

    def _init_inner_params(self) -> None:
        pass

    def inner_loop(self, x, q, k, v, lr, ttt_state, lengths):
        self._check_lengths(lengths)
        if self.implementation == "naive":
            return ttt_nadaraya_watson(q, k, v), ttt_state
        z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return z.transpose(1, 2), ttt_state


TTT_LAYERS.update(generic=TTTGeneric, nadaraya_watson=TTTNadarayaWatson)
