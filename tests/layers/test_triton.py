"""`ttt_implementation="triton"` in the layer and the model (Triton's CPU interpreter; kernels: tests/ops/triton)."""

from __future__ import annotations

import pytest
import torch

from ttt import TTTMLP, TTTForCausalLM, TTTLinear, get_preset


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.mark.parametrize("cls", [TTTLinear, TTTMLP])
def test_layer_output_and_parameter_gradients_equal_the_dual_form(cls):
    torch.manual_seed(0)
    layer = cls(hidden_size=32, num_heads=2, mini_batch_size=16, implementation="triton")
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "token_idx" in name or "norm" in name or name in ("b1", "b2"):
                p.add_(0.1 * torch.randn_like(p))
    reference = cls(hidden_size=32, num_heads=2, mini_batch_size=16, implementation="dual").double()
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(2, 37, 32)
    out, out_ref = layer(x), reference(x.double())
    assert rel(out, out_ref) < 1e-5
    out.pow(2).sum().backward()
    out_ref.pow(2).sum().backward()
    grads = dict(reference.named_parameters())
    for name, p in layer.named_parameters():
        assert rel(p.grad, grads[name].grad) < 1e-4, name


@pytest.mark.parametrize("layer", ["linear", "mlp"])
def test_greedy_generation_with_left_padding_equals_the_default_path(layer):
    torch.manual_seed(0)
    model = TTTForCausalLM(get_preset(f"ttt-{layer}-tiny")).eval()
    fast = TTTForCausalLM(get_preset(f"ttt-{layer}-tiny", ttt_implementation="triton")).eval()
    fast.load_state_dict(model.state_dict())
    ids = torch.randint(0, 256, (2, 21))
    mask = torch.ones_like(ids)
    mask[1, :6] = 0
    # row 1 (15 real tokens) closes a mini-batch at its first decoded token
    kwargs = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        want = model.generate(ids, **kwargs)
        got = fast.generate(ids, **kwargs)
        logits, logits_ref = fast(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits
    assert torch.equal(got, want)
    assert rel(logits[0], logits_ref[0]) < 1e-5


@pytest.mark.parametrize(
    "option,message",
    [
        (dict(inner_optimizer="momentum"), "inner_optimizer='momentum'"),
        (dict(inner_norm=False), "inner_norm=False"),
        (dict(forget_gate=True), "forget_gate=True"),
        (dict(inner_weight_decay=0.1), "inner_weight_decay=0.1"),
        (dict(mini_batch_size=8), "mini_batch_size, got 8"),
    ],
    ids=lambda v: str(v)[:20],
)
def test_options_the_kernels_do_not_cover_are_refused_at_construction(option, message):
    with pytest.raises(ValueError, match=message):
        TTTLinear(hidden_size=32, num_heads=2, implementation="triton", **option)


def test_a_head_dim_the_tiles_do_not_fit_is_refused_in_the_model_config():
    with pytest.raises(ValueError, match="ttt_implementation"):
        get_preset("ttt-linear-tiny", ttt_implementation="triton", hidden_size=48)
