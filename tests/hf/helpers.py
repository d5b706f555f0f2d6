"""Shared pieces of the Hugging Face-facing tests: tiny float64 models of every layer type and backbone, the
recomputed greedy loop (the uncached reference), and a recorder of transformers' deprecation messages."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import torch
from transformers.utils import logging as hf_logging

from ttt import TTTForCausalLM, get_preset

# both layer types on both backbones (Mamba: no suffix; Transformer: -T)
PRESETS = ["ttt-linear-tiny", "ttt-linear-tiny-T", "ttt-mlp-tiny", "ttt-mlp-tiny-T"]
VOCAB = 97


def tiny_model(preset: str, seed: int = 0, **overrides) -> TTTForCausalLM:
    """A float64 tiny model moved away from its init (every parameter matters)."""
    torch.manual_seed(seed)
    overrides = {"vocab_size": VOCAB, "pad_token_id": 0, "eos_token_id": None, **overrides}
    model = TTTForCausalLM(get_preset(preset, **overrides)).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "token_idx" in name or "norm" in name or name.endswith(("b1", "b2")):
                p.add_(0.05 * torch.randn_like(p))
    return model


@torch.no_grad()
def recomputed_greedy(model: TTTForCausalLM, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding that runs the whole sequence through the model at every step (no cache at all)."""
    seq = ids
    for _ in range(steps):
        nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    return seq


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def deprecations() -> Iterator[list[str]]:
    """Collect every deprecation message transformers emits in the block: Python warnings and its logger (whose
    `warning_once` memory is cleared first, so a message seen earlier in the session is seen again)."""
    hf_logging.warning_once.cache_clear()
    handler = _Records()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    found: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
    finally:
        logger.removeHandler(handler)
    found += [str(w.message) for w in caught if "deprecat" in str(w.message).lower()]
    found += [m for m in handler.messages if "deprecat" in m.lower()]
