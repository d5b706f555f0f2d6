"""`ttt generate`: stream text from a trained checkpoint with temperature / top-k / top-p sampling and a seed,
through the model's cache (for TTT models the fixed-size TTTCache)."""

from __future__ import annotations

import sys
from typing import TextIO

import torch
from transformers.generation.streamers import BaseStreamer

from .data import Tokenizer
from .hf_compat import cache_kwargs


class TextStreamer(BaseStreamer):
    """Print the generated text as it comes (the prompt is skipped); holds back an incomplete UTF-8 sequence."""

    def __init__(self, tokenizer: Tokenizer, out: TextIO = sys.stdout) -> None:
        self.tokenizer, self.out = tokenizer, out
        self.ids: list[int] = []
        self.printed = 0
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.ids.extend(int(i) for i in value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.ids)
        stable = len(text.rstrip("\ufffd"))
        if stable > self.printed:
            self.out.write(text[self.printed : stable])
            self.out.flush()
            self.printed = stable

    def end(self) -> None:
        text = self.tokenizer.decode(self.ids)
        self.out.write(text[self.printed :] + "\n")
        self.out.flush()

    @property
    def text(self) -> str:
        return self.tokenizer.decode(self.ids)


@torch.no_grad()
def generate_text(
    model,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 0.95,
    seed: int = 0,
    stream: TextIO | None = sys.stdout,
    save_state: str | None = None,
    load_state: str | None = None,
) -> str:
    """Sample a continuation of `prompt` (BOS prepended, as in training). Greedy when temperature is 0.

    save_state: after reading the prompt, write the session (cache, tokens, sampler RNG) to this file, then go on.
    load_state: continue a saved session instead of `prompt`: the tokens are exactly those of the unbroken run.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(
            f"sampling options out of range: temperature={temperature} (>= 0, 0 = greedy), top_p={top_p} (in (0, 1]), "
            f"top_k={top_k} (>= 0)"
        )
    cache = None
    if load_state is not None:
        from .models import TTTCache

        cache = TTTCache.load(load_state, model)
        # set by TTTCache.load (not declared on the class)
        saved_ids, rng_state = getattr(cache, "input_ids", None), getattr(cache, "rng_state", None)
        if saved_ids is None or rng_state is None:
            raise ValueError(f"{load_state} holds no token ids or RNG state: it was not saved by ttt generate")
        ids = saved_ids.to(model.device)
        torch.set_rng_state(rng_state)
        if stream is not None:
            stream.write(tokenizer.decode([i for i in ids[0].tolist() if i != tokenizer.bos_id]))
    else:
        ids = torch.tensor([[tokenizer.bos_id, *tokenizer.encode(prompt)]], device=model.device)
        torch.manual_seed(seed)
        if save_state is not None:
            from .models import TTTCache

            if not hasattr(model, "allocate_inference_cache"):
                raise ValueError("--save-state needs a TTT model (a baseline's KV cache is not a session)")
            cache = TTTCache.from_model(model, 1)
            # all but the last prompt token go into the state; generate reads the last one, as when it resumes
            model(ids[:, :-1], cache=cache, use_cache=True)
            cache.save(save_state, model, input_ids=ids, rng_state=torch.get_rng_state())
    streamer = TextStreamer(tokenizer, stream) if stream is not None else None
    sampling = temperature > 0
    kwargs = dict(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p) if sampling else {}
    if cache is not None:
        kwargs.update(cache_kwargs(cache))
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_id,
        pad_token_id=tokenizer.eos_id,
        streamer=streamer,
        **kwargs,
    )
    return tokenizer.decode(out[0, ids.shape[1] :].tolist())
