"""Chunked inference prefill (`TTTConfig.ttt_prefill_chunk_size`): reading a prompt in chunks through the whole model,
the state carried between them, equals reading it at once: the kept logits and every tensor of the cache, at batch 2
with left padding, from a cache already part-way through a mini-batch, and without a cache. Float64."""

from __future__ import annotations

import pytest
import torch

from ttt import TTTCache, TTTForCausalLM, get_preset
from ttt.models.modeling import Block

CONFIGS = {
    "linear-mamba": ("ttt-linear-tiny", {}),
    "mlp-T": ("ttt-mlp-tiny-T", {}),
    "linear-momentum-forget": ("ttt-linear-tiny", dict(inner_optimizer="momentum", forget_gate=True)),
}
SEQ_LEN = 37


def tiny_model(name: str) -> TTTForCausalLM:
    preset, overrides = CONFIGS[name]
    torch.manual_seed(0)
    config = get_preset(preset, vocab_size=97, pad_token_id=0, eos_token_id=None, ttt_prefill_chunk_size=0, **overrides)
    model = TTTForCausalLM(config).double().eval()
    with torch.no_grad():  # move away from the init so every parameter matters
        for param_name, p in model.named_parameters():
            if "token_idx" in param_name or "norm" in param_name or param_name.endswith(("b1", "b2")):
                p.add_(0.05 * torch.randn_like(p))
    return model


def inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, 97, (batch, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :9] = 0  # row 1 left-padded
    return ids, mask


def prefill(model: TTTForCausalLM, chunk: int, ids, mask, cache=None, keep: int = 0):
    model.config.ttt_prefill_chunk_size = chunk
    with torch.no_grad():
        return model(ids, attention_mask=mask, cache=cache, logits_to_keep=keep).logits


def assert_same_cache(got: TTTCache, want: TTTCache) -> None:
    for i, (a, b) in enumerate(zip(got.layers, want.layers)):
        assert a.num_positions == b.num_positions, i
        named_a, named_b = a.named_tensors(), b.named_tensors()
        assert named_a.keys() == named_b.keys()
        for key in named_a:
            torch.testing.assert_close(named_a[key], named_b[key], rtol=1e-10, atol=1e-12, msg=f"layer {i} {key}")


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("chunk", [16, 5], ids=["chunk16", "chunk5"])
def test_chunked_prefill_equals_one_pass(name: str, chunk: int) -> None:
    model = tiny_model(name)
    ids, mask = inputs()
    one, chunked = TTTCache.from_model(model, 2, torch.float64), TTTCache.from_model(model, 2, torch.float64)
    want = prefill(model, 0, ids, mask, one)
    got = prefill(model, chunk, ids, mask, chunked)
    valid = mask.bool()
    torch.testing.assert_close(got[valid], want[valid], rtol=1e-10, atol=1e-12)
    assert_same_cache(chunked, one)
    # the next token from either state
    token = want[:, -1].argmax(-1, keepdim=True)
    with torch.no_grad():
        step_mask = torch.cat([mask, torch.ones_like(token)], 1)
        after_one = model(token, attention_mask=step_mask, cache=one).logits
        after_chunked = model(token, attention_mask=step_mask, cache=chunked).logits
    torch.testing.assert_close(after_chunked, after_one, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["linear-mamba", "mlp-T"])
def test_chunked_prefill_continues_a_cache_and_keeps_the_last_logits(name: str) -> None:
    """From a state 7 tokens into its mini-batch (chunks then cross mini-batch boundaries), logits_to_keep=1."""
    model = tiny_model(name)
    ids, mask = inputs()
    caches = []
    for chunk in (0, 8):
        cache = TTTCache.from_model(model, 2, torch.float64)
        prefill(model, 0, ids[:, :7], mask[:, :7], cache)
        full_mask = torch.ones(2, 7 + SEQ_LEN, dtype=mask.dtype)
        full_mask[:, 7:] = mask
        caches.append((prefill(model, chunk, ids, full_mask, cache, keep=1), cache))
    (want, one), (got, chunked) = caches
    assert got.shape == (2, 1, 97)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert_same_cache(chunked, one)


def test_chunked_prefill_without_a_cache_equals_one_pass() -> None:
    model = tiny_model("linear-mamba")
    ids, mask = inputs()
    model.config.ttt_prefill_chunk_size = 0
    with torch.no_grad():
        want = model(ids, attention_mask=mask, use_cache=False).logits
        model.config.ttt_prefill_chunk_size = 10
        out = model(ids, attention_mask=mask, use_cache=False)
    assert getattr(out, "cache", None) is None and getattr(out, "past_key_values", None) is None
    torch.testing.assert_close(out.logits[mask.bool()], want[mask.bool()], rtol=1e-10, atol=1e-12)


def block_calls(model: TTTForCausalLM, run) -> int:
    calls = []
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules() if isinstance(m, Block)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return len(calls) // model.config.num_hidden_layers


def test_chunks_only_at_inference_beyond_the_chunk_length() -> None:
    model = tiny_model("linear-mamba")
    ids, _ = inputs()
    model.config.ttt_prefill_chunk_size = 16
    with torch.no_grad():
        assert block_calls(model, lambda: model(ids)) == 3  # 16 + 16 + 5 tokens
        assert block_calls(model, lambda: model(ids[:, :16])) == 1
        assert block_calls(model, lambda: model(ids, output_hidden_states=True)) == 1
    # with autograd (training, or a gradient through the prompt) the whole input goes at once
    assert block_calls(model, lambda: model(ids, labels=ids)) == 1
    model.config.ttt_prefill_chunk_size = 0
    with torch.no_grad():
        assert block_calls(model, lambda: model(ids)) == 1


def test_generate_with_chunked_prefill_gives_the_same_tokens() -> None:
    model = tiny_model("linear-mamba")
    ids, mask = inputs()
    outs = []
    for chunk in (0, 8):
        model.config.ttt_prefill_chunk_size = chunk
        outs.append(model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("bad", [-1, 1.5, True], ids=["negative", "float", "bool"])
def test_bad_chunk_size_is_named(bad) -> None:
    with pytest.raises(ValueError, match="ttt_prefill_chunk_size"):
        get_preset("ttt-linear-tiny", ttt_prefill_chunk_size=bad)
