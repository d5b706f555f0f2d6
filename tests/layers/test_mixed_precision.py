"""bf16 autocast (CPU too): the projections in bf16, the inner loop (read-outs, state, updates) and the convolutions
in fp32; error against float32 stays small and does not grow along the sequence, for logits and gradients."""

from __future__ import annotations

import pytest
import torch

import ttt.layers.ttt as ttt_layer
from ttt import TTTCache, TTTForCausalLM, get_preset


@pytest.mark.parametrize("preset", ["ttt-linear-tiny", "ttt-mlp-tiny-T"])
def test_bf16_autocast_keeps_fp32_state_and_small_error(preset):
    torch.manual_seed(0)
    model = TTTForCausalLM(get_preset(preset, hidden_size=64, num_attention_heads=2)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ids = torch.randint(0, 256, (2, 520))
    with torch.no_grad():
        reference = model(ids, use_cache=False).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cache = TTTCache.from_model(model, 2)
            logits = model(ids[:, :515], past_key_values=cache, use_cache=True).logits
            steps = [model(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits for t in range(515, 520)]
    assert logits.dtype == torch.bfloat16
    for layer in cache.layers:
        state = layer.ttt
        assert all(t.dtype == torch.float32 for t in (*state.params, *state.grad_sums_or_zeros()) if t is not None)
    got = torch.cat([logits, *steps], 1).float()
    err = (got - reference).abs()
    scale = reference.abs().mean()
    early, late = err[:, :64].mean() / scale, err[:, 256:].mean() / scale
    assert early < 0.02 and late < 0.02
    assert late < 2 * early + 1e-3  # no drift along the sequence


def test_inner_loop_runs_in_float32_without_autocast(monkeypatch):
    """Under autocast the form gets float32 q, k, v, lr with autocast off (one cast per call, not casts around each
    small product per mini-batch), and the cache's conv states stay float32."""
    seen = []
    original = ttt_layer.ttt_forward

    def spy(implementation, q, k, v, lr, *args, **kwargs):
        seen.append(({t.dtype for t in (q, k, v, lr)}, torch.is_autocast_enabled("cpu")))
        return original(implementation, q, k, v, lr, *args, **kwargs)

    monkeypatch.setattr(ttt_layer, "ttt_forward", spy)
    torch.manual_seed(0)
    model = TTTForCausalLM(get_preset("ttt-linear-tiny", hidden_size=64, num_attention_heads=2)).eval()
    cache = TTTCache.from_model(model, 1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randint(0, 256, (1, 37)), cache=cache)
    assert seen and all(dtypes == {torch.float32} and not enabled for dtypes, enabled in seen)
    assert all(t.dtype == torch.float32 for layer in cache.layers for t in layer.conv.values())


@pytest.mark.parametrize("preset", ["ttt-linear-tiny", "ttt-mlp-tiny-T"])
def test_bf16_autocast_training_gradients_close_to_float32(preset):
    torch.manual_seed(0)
    model = TTTForCausalLM(get_preset(preset, hidden_size=64, num_attention_heads=2))
    ids = torch.randint(0, 256, (2, 70))
    grads = []
    for enabled in (False, True):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            loss = model(ids, labels=ids).loss
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    reference, got = grads
    assert got.dtype == torch.float32 and got.shape == reference.shape
    assert (got - reference).norm() / reference.norm() < 0.015  # measured 0.3-0.5%
