"""ttt_implementation="compiled": prefill through compiled mini-batch steps and decode through one compiled graph per
token give the eager model's logits and tokens (float64)."""

from __future__ import annotations

import torch

from ttt import TTTCache, TTTForCausalLM, get_preset


def test_compiled_model_equals_eager_prefill_decode_and_generate():
    torch.manual_seed(0)
    eager = TTTForCausalLM(get_preset("ttt-linear-tiny", vocab_size=97, eos_token_id=None)).double().eval()
    fast = (
        TTTForCausalLM(get_preset("ttt-linear-tiny", vocab_size=97, eos_token_id=None, ttt_implementation="compiled"))
        .double()
        .eval()
    )
    fast.load_state_dict(eager.state_dict())
    ids = torch.randint(0, 97, (2, 30))
    with torch.no_grad():
        expected = eager(ids, use_cache=False).logits
        cache = TTTCache.from_model(fast, 2)
        parts = [fast(ids[:, :21], past_key_values=cache, use_cache=True).logits]
        parts += [fast(ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits for t in range(21, 30)]
    assert (torch.cat(parts, 1) - expected).abs().max() < 1e-10
    assert cache.get_seq_length() == 30
    greedy = dict(max_new_tokens=12, do_sample=False, pad_token_id=0)
    mask = torch.ones_like(ids[:, :9])
    assert torch.equal(
        fast.generate(ids[:, :9], attention_mask=mask, **greedy),
        eager.generate(ids[:, :9], attention_mask=mask, **greedy),
    )
    # prefills of other lengths then decode steps through every in-mini-batch offset: after the first round has
    # made the few graph variants (first / later mini-batch, complete / partial), new lengths compile nothing
    from torch._dynamo.utils import counters

    def prefill_and_decode(lengths: tuple[int, ...]) -> None:
        with torch.no_grad():
            for length in lengths:
                cache = TTTCache.from_model(fast, 2)
                fast(torch.randint(0, 97, (2, length)), past_key_values=cache, use_cache=True)
                for _ in range(17):
                    fast(torch.randint(0, 97, (2, 1)), past_key_values=cache, use_cache=True)

    prefill_and_decode((23, 32))
    compiles = sum(counters["stats"].values()), dict(counters["recompiles"])
    prefill_and_decode((41, 64, 7))
    assert (sum(counters["stats"].values()), dict(counters["recompiles"])) == compiles
