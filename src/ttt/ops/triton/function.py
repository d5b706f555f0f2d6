"""Launchers for the TTT-Linear Triton kernels (`kernels.py`) and the autograd.Function that ties forward and
backward together. Inputs here are already on the mini-batch grid (`form.py` lays them out)."""

from __future__ import annotations

import torch
from torch import Tensor

from .kernels import ttt_linear_bwd_kernel, ttt_linear_fwd_kernel, ttt_linear_step_kernel


def _precision(dtype: torch.dtype) -> str:
    # fp32 inputs get fp32 products (exact to the torch forms); bf16 inputs run on the tensor cores in tf32
    return "ieee" if dtype == torch.float32 else "tf32"


class TTTLinearFunction(torch.autograd.Function):
    """(out, W, b, G_W, G_b) = the dual form over a grid, one kernel launch forward and one backward.

    q, k, v: [B, H, N, D] (fp32 or bf16, contiguous, N a multiple of the mini-batch size); lr: [B, H, N];
    token_factor: [MB]; ln_weight, ln_bias: [H, D]; w0, gw0: [B, H, D, D] fp32; b0, gb0: [B, H, D] fp32;
    ends: [B] int64 (the slot after each row's last real token); eps: the LN's ε.
    Returns out [B, H, N, D] in q's dtype and the final state in fp32."""

    @staticmethod
    def forward(ctx, q, k, v, lr, token_factor, ln_weight, ln_bias, w0, b0, gw0, gb0, ends, eps):
        batch, heads, grid_len, dim = q.shape
        mb = token_factor.shape[0]
        n_mb = grid_len // mb
        save = any(ctx.needs_input_grad)
        out = torch.zeros_like(q)
        w, b, gw, gb = torch.empty_like(w0), torch.empty_like(b0), torch.empty_like(gw0), torch.empty_like(gb0)
        w_save = q.new_empty((batch, heads, n_mb, dim, dim) if save else (1,), dtype=torch.float32)
        b_save = q.new_empty((batch, heads, n_mb, dim) if save else (1,), dtype=torch.float32)
        ttt_linear_fwd_kernel[(batch, heads)](
            q, k, v, lr, token_factor, ln_weight, ln_bias, w0, b0, gw0, gb0, ends,
            out, w, b, gw, gb, w_save, b_save,
            heads, grid_len, n_mb, eps,
            D=dim, MB=mb, SAVE=save, PREC=_precision(q.dtype),
        )  # fmt: skip
        if save:
            ctx.save_for_backward(q, k, v, lr, token_factor, ln_weight, ln_bias, gw0, gb0, ends, w_save, b_save)
            ctx.eps = eps
        return out, w, b, gw, gb

    @staticmethod
    def backward(ctx, d_out, d_w, d_b, d_gw, d_gb):
        q, k, v, lr, token_factor, ln_weight, ln_bias, gw0, gb0, ends, w_save, b_save = ctx.saved_tensors
        batch, heads, grid_len, dim = q.shape
        mb = token_factor.shape[0]

        def given(grad: Tensor | None, like: Tensor) -> Tensor:
            return torch.zeros_like(like) if grad is None else grad.contiguous()

        d_out = given(d_out, q)
        d_w, d_b, d_gw, d_gb = given(d_w, gw0), given(d_b, gb0), given(d_gw, gw0), given(d_gb, gb0)
        dq, dk, dv, dlr = (torch.zeros_like(t) for t in (q, k, v, lr))
        f32 = {"dtype": torch.float32, "device": q.device}
        d_tf = torch.empty(batch, heads, mb, **f32)
        d_ln_w, d_ln_b = torch.empty(batch, heads, dim, **f32), torch.empty(batch, heads, dim, **f32)
        dw0, db0, dgw0, dgb0 = (torch.empty_like(t) for t in (gw0, gb0, gw0, gb0))
        ttt_linear_bwd_kernel[(batch, heads)](
            q, k, v, lr, token_factor, ln_weight, ln_bias, gw0, gb0, ends, w_save, b_save,
            d_out, d_w, d_b, d_gw, d_gb,
            dq, dk, dv, dlr, d_tf, d_ln_w, d_ln_b, dw0, db0, dgw0, dgb0,
            heads, grid_len, grid_len // mb, ctx.eps,
            D=dim, MB=mb, PREC=_precision(q.dtype),
        )  # fmt: skip
        d_tf = d_tf.sum(dim=(0, 1)).to(token_factor.dtype)
        d_ln_w, d_ln_b = d_ln_w.sum(0).to(ln_weight.dtype), d_ln_b.sum(0).to(ln_bias.dtype)
        return dq, dk, dv, dlr, d_tf, d_ln_w, d_ln_b, dw0, db0, dgw0, dgb0, None, None


def ttt_linear_step(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lr: Tensor,
    token_factor: Tensor,
    ln_weight: Tensor,
    ln_bias: Tensor,
    state: tuple[Tensor, Tensor, Tensor, Tensor],
    offset: Tensor,
    valid: Tensor,
    eps: float,
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """One decode token through `ttt_linear_step_kernel` (no autograd). q, k, v: [B, H, D]; lr: [B, H];
    state: (W [B, H, D, D], b [B, H, D], G_W, G_b) fp32 contiguous; offset: [B] int64; valid: [B] fp32 (1 or 0).
    Returns the output [B, H, D] in q's dtype and the new state."""
    batch, heads, dim = q.shape
    out = torch.empty_like(q)
    new = tuple(torch.empty_like(t) for t in state)
    ttt_linear_step_kernel[(batch, heads)](
        q, k, v, lr, token_factor, ln_weight, ln_bias, *state, offset, valid,
        out, *new,
        heads, eps,
        D=dim, MB=token_factor.shape[0],
    )  # fmt: skip
    return out, (new[0], new[1], new[2], new[3])
