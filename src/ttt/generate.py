"""`ttt generate`: stream text from a trained checkpoint with temperature / top-k / top-p sampling and a seed,
through the model's cache (for TTT models the fixed-size TTTCache)."""

from __future__ import annotations

import sys
from typing import TextIO

import torch
from transformers.generation.streamers import BaseStreamer

from .data.tokenizer import Tokenizer


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
) -> str:
    """Sample a continuation of `prompt` (BOS prepended, as in training). Greedy when temperature is 0."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    ids = torch.tensor([[tokenizer.bos_id, *tokenizer.encode(prompt)]], device=model.device)
    torch.manual_seed(seed)
    streamer = TextStreamer(tokenizer, stream) if stream is not None else None
    sampling = temperature > 0
    kwargs = dict(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p) if sampling else {}
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
