"""Per-row token choice and incremental text: greedy or temperature / top-k / top-p sampling with the row's own
random generator (so a row's tokens never depend on its batch-mates), log-probabilities, and stop strings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import Tokenizer

# a temperature below this is greedy: logits / 1e-310 overflow to inf (NaN probabilities), and any temperature this
# small picks the argmax anyway unless two logits are within ~1e-5 x 700 of each other
GREEDY_BELOW = 1e-5
# tokens of context decoded before the new ones (a tokenizer may decode a token differently at the start of a text)
_CONTEXT_TOKENS = 4


@dataclass(frozen=True)
class SamplingParams:
    """How one row chooses its tokens. temperature 0 (or below GREEDY_BELOW) = greedy; top_k 0 = off; top_p 1 = off;
    logprobs: how many alternatives to report per token (None: no log-probabilities); ignore_eos: EOS does not end
    the row."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stops: tuple[str, ...] = ()
    logprobs: int | None = None
    ignore_eos: bool = False


def choose(logits: Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """The next token from logits [V] of one row: argmax when greedy, else one draw (one uniform number from
    `generator`, inverted through the filtered distribution's CDF)."""
    if params.temperature < GREEDY_BELOW:
        return int(logits.argmax())
    scores = logits.double() / params.temperature
    if 0 < params.top_k < scores.numel():
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, -1)
    if params.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always)
        drop = sorted_probs.cumsum(0) - sorted_probs >= params.top_p
        probs = probs.scatter(0, order, sorted_probs.masked_fill(drop, 0.0))
    cdf = probs.cumsum(0)
    u = torch.rand((), generator=generator, dtype=torch.float64) * cdf[-1]
    return int(torch.searchsorted(cdf, u.reshape(1), right=True).clamp(max=probs.numel() - 1))


def logprob_info(logits: Tensor, token: int, top: int, tokenizer: Tokenizer) -> dict[str, object]:
    """OpenAI's per-token log-probability entry: the chosen token's text and log-probability under the model
    (before temperature and filtering) and the `top` most likely alternatives as {text: logprob}."""
    logp = torch.log_softmax(logits.double(), -1)
    alternatives: dict[str, float] = {}
    if top:
        values, ids = torch.topk(logp, top)
        alternatives = {tokenizer.decode([int(i)]): float(v) for v, i in zip(values, ids)}
    return {"token": tokenizer.decode([token]), "logprob": float(logp[token]), "top": alternatives}


class TextTracker:
    """The text of a row's generated tokens, released as it becomes final: an incomplete UTF-8 sequence, and a tail
    that may be the start of a stop string, are held back. `add` returns (new text, whether a stop string ended the
    text); the returned text never includes the stop string.

    Decoding is incremental: each token decodes a short window (a few tokens of context + the tokens not released
    yet), not the whole completion; text is released up to a token whose decoding does not end in an incomplete
    character (U+FFFD), so the pieces add up to `tokenizer.decode(ids)`."""

    def __init__(self, tokenizer: Tokenizer, stops: tuple[str, ...]) -> None:
        self.tokenizer, self.stops = tokenizer, stops
        self.ids: list[int] = []
        self.prefix = 0  # the window starts here: tokens [prefix, read) are context, already released
        self.read = 0  # tokens before this are released (as text or as `held`)
        self.held = ""  # released by the tokenizer, held back as a possible start of a stop string

    def _hold(self, text: str) -> int:
        # longest tail of `text` that begins some stop string
        longest = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:k]):
                    longest = k
                    break
        return longest

    def _new_text(self, final: bool) -> str:
        """Text of the tokens after `read`; "" while it ends in an incomplete character (unless `final`)."""
        context = self.tokenizer.decode(self.ids[self.prefix : self.read]) if self.read > self.prefix else ""
        window = self.tokenizer.decode(self.ids[self.prefix :])
        if window.endswith("\ufffd") and not final:
            return ""
        self.prefix = max(self.prefix, len(self.ids) - _CONTEXT_TOKENS)
        self.read = len(self.ids)
        return window[len(context) :]

    def add(self, token: int) -> tuple[str, bool]:
        self.ids.append(token)
        text = self.held + self._new_text(final=False)
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.held = ""
            return text[: min(hits)], True
        keep = self._hold(text)
        self.held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """Whatever was held back, at the end of the row (not called after a stop string)."""
        out = self.held + (self._new_text(final=True) if self.read < len(self.ids) else "")
        self.held = ""
        return out
