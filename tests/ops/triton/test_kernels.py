"""The Triton TTT-Linear kernels (`ttt.ops.triton`) against the torch forms, in Triton's CPU interpreter.

Reference: the dual form (`ttt_dual`, itself tested against the naive oracle) in float64 on the same inputs rounded
to float32; errors are relative to the reference's largest magnitude. Interpreter-sized shapes (B, H ≤ 2)."""

from __future__ import annotations

import pytest
import torch

from tests.ops.helpers import cast, inner_params, op_inputs, require_grad, tensors
from ttt.ops import TTTState, ttt_dual, ttt_naive, ttt_primal_step
from ttt.ops.triton import ttt_triton, ttt_triton_step

FORWARD_TOL = 1e-5
GRAD_TOL = 1e-4


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def scaled_inputs(batch: int, seq_len: int, heads: int, dim: int) -> dict:
    """float64 inputs (lr of the order the layer's gate gives: ttt_base_lr / head_dim), exactly representable in
    float32 so both precisions see the same numbers."""
    inputs = op_inputs(batch, seq_len, heads, dim)
    inputs["lr"] = inputs["lr"] / dim
    return cast(cast(inputs, torch.float32), torch.float64)


def state_tensors(state: TTTState) -> list[torch.Tensor]:
    return [t for t in (*state.params, *state.grad_sums_or_zeros()) if t is not None]


def run(form, inputs: dict, params: tuple, batch: int, dtype=torch.float64, lengths=None, state=None):
    x = cast(inputs, dtype)
    state = TTTState.initial(tuple(p.to(dtype) for p in params), batch) if state is None else state
    return form(x["q"], x["k"], x["v"], x["lr"], x["spec"], state, lengths)


# B = H = 2, except one head at head_dim 64 (the interpreter's time grows with the tile); TTT-MLP (hidden 4D) at
# every length for head_dim 16 and at one length for the larger head dims
LENGTHS = (1, 15, 16, 17, 48, 63)
SHAPES = [("linear", 2, t, 1 if d == 64 else 2, d) for t in LENGTHS for d in (16, 32, 64)]
SHAPES += [("mlp", 2, t, 2, 16) for t in LENGTHS] + [("mlp", 2, 17, 2, 32), ("mlp", 1, 17, 1, 64)]


@pytest.mark.parametrize("kind,batch,seq_len,heads,dim", SHAPES, ids=lambda v: str(v))
def test_forward_and_gradients_equal_the_dual_form(kind, batch, seq_len, heads, dim):
    inputs = scaled_inputs(batch, seq_len, heads, dim)
    params = inner_params(kind, heads, dim)
    outs = {}
    for name, form, dtype in (("triton", ttt_triton, torch.float32), ("dual", ttt_dual, torch.float64)):
        x = cast(inputs, dtype)
        leaves = require_grad(x)
        init = tuple(p.to(dtype).requires_grad_() for p in params)
        z, state = form(x["q"], x["k"], x["v"], x["lr"], x["spec"], TTTState.initial(init, batch))
        # a loss that weighs every output and every part of the final state differently
        weights = torch.linspace(-1, 1, z.numel(), dtype=dtype).view(z.shape)
        loss = (weights * z).sum() + sum((0.5 + j) * (t**2).sum() for j, t in enumerate(state_tensors(state)))
        grads = torch.autograd.grad(loss, leaves + list(init))
        outs[name] = (z, state_tensors(state), grads)
    (z, final, grads), (z_ref, final_ref, grads_ref) = outs["triton"], outs["dual"]
    assert z.dtype == torch.float32
    assert rel(z, z_ref) < FORWARD_TOL
    for got, want in zip(final, final_ref):
        assert rel(got, want) < FORWARD_TOL
    names = ["q", "k", "v", "lr", "token_factor", "ln_weight", "ln_bias", "W1", "b1", "W2", "b2"]
    for name, got, want in zip(names, grads, grads_ref):
        assert rel(got, want) < GRAD_TOL, name


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_equals_the_naive_oracle(kind):
    inputs, params = scaled_inputs(2, 37, 2, 16), inner_params(kind, 2, 16)
    z, state = run(ttt_triton, inputs, params, 2, torch.float32)
    z_ref, state_ref = run(ttt_naive, inputs, params, 2)
    assert rel(z, z_ref) < FORWARD_TOL
    assert rel(state.params[0], state_ref.params[0]) < FORWARD_TOL


