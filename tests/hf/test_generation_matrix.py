"""Every way a user decodes with `generate`, on both layer types and both backbones, equals the uncached result.

The cache reaches the model under the installed transformers' name (`cache=` from 5.24, `past_key_values=` before);
a model that dropped it would decode every step from a fresh state (issue: transformers 5.24 broke generation).
"""

from __future__ import annotations

import pytest
import torch

from ttt import TTTCache
from ttt.hf_compat import cache_kwargs, output_cache

from .helpers import PRESETS, VOCAB, recomputed_greedy, tiny_model


def prompt(batch: int = 2, length: int = 20, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, length), generator=generator)


@pytest.mark.parametrize("preset", PRESETS)
def test_greedy_equals_the_recomputed_loop(preset):
    model, ids = tiny_model(preset), prompt()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False)
    assert torch.equal(out, recomputed_greedy(model, ids, 10))


@pytest.mark.parametrize("preset", PRESETS)
def test_seeded_sampling_equals_uncached(preset):
    model, ids = tiny_model(preset), prompt()
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=True, top_k=30, temperature=1.5)
    torch.manual_seed(7)
    cached = model.generate(ids, use_cache=True, **kwargs)
    torch.manual_seed(7)
    uncached = model.generate(ids, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("preset", PRESETS)
def test_num_return_sequences_equals_uncached(preset):
    model, ids = tiny_model(preset), prompt()
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=True, num_return_sequences=3)
    torch.manual_seed(3)
    cached = model.generate(ids, use_cache=True, **kwargs)
    torch.manual_seed(3)
    uncached = model.generate(ids, use_cache=False, **kwargs)
    assert cached.shape == (6, 28) and torch.equal(cached, uncached)
    # the three continuations of a row are not copies of one another (the cache was expanded, not shared)
    assert len({tuple(row.tolist()) for row in cached[:3]}) > 1


@pytest.mark.parametrize("preset", PRESETS)
def test_beam_search_equals_uncached(preset):
    model, ids = tiny_model(preset), prompt()
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=8, num_beams=4, do_sample=False)
    assert torch.equal(model.generate(ids, use_cache=True, **kwargs), model.generate(ids, use_cache=False, **kwargs))


@pytest.mark.parametrize("preset", PRESETS)
def test_inputs_embeds_equals_input_ids_and_the_recomputed_loop(preset):
    model, ids = tiny_model(preset), prompt()
    embeds = model.get_input_embeddings()(ids)
    mask = torch.ones_like(ids)
    from_embeds = model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=8, do_sample=False)
    # with inputs_embeds, generate returns the new tokens only
    assert torch.equal(from_embeds, recomputed_greedy(model, ids, 8)[:, ids.shape[1] :])


@pytest.mark.parametrize("preset", PRESETS)
def test_multi_turn_continues_from_the_returned_cache(preset):
    model, ids = tiny_model(preset), prompt()
    first = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False, return_dict_in_generate=True
    )
    cache = output_cache(first)
    assert isinstance(cache, TTTCache)
    # every token but the last generated one went into the state (generate never feeds its last token)
    assert cache.get_seq_length() == first.sequences.shape[1] - 1
    turn = torch.cat([first.sequences, prompt(2, 7, seed=5)], 1)
    second = model.generate(
        turn, attention_mask=torch.ones_like(turn), max_new_tokens=6, do_sample=False, **cache_kwargs(cache)
    )
    assert torch.equal(second, recomputed_greedy(model, turn, 6))
    assert cache.get_seq_length() == second.shape[1] - 1


@pytest.mark.parametrize("preset", PRESETS)
def test_a_cache_passed_in_is_used_and_updated(preset):
    model, ids = tiny_model(preset), prompt()
    cache = TTTCache.from_model(model, batch_size=2)
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=7, do_sample=False, **cache_kwargs(cache)
    )
    assert torch.equal(out, recomputed_greedy(model, ids, 7))
    assert cache.get_seq_length() == ids.shape[1] + 6
    # the state it holds is the real one: the next token's logits from it equal the full forward's
    with torch.no_grad():
        step = model(out[:, -1:], cache=cache).logits[:, -1]
        full = model(out, use_cache=False).logits[:, -1]
    assert (step - full).abs().max().item() < 1e-10


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_forward_takes_the_cache_under_either_name(preset, name):
    model, ids = tiny_model(preset), prompt(length=37)
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        cache = TTTCache.from_model(model, batch_size=2)
        parts = [model(ids[:, a:b], use_cache=True, **{name: cache}).logits for a, b in [(0, 19), (19, 36), (36, 37)]]
    assert (torch.cat(parts, 1) - full).abs().max().item() < 1e-10
    assert cache.get_seq_length() == 37


def test_two_different_caches_under_both_names_are_refused():
    model, ids = tiny_model("ttt-linear-tiny"), prompt()
    a, b = TTTCache.from_model(model, 2), TTTCache.from_model(model, 2)
    with pytest.raises(ValueError, match="cache= or as past_key_values="):
        model(ids, cache=a, past_key_values=b)


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_generate_continues_a_filled_cache_under_either_name(name):
    """A cache that has read all but the last prompt token (as a session holds it), passed to generate under either
    name, on every supported transformers release (an older release does not know `cache=` as the cache)."""
    model, ids = tiny_model("ttt-mlp-tiny"), prompt()
    cache = TTTCache.from_model(model, batch_size=2)
    with torch.no_grad():
        model(ids[:, :-1], cache=cache)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False, **{name: cache})
    assert torch.equal(out, recomputed_greedy(model, ids, 6))
    assert cache.get_seq_length() == ids.shape[1] + 5


@pytest.mark.parametrize("layer_type", ["generic", "nadaraya_watson"])
def test_layers_without_a_fixed_state_generate_by_recomputing(layer_type):
    model, ids = tiny_model("ttt-linear-tiny", ttt_layer_type=layer_type), prompt()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert torch.equal(out, recomputed_greedy(model, ids, 4))
