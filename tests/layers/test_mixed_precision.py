"""bf16 autocast (CPU too): read-outs in bf16, the inner state and its updates in fp32; error against float32
stays small and does not grow along the sequence."""

from __future__ import annotations

import pytest
import torch

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
