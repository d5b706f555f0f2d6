"""generate through the TTTCache gives what recomputing the whole sequence at every step gives."""

from __future__ import annotations

import pytest
import torch

from ttt import TTTCache, TTTForCausalLM, get_preset

PRESETS = ["ttt-linear-tiny", "ttt-mlp-tiny-T"]


def tiny_model(preset: str, **overrides) -> TTTForCausalLM:
    torch.manual_seed(0)
    config = get_preset(preset, vocab_size=97, pad_token_id=0, eos_token_id=None, **overrides)
    model = TTTForCausalLM(config).double().eval()
    # move away from the init so every parameter matters
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "token_idx" in name or "norm" in name or name.endswith(("b1", "b2")):
                p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("preset", PRESETS)
def test_greedy_cached_equals_recomputed(preset):
    model = tiny_model(preset)
    ids = torch.randint(1, 97, (2, 21))
    cached = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False)
    seq = ids
    with torch.no_grad():
        for _ in range(24):
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert torch.equal(cached, seq)


@pytest.mark.parametrize("preset", PRESETS)
def test_sampling_cached_equals_uncached(preset):
    model = tiny_model(preset)
    ids = torch.randint(1, 97, (2, 13))
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=30, do_sample=True, top_k=20, temperature=1.3)
    torch.manual_seed(123)
    cached = model.generate(ids, use_cache=True, **kwargs)
    torch.manual_seed(123)
    uncached = model.generate(ids, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("preset", PRESETS)
def test_left_padded_batch_equals_each_row_alone(preset):
    """Rows of different lengths, left-padded: every row generates what it generates alone, and its logits
    match to float64 rounding."""
    model = tiny_model(preset)
    lengths = [23, 7, 16]
    width = max(lengths)
    rows = [torch.randint(1, 97, (n,)) for n in lengths]
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, width - len(row) :] = row
        mask[r, width - len(row) :] = 1
    out = model.generate(
        ids, attention_mask=mask, max_new_tokens=20, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    for r, row in enumerate(rows):
        alone = model.generate(
            row[None],
            attention_mask=torch.ones(1, len(row), dtype=torch.long),
            max_new_tokens=20,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        assert torch.equal(out.sequences[r, width:], alone.sequences[0, len(row) :])
        batch_logits = torch.stack([step[r] for step in out.logits])
        alone_logits = torch.stack([step[0] for step in alone.logits])
        assert (batch_logits - alone_logits).abs().max().item() < 1e-10


def test_padding_between_cached_chunks_is_skipped():
    """Padding in a later chunk (after real tokens in the cache) never reaches the state."""
    model = tiny_model("ttt-mlp-tiny")
    ids = torch.randint(1, 97, (1, 30))
    with torch.no_grad():
        whole = model(ids, use_cache=False).logits
        cache = TTTCache.from_model(model, 1)
        model(ids[:, :10], past_key_values=cache, use_cache=True)
        padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), ids[:, 10:]], 1)
        mask = torch.cat([torch.ones(1, 10), torch.zeros(1, 5), torch.ones(1, 20)], 1).long()
        tail = model(padded, attention_mask=mask, past_key_values=cache, use_cache=True).logits
    assert (tail[:, 5:] - whole[:, 10:]).abs().max().item() < 1e-10


def test_beam_search_runs_and_reorders_cache():
    model = tiny_model("ttt-linear-tiny")
    ids = torch.randint(1, 97, (2, 9))
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, num_beams=3, do_sample=False)
    assert out.shape == (2, 17)
    greedy = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, num_beams=3, do_sample=False, use_cache=False
    )
    assert torch.equal(out, greedy)
