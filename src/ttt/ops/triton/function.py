"""Launchers for the Triton kernels (`linear.py`, `mlp.py`) and the autograd.Function that ties forward and
backward together. Inputs here are already on the mini-batch grid (`form.py` lays them out); the inner weights and
the gradient sums come packed per (row, head) as one fp32 vector each (`packed_size`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .linear import ttt_linear_bwd_kernel, ttt_linear_fwd_kernel, ttt_linear_step_kernel
from .mlp import ttt_mlp_bwd_kernel, ttt_mlp_fwd_kernel, ttt_mlp_step_kernel


@dataclass(frozen=True)
class Kernels:
    """The three kernels of one inner model and the layout of its packed state."""

    forward: Any
    backward: Any
    step: Any
    shapes: tuple[tuple[str, str], ...]  # per packed tensor, its (rows, cols) in units of "D" or "F" (= 4D) or "1"

    def sizes(self, dim: int) -> list[tuple[int, int]]:
        unit = {"D": dim, "F": 4 * dim, "1": 1}
        return [(unit[rows], unit[cols]) for rows, cols in self.shapes]

    def packed_size(self, dim: int) -> int:
        return sum(rows * cols for rows, cols in self.sizes(dim))


KERNELS = {
    # (W1 [D, D], b1 [1, D])
    "linear": Kernels(ttt_linear_fwd_kernel, ttt_linear_bwd_kernel, ttt_linear_step_kernel, (("D", "D"), ("1", "D"))),
    # (W1 [D, F], b1 [1, F], W2 [F, D], b2 [1, D])
    "mlp": Kernels(
        ttt_mlp_fwd_kernel, ttt_mlp_bwd_kernel, ttt_mlp_step_kernel, (("D", "F"), ("1", "F"), ("F", "D"), ("1", "D"))
    ),
}


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs get fp32 products (exact to the torch forms); bf16 inputs run on the tensor cores in tf32
    return "ieee" if dtype == torch.float32 else "tf32"


class TTTFunction(torch.autograd.Function):
    """(out, S, G) = the dual form over a grid, one kernel launch forward and one backward.

    kind: "linear" or "mlp" (`KERNELS`); q, k, v: [B, H, N, D] (fp32 or bf16, contiguous, N a multiple of the
    mini-batch size); lr: [B, H, N]; token_factor: [MB]; ln_weight, ln_bias: [H, D]; s0, g0: [B, H, P] fp32 (the
    packed weights and gradient sums); ends: [B] int64 (the slot after each row's last real token); eps: the LN's ε.
    Returns out [B, H, N, D] in q's dtype and the final S, G [B, H, P] in fp32."""

    @staticmethod
    def forward(ctx, kind, q, k, v, lr, token_factor, ln_weight, ln_bias, s0, g0, ends, eps):
        batch, heads, grid_len, dim = q.shape
        mb = token_factor.shape[0]
        n_mb = grid_len // mb
        save = any(ctx.needs_input_grad)
        out = torch.zeros_like(q)
        s, g = torch.empty_like(s0), torch.empty_like(g0)
        s_save = s0.new_empty((batch, heads, n_mb, s0.shape[-1]) if save else (1,))
        KERNELS[kind].forward[(batch, heads)](
            q, k, v, lr, token_factor, ln_weight, ln_bias, s0, g0, ends,
            out, s, g, s_save,
            heads, grid_len, n_mb, eps,
            D=dim, MB=mb, SAVE=save, PREC=_precision(q.dtype),
        )  # fmt: skip
        if save:
            ctx.save_for_backward(q, k, v, lr, token_factor, ln_weight, ln_bias, g0, ends, s_save)
            ctx.eps, ctx.kind = eps, kind
        return out, s, g

    @staticmethod
    def backward(ctx, d_out, d_s, d_g):
        q, k, v, lr, token_factor, ln_weight, ln_bias, g0, ends, s_save = ctx.saved_tensors
        batch, heads, grid_len, dim = q.shape
        mb = token_factor.shape[0]

        def given(grad: Tensor | None, like: Tensor) -> Tensor:
            return torch.zeros_like(like) if grad is None else grad.contiguous()

        d_out, d_s, d_g = given(d_out, q), given(d_s, g0), given(d_g, g0)
        dq, dk, dv, dlr = (torch.zeros_like(t) for t in (q, k, v, lr))
        f32 = {"dtype": torch.float32, "device": q.device}
        d_tf = torch.empty(batch, heads, mb, **f32)
        d_ln_w, d_ln_b = torch.empty(batch, heads, dim, **f32), torch.empty(batch, heads, dim, **f32)
        ds0, dg0 = torch.empty_like(g0), torch.empty_like(g0)
        KERNELS[ctx.kind].backward[(batch, heads)](
            q, k, v, lr, token_factor, ln_weight, ln_bias, g0, ends, s_save,
            d_out, d_s, d_g,
            dq, dk, dv, dlr, d_tf, d_ln_w, d_ln_b, ds0, dg0,
            heads, grid_len, grid_len // mb, ctx.eps,
            D=dim, MB=mb, PREC=_precision(q.dtype),
        )  # fmt: skip
        d_tf = d_tf.sum(dim=(0, 1)).to(token_factor.dtype)
        d_ln_w, d_ln_b = d_ln_w.sum(0).to(ln_weight.dtype), d_ln_b.sum(0).to(ln_bias.dtype)
        return None, dq, dk, dv, dlr, d_tf, d_ln_w, d_ln_b, ds0, dg0, None, None


def step(
    kind: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    token_factor: Tensor,
    ln_weight: Tensor,
    ln_bias: Tensor,
    packed: tuple[Tensor, Tensor],
    offset: Tensor,
    valid: Tensor,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """One decode token through the step kernel (no autograd). q, k, v: [B, H, D]; lr: [B, H]; packed: (S, G)
    [B, H, P] fp32 contiguous; offset: [B] int64; valid: [B] fp32 (1 or 0). Returns the output [B, H, D] in q's
    dtype and the new S, G."""
    batch, heads, dim = q.shape
    out = torch.empty_like(q)
    s, g = torch.empty_like(packed[0]), torch.empty_like(packed[1])
    KERNELS[kind].step[(batch, heads)](
        q, k, v, lr, token_factor, ln_weight, ln_bias, *packed, offset, valid,
        out, s, g,
        heads, eps,
        D=dim, MB=token_factor.shape[0],
    )  # fmt: skip
    return out, s, g