@pytest.mark.parametrize("kind,split", [("linear", 5), ("linear", 16), ("linear", 21), ("mlp", 21)])
def test_two_calls_equal_one_with_gradients_through_the_carried_state(kind, split):
    """Prefill in two calls (the second starts at an unaligned offset with carried gradient sums) equals one call,
    forward and in the gradients of every input, the initial weights included."""
    batch, seq_len, heads, dim = 2, 40, 2, 16
    inputs, params = scaled_inputs(batch, seq_len, heads, dim), inner_params(kind, heads, dim)

    def once(two_calls: bool):
        x = cast(inputs, torch.float32)
        leaves = require_grad(x)
        init = tuple(p.float().requires_grad_() for p in params)
        state = TTTState.initial(init, batch)
        if two_calls:
            pieces = []
            for part in (slice(0, split), slice(split, seq_len)):
                q, k, v, lr = (x[name][:, part] for name in ("q", "k", "v", "lr"))
                out, state = ttt_triton(q, k, v, lr, x["spec"], state)
                pieces.append(out)
            z = torch.cat(pieces, dim=1)
        else:
            z, state = ttt_triton(x["q"], x["k"], x["v"], x["lr"], x["spec"], state)
        loss = (torch.linspace(-1, 1, z.numel()).view(z.shape) * z).sum() + (state.params[0] ** 2).sum()
        loss = loss + sum((t * 0.3).sum() for t in state_tensors(state))
        return z, state, torch.autograd.grad(loss, leaves + list(init))

    z1, s1, g1 = once(False)
    z2, s2, g2 = once(True)
    assert s2.offset.tolist() == s1.offset.tolist() == [seq_len % 16] * batch
    assert rel(z2, z1) < FORWARD_TOL
    for a, b in zip(state_tensors(s2), state_tensors(s1)):
        assert rel(a, b) < FORWARD_TOL
    for a, b in zip(g2, g1):
        assert rel(a, b) < GRAD_TOL


@pytest.mark.parametrize("kind,dim", [("linear", 32), ("mlp", 16)])
def test_unaligned_offsets_and_padding_equal_the_dual_form(kind, dim):
    """Rows at different offsets in their mini-batch, with different real lengths (padding), across two calls."""
    batch, seq_len, heads = 3, 21, 2
    inputs, params = scaled_inputs(batch, seq_len, heads, dim), inner_params(kind, heads, dim)
    lengths = torch.tensor([21, 9, 16])
    state32, state64 = None, None
    for _ in range(2):
        z, state32 = run(ttt_triton, inputs, params, batch, torch.float32, lengths, state32)
        z_ref, state64 = run(ttt_dual, inputs, params, batch, torch.float64, lengths, state64)
        assert state32.offset.tolist() == state64.offset.tolist()
        assert rel(z, z_ref) < FORWARD_TOL
        for a, b in zip(state_tensors(state32), state_tensors(state64)):
            assert rel(a, b) < FORWARD_TOL
    assert state32.offset.tolist() == [42 % 16, 18 % 16, 32 % 16]


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_a_padded_row_equals_the_row_alone(kind):
    batch, seq_len, heads, dim = 2, 30, 1, 16
    inputs, params = scaled_inputs(batch, seq_len, heads, dim), inner_params(kind, heads, dim)
    z, state = run(ttt_triton, inputs, params, batch, torch.float32, torch.tensor([30, 19]))
    alone = {name: (t[1:2, :19] if name in ("q", "k", "v", "lr") else t) for name, t in inputs.items()}
    z_alone, state_alone = run(ttt_triton, alone, params, 1, torch.float32)
    assert rel(z[1:2, :19], z_alone) < FORWARD_TOL
    assert z[1, 19:].abs().max() == 0
    for a, b in zip(state_tensors(state), state_tensors(state_alone)):
        assert rel(a[1:2], b) < FORWARD_TOL


