"""Sessions: save a cache, restore it in a new process, continue with the unbroken run's tokens; forks; bad files."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ttt import TTTCache, TTTForCausalLM, get_preset
from ttt.hf_compat import cache_kwargs
from ttt.models import kv_cache_bytes, state_bytes


def tiny(preset="ttt-mlp-tiny", seed=0, **kw) -> TTTForCausalLM:
    torch.manual_seed(seed)
    return TTTForCausalLM(get_preset(preset, vocab_size=97, eos_token_id=None, **kw)).eval()


SAMPLE = dict(do_sample=True, top_k=20, max_new_tokens=25, pad_token_id=0)


def continue_from(model, cache, ids, rng):
    torch.set_rng_state(rng)
    return model.generate(ids, attention_mask=torch.ones_like(ids), **cache_kwargs(cache), **SAMPLE)


def test_restore_in_a_new_process_gives_the_unbroken_tokens(tmp_path):
    model = tiny()
    model.save_pretrained(tmp_path / "model")
    ids = torch.randint(0, 97, (1, 37))
    torch.manual_seed(7)
    rng = torch.get_rng_state()
    with torch.no_grad():
        cache = TTTCache.from_model(model, 1)
        model(ids[:, :-1], past_key_values=cache, use_cache=True)
    cache.save(tmp_path / "session.safetensors", input_ids=ids, rng_state=rng)
    unbroken = continue_from(model, cache, ids, rng)
    with torch.no_grad():
        torch.set_rng_state(rng)
        from_scratch = model.generate(ids, attention_mask=torch.ones_like(ids), **SAMPLE)
    assert torch.equal(unbroken, from_scratch)

    script = f"""
import torch
from ttt import TTTCache, TTTForCausalLM
from ttt.hf_compat import cache_kwargs
model = TTTForCausalLM.from_pretrained({str(tmp_path / "model")!r}).eval()
cache = TTTCache.load({str(tmp_path / "session.safetensors")!r}, model)
torch.set_rng_state(cache.rng_state)
ids = cache.input_ids
out = model.generate(ids, attention_mask=torch.ones_like(ids), **cache_kwargs(cache), **{SAMPLE!r})
print(" ".join(map(str, out[0].tolist())))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-unbroken.shape[1] :] == [str(t) for t in unbroken[0].tolist()]


def test_fork_into_independent_continuations(tmp_path):
    model = tiny("ttt-linear-tiny")
    ids = torch.randint(0, 97, (1, 20))
    with torch.no_grad():
        cache = TTTCache.from_model(model, 1)
        model(ids[:, :-1], past_key_values=cache, use_cache=True)
    fork = cache.clone()
    torch.manual_seed(1)
    a = continue_from(model, fork, ids, torch.get_rng_state())
    torch.manual_seed(1)
    b = continue_from(model, cache, ids, torch.get_rng_state())
    assert torch.equal(a, b)  # the first continuation did not touch the original state


def test_bad_session_files(tmp_path):
    model = tiny()
    ids = torch.randint(0, 97, (1, 10))
    with torch.no_grad():
        cache = TTTCache.from_model(model, 1)
        model(ids, past_key_values=cache, use_cache=True)
    path = tmp_path / "s.safetensors"
    cache.save(path, model)
    with pytest.raises(ValueError, match="another config"):
        TTTCache.load(path, tiny("ttt-linear-tiny"))
    with pytest.raises(ValueError, match="other weights"):
        TTTCache.load(path, tiny(seed=1))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        TTTCache.load(tmp_path / "bad.safetensors", model)
    (tmp_path / "junk.safetensors").write_bytes(b"not a session")
    with pytest.raises(ValueError, match="not a readable session"):
        TTTCache.load(tmp_path / "junk.safetensors", model)
    loaded = TTTCache.load(path, model)
    assert loaded.get_seq_length() == 10 and loaded.input_ids is None


@pytest.mark.parametrize("preset", ["ttt-linear-tiny", "ttt-mlp-tiny", "ttt-linear-tiny-T"])
def test_state_bytes_formula_matches_the_cache(preset):
    model = tiny(preset)
    cache = TTTCache.from_model(model, 3)
    with torch.no_grad():
        model(torch.randint(0, 97, (3, 5)), past_key_values=cache, use_cache=True)
    assert cache.nbytes() == state_bytes(model.config, batch_size=3)
    assert kv_cache_bytes(2, 64, 1000) == 2 * 2 * 1000 * 64 * 4
