"""The compiled fast path (torch.compile'd mini-batch and decode steps) equals the eager forms, at the benchmark's
head shapes (head_dim 64, mini-batch 16), forward and gradients. Compiling takes tens of seconds, so few cases."""

from __future__ import annotations

import torch

from ttt import TTTLinear
from ttt.ops import ttt_dual

from .helpers import initial_state, inner_params, op_inputs, rel_diff, require_grad


def test_compiled_dual_equals_eager_forward_and_gradients():
    torch.manual_seed(0)
    inputs = op_inputs(2, 37, 2, 64)
    params = tuple(p.requires_grad_() for p in inner_params("linear", 2, 64))
    leaves = [*require_grad(inputs), *params]
    probe = torch.randn(2, 37, 2, 64, dtype=torch.float64)

    def run(compile_mini_batch: bool):
        z, s = ttt_dual(**inputs, state=initial_state(params, 2), compile_mini_batch=compile_mini_batch)
        loss = (z * probe).sum() + sum(p.square().sum() for p in s.params) + s.grad_sums[0].sum()
        return (z, *s.params, *torch.autograd.grad(loss, leaves))

    assert rel_diff(run(True), run(False)) < 1e-10


def test_compiled_layer_prefill_and_decode_equal_eager():
    torch.manual_seed(0)
    eager = TTTLinear(128, 2, share_qk=True, use_gate=True).double()
    fast = TTTLinear(128, 2, share_qk=True, use_gate=True, implementation="compiled").double()
    fast.load_state_dict(eager.state_dict())
    x = torch.randn(1, 40, 128, dtype=torch.float64)
    with torch.no_grad():
        expected = eager(x)
        state = fast.allocate_inference_cache(1)
        prefill = fast(x[:, :35], past_key_values=state)
        steps = [fast.step(x[:, t], state) for t in range(35, 40)]
    got = torch.cat([prefill, torch.stack(steps, 1)], 1)
    assert (got - expected).abs().max() < 1e-10


def test_compiled_mini_batch_step_is_not_recompiled_per_length():
    """The compiled step sees mini-batches with the same shapes and strides at every sequence length: a longer
    prefill reuses the graphs (one for the first mini-batch, whose W0 needs grad, one for the rest)."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    fast = TTTLinear(64, 2, mini_batch_size=4, implementation="compiled")
    with torch.no_grad():
        fast(torch.randn(1, 8, 64))
        before = sum(counters["stats"].values()), dict(counters["recompiles"])
        for length in (16, 40, 12):
            fast(torch.randn(1, length, 64))
    assert (sum(counters["stats"].values()), dict(counters["recompiles"])) == before