@pytest.mark.parametrize("kind,dim", [("linear", 16), ("linear", 64), ("mlp", 16), ("mlp", 32)])
def test_the_step_kernel_equals_the_primal_step(kind, dim):
    """Decode: 20 tokens one by one from a prefilled state, one row padded every other step."""
    batch, heads = 3, 2
    inputs, params = scaled_inputs(batch, 20, heads, dim), inner_params(kind, heads, dim)
    _, state = run(ttt_triton, inputs, params, batch, torch.float32, torch.tensor([20, 7, 13]))
    reference = state.map(lambda t: t.double() if t.is_floating_point() else t)
    x32, x64 = cast(inputs, torch.float32), inputs
    with torch.no_grad():
        for t in range(20):
            valid = torch.tensor([True, t % 2 == 0, True])
            args = [x32[n][:, t] for n in ("q", "k", "v", "lr")]
            out, state = ttt_triton_step(*args, x32["spec"], state, valid)
            ref_args = [x64[n][:, t] for n in ("q", "k", "v", "lr")]
            out_ref, reference = ttt_primal_step(*ref_args, x64["spec"], reference, valid)
            assert state.offset.tolist() == reference.offset.tolist()
            assert rel(out, out_ref) < FORWARD_TOL
            assert out[1].abs().max() == 0 or t % 2 == 0
    for a, b in zip(state_tensors(state), state_tensors(reference)):
        assert rel(a, b) < FORWARD_TOL


def test_bfloat16_inputs_keep_a_float32_state():
    """bf16 q, k, v, lr: the kernel upcasts at load, so it equals the float32 kernel on the same rounded inputs."""
    inputs, params = scaled_inputs(2, 33, 2, 16), inner_params("linear", 2, 16)
    rounded = cast(cast(inputs, torch.bfloat16), torch.float32)
    low = cast(inputs, torch.bfloat16)
    state = TTTState.initial(tuple(p.float() for p in params), 2)
    z16, state16 = ttt_triton(low["q"], low["k"], low["v"], low["lr"], rounded["spec"], state)
    z32, state32 = run(ttt_triton, rounded, params, 2, torch.float32)
    assert z16.dtype == torch.bfloat16 and state16.params[0].dtype == torch.float32
    assert rel(z16, z32) < 1e-2
    assert rel(state16.params[0], state32.params[0]) < FORWARD_TOL


def test_unsupported_layers_and_inputs_are_refused(monkeypatch):
    inputs, params = scaled_inputs(1, 16, 1, 16), inner_params("linear", 1, 16)
    x = cast(inputs, torch.float32)
    state = TTTState.initial(tuple(p.float() for p in params), 1)
    args = (x["q"], x["k"], x["v"], x["lr"])
    with pytest.raises(ValueError, match="inner_bias=False"):
        ttt_triton(*args, x["spec"], TTTState.initial(inner_params("mlp", 1, 16, False, torch.float32), 1))
    with pytest.raises(ValueError, match="inner_norm=False"):
        ttt_triton(*args, x["spec"].__class__(x["spec"].token_factor), state)
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        ttt_triton(*(t.double() for t in args), inputs["spec"], TTTState.initial(params, 1))
    with pytest.raises(ValueError, match="head_dim"):
        ttt_triton(*(t[..., :12] for t in args[:3]), args[3], x["spec"], state)
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        ttt_triton(*args, x["spec"], state)
    assert len(tensors(x)) == 7
